"""Images at the I/O edge (numpy arrays or tensors of any layout) as the ``(B, 1, H, W)`` tensors used inside."""

from __future__ import annotations

import numpy as np
import torch

from cxrdecomp.errors import InputError


def as_image_batch(x, name: str = "image", dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, bool]:
    """An ``(H, W)``, ``(B, H, W)`` or ``(B, 1, H, W)`` array or tensor as a ``(B, 1, H, W)`` tensor of ``dtype``.

    Tensors keep their device (and are detached); numpy arrays are read without copying where possible;
    booleans become 0/1. Converting to ``dtype`` happens before any arithmetic.

    Returns:
        ``(tensor, single)`` with ``single`` true for a 2-D input.

    Raises:
        InputError: another shape, an empty image, or an array of Python objects.
    """
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        a = np.asarray(x)
        if a.dtype == object:
            raise InputError(f"{name}: cannot read an array of Python objects as an image")
        a = np.ascontiguousarray(a)
        t = torch.from_numpy(a if a.flags.writeable else a.copy())
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    t = t.to(dtype)
    single = t.ndim == 2
    if t.ndim == 2:
        t = t[None, None]
    elif t.ndim == 3:
        t = t[:, None]
    if t.ndim != 4 or t.shape[1] != 1:
        raise InputError(f"{name}: expected an (H, W), (B, H, W) or (B, 1, H, W) image, got shape {tuple(t.shape)}")
    if t.numel() == 0:
        raise InputError(f"{name}: empty image")
    return t, single
