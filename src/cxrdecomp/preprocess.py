"""Radiograph preprocessing: min–max normalisation, histogram equalisation and CLAHE, lung-area normalisation.

Shared by the lung-structure method (HE + CLAHE input, lung-area normalisation; lung paper §2.3) and
BS-Diff (CLAHE of the conditioning radiograph, §3.2).

"Lung structures enhancement in chest radiographs via CT based FCNN training": the input is
normalised to ``[0, 1]``, histogram-equalised, then contrast-limited adaptive histogram equalised
(CLAHE, window 40×40 pixels at 512², clip limit 0.01); for the extraction network the lung area is
normalised to mean 0 and standard deviation 0.5. The same steps apply to DRRs (training) and to
real radiographs (inference), which brings both to a common input domain.

All functions take and return ``torch.float32`` tensors ``(B, 1, H, W)``.
"""

from __future__ import annotations

import numpy as np
import torch

from cxrdecomp.errors import InputError

CLAHE_WINDOW_AT_512 = 40
CLAHE_CLIP = 0.01


def _check(x: torch.Tensor) -> None:
    if x.ndim != 4 or x.shape[1] != 1:
        raise InputError(f"expected (B, 1, H, W) images, got shape {tuple(x.shape)}")


def normalize01(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Min–max normalisation of each image to ``[0, 1]`` (display domain in and out).

    Shape: ``(B, 1, H, W)`` → same. A constant image becomes zeros.
    """
    _check(x)
    lo = x.amin(dim=(-1, -2), keepdim=True)
    hi = x.amax(dim=(-1, -2), keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(eps)


def clahe_window(size: int) -> int:
    """CLAHE window (pixels) for an image of ``size``: 40 px at 512², scaled with the image so the
    window covers the same anatomy at other model sizes (at least 8 px)."""
    return max(8, int(round(CLAHE_WINDOW_AT_512 * size / 512)))


def clahe(x: torch.Tensor, clip_limit: float = CLAHE_CLIP, kernel_size: int | None = None) -> torch.Tensor:
    """Contrast-limited adaptive histogram equalisation (scikit-image ``equalize_adapthist``) per image.

    Args:
        x: ``(B, 1, H, W)`` or ``(H, W)`` display domain ``[0, 1]`` (values outside are clipped).
        clip_limit: scikit-image clip limit (fraction, default 0.01).
        kernel_size: tile size in pixels; scikit-image's default (1/8 of each side) when ``None``.

    Returns:
        Same shape, dtype and device, display domain ``[0, 1]``.
    """
    from skimage.exposure import equalize_adapthist

    a = x.detach().to("cpu", torch.float64).clamp(0, 1).numpy()
    flat = a.reshape(-1, *a.shape[-2:])
    out = np.stack([equalize_adapthist(im, kernel_size=kernel_size, clip_limit=clip_limit) for im in flat])
    return torch.from_numpy(out.reshape(a.shape)).to(device=x.device, dtype=x.dtype)


def he_clahe(x: torch.Tensor, window: int | None = None, clip_limit: float = CLAHE_CLIP) -> torch.Tensor:
    """Normalise to ``[0, 1]``, histogram-equalise, then CLAHE (:func:`clahe`), per image (lung paper §2.3).

    Args:
        x: ``(B, 1, H, W)`` display-domain images (any range; normalised first).
        window: CLAHE kernel size in pixels (default :func:`clahe_window` of the image height).
        clip_limit: CLAHE clip limit (paper: 0.01).

    Returns:
        ``(B, 1, H, W)`` float32 in ``[0, 1]`` on the device of ``x``.

    Raises:
        InputError: wrong shape.
    """
    from skimage import exposure

    _check(x)
    xn = normalize01(x.detach().float()).cpu().numpy()
    he = np.stack([exposure.equalize_hist(xn[i, 0], nbins=1024) for i in range(xn.shape[0])])[:, None]
    out = clahe(torch.from_numpy(he), clip_limit=clip_limit, kernel_size=window or clahe_window(x.shape[-2]))
    return out.to(device=x.device, dtype=torch.float32)


def lung_normalize(x: torch.Tensor, mask: torch.Tensor, std: float = 0.5, min_pixels: int = 16, eps: float = 1e-6) -> torch.Tensor:
    """Normalise each image so that its lung area has mean 0 and standard deviation ``std`` (0.5).

    Args:
        x: ``(B, 1, H, W)`` images (display domain, e.g. after :func:`he_clahe`).
        mask: ``(B, 1, H, W)`` lung mask (bool or 0/1).
        min_pixels: images whose mask has fewer pixels use the whole image's statistics instead.

    Returns:
        ``(B, 1, H, W)`` float32 (no longer bounded).
    """
    _check(x)
    m = (mask > 0.5).to(x.dtype)
    n = m.sum(dim=(-1, -2), keepdim=True)
    use = n >= min_pixels
    m = torch.where(use, m, torch.ones_like(m))
    n = m.sum(dim=(-1, -2), keepdim=True)
    mean = (x * m).sum(dim=(-1, -2), keepdim=True) / n
    var = (((x - mean) ** 2) * m).sum(dim=(-1, -2), keepdim=True) / n
    return (x - mean) / var.sqrt().clamp_min(eps) * std
