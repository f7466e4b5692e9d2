"""The one augmentation module: paired geometric transforms and the intensity transforms of the papers.

Geometric (any device, CPU or GPU):

One random affine transform per sample — rotation, horizontal / vertical shift, shear, zoom and a
horizontal (optionally vertical) flip — is drawn and applied *identically* to every tensor given,
so a radiograph, its soft-tissue image and its bone mask stay pixel-registered. It works on
``(B, C, H, W)`` tensors with ``torch.nn.functional.affine_grid`` / ``grid_sample`` and is
domain-agnostic (display or attenuation domain alike; the transform only moves pixels).

This is the augmentation of the disentanglement-autoencoder paper (§3: rotations, shifts, shear,
zoom, horizontal flips; Keras ``ImageDataGenerator`` style, whose "nearest" fill is our
``padding_mode="border"``) and of the lung-enhancement paper (§2.2), reusable by every method.

Also :func:`zoom` (about the centre; linear, so applied to a radiograph and its bone image alike it keeps
``x = soft + bone``) and the non-linear :func:`random_gamma` (a tone curve, BS-Diff §3.2 contrast augmentation).
The processing of real CR/DX images (unsharp masking, range compression, tone curves, CLAHE) is simulated in
:mod:`cxrdecomp.simulate.processing`.

Example:
    >>> aug = PairedAffine(rotation=10, shift=0.1, shear=5, zoom=0.1, hflip=0.5)
    >>> cxr, soft = aug(torch.rand(4, 1, 64, 64), torch.rand(4, 1, 64, 64))
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _uniform(n: int, low: float, high: float, generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device="cpu").to(device)


def affine_matrices(
    n: int,
    *,
    rotation: float = 0.0,
    shift: float | tuple[float, float] = 0.0,
    shear: float = 0.0,
    zoom: float | tuple[float, float] = 0.0,
    hflip: float = 0.0,
    vflip: float = 0.0,
    aspect: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Random ``(n, 2, 3)`` matrices for :func:`torch.nn.functional.affine_grid` (align_corners=False).

    Each matrix maps output coordinates to input coordinates (normalised to ``[-1, 1]``), composed as
    ``flip · rotation · shear · zoom`` plus a translation, in a square-pixel frame (``aspect = W / H``)
    so that rotations of non-square images are not distorted.

    Args:
        n: number of matrices (batch size).
        rotation: maximum absolute rotation, degrees (uniform in ``[-rotation, rotation]``).
        shift: maximum absolute shift as a fraction of the width and height (one value or ``(x, y)``).
        shear: maximum absolute shear angle, degrees (along x).
        zoom: maximum relative zoom ``z`` (scale uniform in ``[1 - z, 1 + z]``), or a ``(low, high)`` range.
        hflip, vflip: probabilities of a horizontal / vertical flip.
        aspect: image width / height.
        generator: optional CPU ``torch.Generator`` for reproducible draws.

    Returns:
        ``(n, 2, 3)`` float32 on ``device``.
    """
    sx, sy = (shift, shift) if isinstance(shift, (int, float)) else shift
    zlo, zhi = (1.0 - zoom, 1.0 + zoom) if isinstance(zoom, (int, float)) else zoom
    if zlo <= 0:
        raise ValueError(f"zoom range must stay positive, got ({zlo}, {zhi})")
    dev = torch.device(device)
    ang = _uniform(n, -rotation, rotation, generator, dev) * math.pi / 180
    sh = _uniform(n, -shear, shear, generator, dev) * math.pi / 180
    z = _uniform(n, zlo, zhi, generator, dev)
    tx = _uniform(n, -sx, sx, generator, dev) * 2  # normalised coords span 2
    ty = _uniform(n, -sy, sy, generator, dev) * 2
    fx = torch.where(torch.rand(n, generator=generator).to(dev) < hflip, -1.0, 1.0)
    fy = torch.where(torch.rand(n, generator=generator).to(dev) < vflip, -1.0, 1.0)
    cos, sin, tan = torch.cos(ang), torch.sin(ang), torch.tan(sh)
    # In a square-pixel frame (x scaled by aspect): A = F · R · Sh · (1/z)  (output -> input)
    one, zero = torch.ones_like(z), torch.zeros_like(z)
    R = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    Sh = torch.stack([torch.stack([one, tan], -1), torch.stack([zero, one], -1)], -2)
    Fl = torch.diag_embed(torch.stack([fx, fy], -1))
    A = Fl @ R @ Sh / z[:, None, None]
    # back to normalised coordinates: x_norm = x_sq / aspect
    S = torch.diag(torch.tensor([aspect, 1.0], device=dev))
    Si = torch.diag(torch.tensor([1.0 / aspect, 1.0], device=dev))
    A = Si @ A @ S
    t = torch.stack([tx, ty], -1)[..., None]
    return torch.cat([A, t], dim=-1).to(torch.float32)


