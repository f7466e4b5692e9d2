"""CT2Xray: polyenergetic radiograph simulation from a CT (XraySyn Eq. 3–6, Algorithm 1) and virtual dual energy.

Pipeline (Peng et al., XraySyn, AAAI 2021):

1. Material thicknesses (Eq. 3): ``t_m(T) = FP(V ⊙ mask_m, T)`` — one projector pass over a
   ``(C, X, Y, Z)`` material-density volume gives mass thicknesses in g/cm² for bone, soft tissue and
   lung (plus the bone path length in cm).
2. Polyenergetic attenuation (Eq. 4): ``I(T) = Σ_E I0(E) exp(−Σ_m µ/ρ(m, E) · t_m(T))`` with the tube
   spectrum ``I0`` normalised to ``Σ_E I0(E) = 1`` (so ``I`` is the transmitted fraction).
3. Radiograph (Eq. 5–6): the inverted radiograph ``max(I) − I`` (XraySyn's display form) and the
   attenuation-domain log image ``−ln I``; optional quantum noise ``Poisson(N·I)/N`` for ``N`` photons per
   pixel.

Virtual dual energy renders a low- and a high-kVp image of the same view from the same thicknesses and
forms the soft-tissue and bone images by weighted log subtraction (as a DES unit does), and
:func:`reverse_ct2xray` implements XraySyn Algorithm 1 (bone suppression of a radiograph given bone and
tissue thickness estimates).
"""

from __future__ import annotations

import torch

from cxrdecomp.errors import InputError
from cxrdecomp.physics.materials import CHANNELS, mass_attenuation_table, material_volume
from cxrdecomp.physics.spectra import spectrum as tube_spectrum
from cxrdecomp.projector.conebeam import PreparedVolume, forward_project
from cxrdecomp.projector.geometry import Detector, Pose

SOFT_DENSITY = 1.03  # g/cm³, Tissue, Soft (ICRP) ≈ DeepDRR's ρ at 0 HU


class Spectrum:
    """Energies (keV, ``(E,)``) and weights (``(E,)``, sum 1) plus µ/ρ of the materials ``(M, E)`` in cm²/g."""

    def __init__(self, energies, weights, materials=CHANNELS) -> None:
        e = torch.as_tensor(energies, dtype=torch.float64).reshape(-1)
        w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
        if e.shape != w.shape or e.numel() == 0:
            raise InputError("spectrum energies and weights must be non-empty and of equal length")
        self.energies, self.weights = e, w / w.sum()
        self.materials = tuple(materials)
        self.mu_rho = mass_attenuation_table(e.numpy(), self.materials)

    @classmethod
    def tube(cls, kvp: float = 120.0, filtration_mm_al: float = 2.5, bin_kev: float = 2.0, kind: str = "energy") -> "Spectrum":
        """A SpekPy tube spectrum (see :func:`cxrdecomp.physics.spectra.spectrum`)."""
        return cls(*tube_spectrum(kvp, filtration_mm_al, bin_kev, kind))

    @classmethod
    def mono(cls, energy_kev: float) -> "Spectrum":
        return cls([energy_kev], [1.0])

    def effective_mu_rho(self) -> torch.Tensor:
        """Spectrum-weighted µ/ρ per material ``(M,)`` (thin-object limit)."""
        return (self.mu_rho * self.weights).sum(-1)


def polyenergetic_intensity(thickness: torch.Tensor, spec: Spectrum, bone_scale: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Transmitted fraction ``I = Σ_E w_E exp(−Σ_m µ/ρ(m,E)·t_m)`` (XraySyn Eq. 4).

    Args:
        thickness: ``(B, M, H, W)`` mass thicknesses (g/cm²) for the spectrum's materials (extra trailing
            channels are ignored).
        spec: :class:`Spectrum`.
        bone_scale: multiplies the bone channel (bone-density augmentation); scalar or ``(B,)``.

    Returns:
        ``(B, 1, H, W)`` intensity in (0, 1] (display of ``I`` itself is the raw detector signal).
    """
    m = len(spec.materials)
    t = thickness[:, :m]
    if not (isinstance(bone_scale, float) and bone_scale == 1.0) and "bone" in spec.materials:
        s = torch.as_tensor(bone_scale, device=t.device, dtype=t.dtype).reshape(-1, 1, 1, 1)
        k = spec.materials.index("bone")
        t = torch.cat([t[:, :k], t[:, k : k + 1] * s, t[:, k + 1 :]], 1)
    mu = spec.mu_rho.to(t.device, t.dtype)  # (M, E)
    att = torch.einsum("bmhw,me->bhwe", t, mu)  # energies last: the spectral sum is one matrix-vector product
    w = spec.weights.to(t.device, t.dtype)
    return (att.neg_().exp_() @ w)[:, None]


def add_poisson_noise(intensity: torch.Tensor, photons: float | torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Quantum noise: ``Poisson(N·I)/N`` with ``N`` incident photons per pixel (scalar or ``(B,)``)."""
    n = torch.as_tensor(photons, device=intensity.device, dtype=intensity.dtype).reshape(-1, 1, 1, 1)
    lam = (intensity * n).clamp(min=0)
    if generator is not None and generator.device != lam.device:
        noisy = torch.poisson(lam.cpu(), generator=generator).to(lam.device)
    else:
        noisy = torch.poisson(lam, generator=generator)
    return noisy.clamp(min=0.5) / n  # at least half a photon: keeps −ln I finite


