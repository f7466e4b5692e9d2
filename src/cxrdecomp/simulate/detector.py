"""Detector physics of the realistic simulation: scatter, anti-scatter grid, blur (MTF) and noise.

All functions take the detector signal as a transmitted fraction ``I`` (``(N, 1, H, W)``, air = 1 for the
unattenuated beam) and, like :mod:`cxrdecomp.simulate.processing`, can process several renderings of one
sample at once (the radiograph and the same view without bone): quantities fitted on one *reference* row
(the scatter amplitude) are applied unchanged to the other rows, so the bone-free rendering gets the physics
of the same exposure.

* **Scatter** (a convolution model in the spirit of Love & Kruger, Med. Phys. 14:178, 1987, and Boone &
  Seibert, Med. Phys. 15:713, 1988): the scatter reaching the detector is a broad blur of the primary,
  ``S = k · (G_σ ⊛ I_p)``, with ``k`` chosen so that the *scatter-to-primary ratio* over the exposed field of
  the reference row is the stated value: ``Σ S / Σ I_p = spr``. Because ``S`` is smooth and ``I_p`` is small
  behind the mediastinum and the diaphragm, the local SPR is largest there (≈ 3–5× the lung value), as
  measured on chest radiographs. Approximation: one Gaussian kernel (σ of tens of mm) for all energies and
  thicknesses; no scatter from outside the field.
* **Anti-scatter grid**: multiplies the scatter by its selectivity ratio ``T_s / T_p`` (default 0.2, a typical
  10:1 chest grid transmitting ~70 % of the primary and ~14 % of the scatter); the primary's loss is a dose
  change only and is absorbed in the photon count.
* **Blur (MTF)**: a Gaussian point-spread function of σ pixels on the detector signal (indirect flat panel
  / CR: MTF(f) = exp(−2π²σ²f²)).
* **Noise**: quantum noise ``Poisson(N·I)/N`` with ``N`` photons per pixel for the unattenuated beam, plus
  Gaussian electronic noise of σ_e photons (``σ_e / N`` in units of I). The variance is ``I/N + (σ_e/N)²``.
"""

from __future__ import annotations

import torch

from cxrdecomp.errors import InputError
from cxrdecomp.simulate.processing import gaussian_blur

GRID_SELECTIVITY = 0.2
"""Scatter transmission relative to primary transmission of a typical 10:1 chest grid (T_s/T_p ≈ 0.14/0.7)."""


def _check(x: torch.Tensor, name: str = "intensity") -> None:
    if x.ndim != 4 or x.shape[1] != 1:
        raise InputError(f"{name} must be (N, 1, H, W), got shape {tuple(x.shape)}")


def add_scatter(primary: torch.Tensor, spr: float, sigma_px: float, grid: bool = False, field: torch.Tensor | None = None,
                reference: int = 0, selectivity: float = GRID_SELECTIVITY) -> torch.Tensor:
    """Detector signal ``I_p + S`` with convolution-model scatter ``S = k (G_σ ⊛ I_p)`` (see module docstring).

    Args:
        primary: ``(N, 1, H, W)`` primary transmitted fraction.
        spr: scatter-to-primary ratio behind the patient, over ``field`` of the reference row (≥ 0).
        sigma_px: scatter kernel σ in detector pixels.
        grid: anti-scatter grid in place (scatter × ``selectivity``).
        field: ``(1, 1, H, W)`` bool exposed area (default: all pixels).
        reference: row whose SPR is ``spr``; ``k`` is applied unchanged to every row.

    Returns:
        ``(N, 1, H, W)`` primary + scatter (same dtype and device).

    Raises:
        InputError: bad shapes, negative ``spr`` or ``reference`` out of range.
    """
    _check(primary, "primary")
    if spr < 0:
        raise InputError(f"scatter-to-primary ratio must be ≥ 0, got {spr}")
    if not 0 <= reference < primary.shape[0]:
        raise InputError(f"reference row {reference} out of range for {primary.shape[0]} rows")
    if spr == 0:
        return primary
    blurred = gaussian_blur(primary, sigma_px)
    m = torch.ones_like(primary[:1]) if field is None else field.to(primary.dtype).reshape(1, 1, *primary.shape[-2:])
    ref_p, ref_b = primary[reference : reference + 1], blurred[reference : reference + 1]
    k = spr * (ref_p * m).sum() / (ref_b * m).sum().clamp(min=1e-12)
    if grid:
        k = k * selectivity
    return primary + k * blurred


def add_noise(intensity: torch.Tensor, photons: float, electronic_sigma: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Quantum + electronic noise: ``(Poisson(N·I) + σ_e·ε) / N``, floored at half a photon (keeps −ln I finite).

    Args:
        intensity: ``(N, 1, H, W)`` detector signal (transmitted fraction).
        photons: ``N`` photons per pixel of the unattenuated beam (> 0; the dose level).
        electronic_sigma: electronic noise σ_e in photons.
        generator: torch generator (CPU) for reproducible noise.

    Returns:
        Noisy intensity, same shape, dtype and device; variance ``I/N + (σ_e/N)²``.
    """
    _check(intensity)
    if photons <= 0:
        raise InputError(f"photons per pixel must be > 0, got {photons}")
    lam = (intensity.double() * photons).clamp(min=0)
    counts = torch.poisson(lam.cpu(), generator=generator)
    if electronic_sigma > 0:
        counts = counts + electronic_sigma * torch.randn(counts.shape, generator=generator, dtype=counts.dtype)
    return (counts.clamp(min=0.5) / photons).to(intensity.device, intensity.dtype)