def apply_affine(theta: torch.Tensor, *images: torch.Tensor, mode: str = "bilinear", padding_mode: str = "border") -> tuple[torch.Tensor, ...]:
    """Warp each ``(B, C, H, W)`` tensor of ``images`` with the same ``(B, 2, 3)`` matrices ``theta``.

    Returns the warped tensors (same shapes, dtypes and devices). ``padding_mode="border"`` repeats
    edge pixels (Keras' "nearest" fill), which suits radiographs better than zeros.

    Raises:
        ValueError: tensors of different batch or spatial sizes.
    """
    if not images:
        return ()
    ref = images[0]
    for im in images:
        if im.ndim != 4 or im.shape[0] != ref.shape[0] or im.shape[-2:] != ref.shape[-2:]:
            raise ValueError(f"all images must be (B, C, H, W) of one batch and size; got {[tuple(i.shape) for i in images]}")
    b, _, h, w = ref.shape
    grid = F.affine_grid(theta.to(ref.device, torch.float32), [b, 1, h, w], align_corners=False)
    out = []
    for im in images:
        g = grid.to(im.dtype) if im.is_floating_point() else grid
        x = im if im.is_floating_point() else im.float()
        out.append(F.grid_sample(x, g, mode=mode, padding_mode=padding_mode, align_corners=False).to(im.dtype))
    return tuple(out)


@dataclass
class PairedAffine:
    """Random affine augmentation applied identically to several registered image batches.

    Defaults follow the disentanglement-autoencoder setting used in cxrdecomp (rotation ±10°,
    shifts ±10 %, shear ±5°, zoom ±10 %, horizontal flip with probability 0.5, no vertical flip).

    Args:
        rotation: max rotation, degrees.  shift: max shift, fraction of width/height.
        shear: max shear, degrees.        zoom: max relative zoom.
        hflip / vflip: flip probabilities.  p: probability that a sample is transformed at all.
        padding_mode: ``"border"`` (Keras' "nearest" fill, default) or ``"zeros"``.

    Shape:
        Each input ``(B, C, H, W)`` → same shape; all inputs share ``B, H, W``.
    """

    rotation: float = 10.0
    shift: float = 0.1
    shear: float = 5.0
    zoom: float = 0.1
    hflip: float = 0.5
    vflip: float = 0.0
    p: float = 1.0
    padding_mode: str = "border"

    def __call__(self, *images: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        ref = images[0]
        b, _, h, w = ref.shape
        theta = affine_matrices(
            b, rotation=self.rotation, shift=self.shift, shear=self.shear, zoom=self.zoom,
            hflip=self.hflip, vflip=self.vflip, aspect=w / h, generator=generator, device=ref.device,
        )
        if self.p < 1.0:
            keep = torch.rand(b, generator=generator).to(ref.device) >= self.p
            eye = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]], device=ref.device)
            theta[keep] = eye
        return apply_affine(theta, *images, padding_mode=self.padding_mode)


# ----------------------------------------------------------------------------------------------
# intensity transforms and the deterministic zoom
# ----------------------------------------------------------------------------------------------


def zoom(x: torch.Tensor, factor: float, mode: str = "bilinear") -> torch.Tensor:
    """Zoom ``(C, H, W)`` about the centre by ``factor`` (> 1 enlarges), zeros outside. Linear in ``x``."""
    theta = torch.tensor([[1 / factor, 0, 0], [0, 1 / factor, 0]], dtype=x.dtype)[None]
    grid = F.affine_grid(theta, [1, *x.shape], align_corners=False)
    return F.grid_sample(x[None], grid, mode=mode, padding_mode="border", align_corners=False)[0]


def random_gamma(x: torch.Tensor, max_log_gamma: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Tone-curve augmentation ``clamp(x, 0, 1) ** γ`` with ``γ = exp(U(−max_log_gamma, max_log_gamma))``,
    one γ for the whole tensor (apply to a stacked item to change all its images alike). Display domain.
    Shape: any → same."""
    if not max_log_gamma:
        return x
    u = float(torch.rand((), generator=generator)) * 2 - 1
    return x.clamp(0, 1) ** math.exp(u * max_log_gamma)