def log_image(intensity: torch.Tensor) -> torch.Tensor:
    """Attenuation-domain image ``−ln I`` (≥ 0) from the transmitted fraction."""
    return -torch.log(intensity.clamp(min=1e-12))


def inverted_radiograph(intensity: torch.Tensor) -> torch.Tensor:
    """XraySyn's inverted radiograph ``max(I) − I`` per image (bone bright), ``(B, 1, H, W)``."""
    return intensity.amax(dim=(-2, -1), keepdim=True) - intensity


def _hardened_mu_rho(spec: Spectrum, t_ref: torch.Tensor) -> torch.Tensor:
    """µ/ρ per material seen behind ``t_ref`` g/cm² of soft tissue: ``∂L/∂t_m`` at that point, ``(B, M)``."""
    mu = spec.mu_rho.to(t_ref.device, t_ref.dtype)  # (M, E)
    s = mu[CHANNELS.index("soft_tissue")]
    w = spec.weights.to(t_ref.device, t_ref.dtype)[None] * torch.exp(-t_ref[:, None] * s[None])  # (B, E)
    w = w / w.sum(-1, keepdim=True)
    return w @ mu.T


def dual_energy(
    thickness: torch.Tensor,
    low: Spectrum,
    high: Spectrum,
    photons: float | None = None,
    generator: torch.Generator | None = None,
    reference_tissue: float | torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Virtual dual-energy subtraction (attenuation domain), as a DES unit forms it by weighted log subtraction.

    With ``L_k = −ln I_k`` and the µ/ρ ``a_{m,k}`` each spectrum effectively sees behind the reference soft-tissue
    thickness (a DES unit's weight calibration), the bone-cancelling weight is ``w_b = a_{bone,H}/a_{bone,L}``;
    the soft-tissue image is ``S = (L_H − w_b·L_L)·a_{s,H}/(a_{s,H} − w_b·a_{s,L})`` (soft tissue expressed at the
    high-energy spectrum) and the bone image ``B = L_H − S`` (so ``S + B = L_H`` exactly). Beam hardening
    away from the reference thickness leaves residual bone/tissue cross-talk, as in real DES images.

    Args:
        thickness: ``(B, ≥3, H, W)`` mass thicknesses (bone, soft tissue, lung) in g/cm².
        low, high: the two spectra (e.g. 60 and 120 kVp).
        photons: optional quantum noise (photons per pixel) on both exposures.
        reference_tissue: calibration soft-tissue thickness in g/cm² (scalar or ``(B,)``); default the median
            soft-tissue + lung thickness inside the body of each image.

    Returns:
        dict with ``low``, ``high`` (log images), ``soft_tissue``, ``bone`` (all ``(B, 1, H, W)``) and ``w_bone`` ``(B,)``.
    """
    il, ih = polyenergetic_intensity(thickness, low), polyenergetic_intensity(thickness, high)
    if photons is not None:
        il, ih = add_poisson_noise(il, photons, generator), add_poisson_noise(ih, photons, generator)
    ll, lh = log_image(il), log_image(ih)
    b, s = CHANNELS.index("bone"), CHANNELS.index("soft_tissue")
    if reference_tissue is None:
        ts = (thickness[:, s] + thickness[:, CHANNELS.index("lung")]).flatten(1)
        t_ref = torch.stack([row[row > 0.1].median() if (row > 0.1).any() else row.new_tensor(0.0) for row in ts])
    else:
        t_ref = torch.as_tensor(reference_tissue, device=thickness.device, dtype=thickness.dtype).reshape(-1).expand(thickness.shape[0])
    al, ah = _hardened_mu_rho(low, t_ref.to(ll.dtype)), _hardened_mu_rho(high, t_ref.to(ll.dtype))
    wb = (ah[:, b] / al[:, b]).view(-1, 1, 1, 1)
    k = (ah[:, s].view(-1, 1, 1, 1) / (ah[:, s].view(-1, 1, 1, 1) - wb * al[:, s].view(-1, 1, 1, 1)))
    soft = (lh - wb * ll) * k
    return {"low": ll, "high": lh, "soft_tissue": soft, "bone": lh - soft, "w_bone": wb.flatten()}


def reverse_ct2xray(
    radiograph: torch.Tensor,
    t_bone: torch.Tensor,
    t_tissue: torch.Tensor,
    spec: Spectrum,
    bone_length: torch.Tensor | None = None,
    iterations: int = 30,
) -> dict[str, torch.Tensor]:
    """XraySyn Algorithm 1: bone suppression of a radiograph from estimated bone/tissue thicknesses.

    Finds per pixel the tissue mass thickness ``t'`` so that the polyenergetic model with ``t_bone`` and
    ``t'`` reproduces the input exactly (Newton iterations on a monotone convex function), then renders the
    bone-suppressed radiograph with the bone replaced by soft tissue of the same volume.

    Args:
        radiograph: ``(B, 1, H, W)`` transmitted fraction ``I`` in (0, 1] (not the log image).
        t_bone, t_tissue: ``(B, 1, H, W)`` estimated bone and tissue mass thicknesses (g/cm²).
        spec: the spectrum the radiograph was taken with.
        bone_length: ``(B, 1, H, W)`` bone path length in cm; default ``t_bone / 1.92`` (cortical bone density).
        iterations: Newton steps.

    Returns:
        dict ``tissue`` (the matched ``t'``), ``bone_suppressed`` (intensity) and ``residual`` (model − input).
    """
    mu = spec.mu_rho.to(radiograph.device, radiograph.dtype)
    w = spec.weights.to(radiograph.device, radiograph.dtype).view(1, -1, 1, 1)
    mb, ms = mu[CHANNELS.index("bone")].view(1, -1, 1, 1), mu[CHANNELS.index("soft_tissue")].view(1, -1, 1, 1)
    target = radiograph.clamp(min=1e-12)
    eb = torch.exp(-mb * t_bone)
    t = t_tissue.clone()
    for _ in range(iterations):
        e = w * eb * torch.exp(-ms * t)
        f = e.sum(1, keepdim=True) - target
        df = -(ms * e).sum(1, keepdim=True)
        t = (t - f / df).clamp(min=0)
    model = (w * eb * torch.exp(-ms * t)).sum(1, keepdim=True)
    length = bone_length if bone_length is not None else t_bone / 1.92
    t_bs = t + length * SOFT_DENSITY
    bs = (w * torch.exp(-ms * t_bs)).sum(1, keepdim=True)
    return {"tissue": t, "bone_suppressed": bs, "residual": model - radiograph}


class CT2Xray(torch.nn.Module):
    """Render radiographs and per-material targets of one CT for batches of poses (XraySyn Eq. 3–6).

    Args:
        hu: ``(X, Y, Z)`` HU array/tensor (RAS).
        spacing: voxel size mm.
        detector: :class:`Detector`.
        labels, label_names: optional label map and names (bone and lung from labels, see
            :func:`cxrdecomp.physics.materials.segment_materials`).
        spectrum: a :class:`Spectrum` (default SpekPy 120 kVp, 2.5 mm Al).
        method: projector method (``"joseph"`` exact rays; ``"shearwarp"`` fastest on CPU).
        device: where the material volume lives.

    ``forward(pose)`` returns a dict of ``(B, ·, H, W)`` tensors: ``thickness`` (bone, soft_tissue, lung in
    g/cm², bone_length in cm), ``intensity``, ``log`` (attenuation domain), ``inverted``
    (max I − I), ``soft_log`` (bone replaced by soft tissue of equal volume; attenuation domain).
    """

    def __init__(self, hu, spacing, detector: Detector, labels=None, label_names=None, spectrum: Spectrum | None = None, method: str = "joseph", device=None) -> None:
        super().__init__()
        self.volume = PreparedVolume(material_volume(hu, labels, label_names, device=device), spacing)
        self.detector, self.method = detector, method
        self.spectrum = spectrum if spectrum is not None else Spectrum.tube(120.0, 2.5)

    def thickness(self, pose: Pose) -> torch.Tensor:
        """Mass thicknesses ``(B, 4, H, W)``: bone, soft tissue, lung (g/cm²) and bone length (cm) — Eq. 3."""
        return forward_project(self.volume, pose, self.detector, method=self.method)

    def forward(self, pose: Pose, photons: float | None = None, bone_scale: float = 1.0, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        t = self.thickness(pose)
        i = polyenergetic_intensity(t, self.spectrum, bone_scale)
        if photons is not None:
            i = add_poisson_noise(i, photons, generator)
        bs = t[:, :3].clone()
        bs[:, 1] = bs[:, 1] + t[:, 3] * SOFT_DENSITY
        bs[:, 0] = 0
        i_soft = polyenergetic_intensity(bs, self.spectrum)
        return {"thickness": t, "intensity": i, "log": log_image(i), "inverted": inverted_radiograph(i), "soft_log": log_image(i_soft)}
