"""Anatomy variation of one labelled CT: smooth deformations, per-structure densities, habitus, nodules.

There is often one CT per patient and few patients; a network trained on renderings of a handful of CTs
learns their anatomy. This stage turns one labelled CT into many plausible chests:

Volume stage (:func:`vary_volume`, on the material volume of :func:`prepare`):

* **Deformation**: a smooth random displacement field ``u`` (mm) on a coarse control grid
  (``control_points``³ nodes, Gaussian values clipped to ``±displacement_mm``, ~10 mm), upsampled
  trilinearly, composed with a per-axis scaling ``s`` about the volume centre (0.85–1.15: habitus,
  body width and depth, lung height). The volume is resampled by the pull-back map
  ``q(p) = c + (p − c)/s + u(p)``; :func:`jacobian_determinant` gives ``det ∂q/∂p``, which is kept
  ≥ :data:`MIN_JACOBIAN` by halving ``u`` until it holds (with a 72 mm control spacing and 10 mm
  displacement the field's gradient is ≤ 0.3 and this is rarely needed): the map never folds.
* **Per-structure density** (bone mineral density varies by site and age): ribs, spine, clavicles,
  scapulae, sternum, humeri and the other bones each get their own factor on their density.
* **Lung inflation**: a factor on the lung parenchyma density (deeper inspiration: larger, less dense
  lungs; the size change comes from the scaling).

Projection stage (:func:`add_habitus`, :func:`add_nodules`, on the projected mass thicknesses, cheap and
exact for the additive line integrals):

* **Soft-tissue thickness**: an extra subcutaneous fat layer of ``ℓ`` mm adds ``2ℓ`` of adipose tissue
  along every ray through the body (front and back wall; approximation: constant, not the longer
  chords at the lateral edges).
* **Breast shadows**: two half-ellipsoids of 50 % glandular / 50 % adipose tissue over the lower lateral
  lung fields, thickest at their lower edge (profile ``T √(1 − r²)`` × a ramp towards the lower edge, cut off
  below it; T 2–6 cm).
* **Synthetic nodules**: spheres of soft tissue (solid or part-solid, density factor 0.3–1) inside the
  lung fields, replacing parenchyma along their chords ``2√(r² − ρ²)``; their 2-D masks are targets of
  the lung method (the lung-structure paper's nodule-weighted loss).

Material channels (:data:`CHANNELS`): densities in g/cm³ of bone, soft tissue, lung and adipose tissue
(from labels and HU: adipose = −190…−30 HU outside bone and lung), then the bone and lung masks (their
projections are path lengths in cm).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from cxrdecomp.physics.materials import hu_to_density, label_ids, segment_materials

CHANNELS = ("bone", "soft_tissue", "lung", "adipose", "bone_mask", "lung_mask")
"""Channels of the prepared material volume (the first four are the materials, in this order)."""
MATERIALS = CHANNELS[:4]
BONE_GROUPS = {
    "ribs": ("rib",),
    "spine": ("vertebrae",),
    "clavicles": ("clavicula",),
    "scapulae": ("scapula",),
    "sternum": ("sternum",),
    "humeri": ("humerus",),
}
"""Bone structures with their own density factor (label-name substrings); every other bone is ``other``."""
GROUPS = (*BONE_GROUPS, "other")
ADIPOSE_HU = (-190.0, -30.0)
MIN_JACOBIAN = 0.2
SOFT_DENSITY = 1.03
ADIPOSE_DENSITY = 0.95


@dataclass
class AnatomyVolume:
    """A CT prepared for the simulation: ``volume (6, X, Y, Z)`` (see :data:`CHANNELS`) on a device,
    ``group (X, Y, Z)`` uint8 index into :data:`GROUPS` (+1; 0 = not bone), spacing in mm and the
    body's half-depth along Y (mm, for the source and detector distances)."""

    volume: torch.Tensor
    group: torch.Tensor
    spacing: tuple[float, float, float]
    body_half_depth_mm: float
    source: str = ""

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.volume.shape[1:])  # type: ignore[return-value]

    @property
    def extent_mm(self) -> tuple[float, float, float]:
        return tuple(n * s for n, s in zip(self.shape, self.spacing))  # type: ignore[return-value]


def prepare(ct, device=None, voxel_mm: float | None = None) -> AnatomyVolume:
    """Material volume of a :class:`~cxrdecomp.io.ct.CTVolume` (HU + optional labels), optionally coarsened.

    Args:
        ct: the CT (``(X, Y, Z)`` HU, RAS, spacing in mm; labels and label names optional).
        device: torch device the volume lives on.
        voxel_mm: in-plane voxel size to average down to (integer factor of the CT's X/Y spacing; densities
            are averaged, so line integrals are kept); ``None`` keeps the CT's grid.

    Raises:
        InputError: from the material segmentation.
    """
    device = torch.device(device) if device is not None else torch.device("cpu")
    hu = torch.from_numpy(np.ascontiguousarray(ct.hu, dtype=np.float32)).to(device)
    rho = hu_to_density(hu)
    masks = segment_materials(hu, ct.labels, ct.label_names)
    adipose = masks["soft_tissue"] & (hu >= ADIPOSE_HU[0]) & (hu <= ADIPOSE_HU[1])
    soft = masks["soft_tissue"] & ~adipose
    group = torch.zeros(hu.shape, dtype=torch.uint8, device=device)
    lung_mask = torch.zeros_like(rho)
    if ct.labels is not None and ct.label_names:
        lab = torch.from_numpy(np.asarray(ct.labels)).to(device)
        lut = torch.zeros(max(int(np.asarray(ct.labels).max()), max(ct.label_names)) + 1, dtype=torch.uint8, device=device)
        for gi, keys in enumerate(BONE_GROUPS.values(), start=1):  # label id → bone group: one gather for all groups
            lut[torch.tensor(label_ids(ct.label_names, keys), dtype=torch.long, device=device)] = gi
        lung_ids = label_ids(ct.label_names, ("lung",))
        lut[torch.tensor(lung_ids, dtype=torch.long, device=device)] = 255
        g = lut[lab.long().clamp_(min=0)]
        del lab
        lung_mask = (g == 255).float()
        group = torch.where(masks["bone"] & (g != 255), g, torch.zeros_like(g))
        del g
    group[masks["bone"] & (group == 0)] = len(GROUPS)
    sp = tuple(float(s) for s in ct.spacing)
    f = max(1, int(round(voxel_mm / min(sp[0], sp[1])))) if voxel_mm is not None else 1

    def pool(x: torch.Tensor) -> torch.Tensor:  # densities are averaged: line integrals are kept
        return F.avg_pool3d(x[None, None].float(), (f, f, 1), ceil_mode=True)[0, 0] if f > 1 else x.float()

    bone = masks["bone"]
    vol = torch.stack([pool(rho * bone), pool(rho * soft), pool(rho * masks["lung"]), pool(rho * adipose), pool(bone), pool(lung_mask)])
    del hu, rho, masks, soft, adipose, lung_mask
    if f > 1:  # the bone group of a coarse voxel: the maximum (the most frequent would be exact; close enough)
        group = F.max_pool3d(group[None, None].float(), (f, f, 1), ceil_mode=True)[0, 0].to(torch.uint8)
        sp = (sp[0] * f, sp[1] * f, sp[2])
    rows = (vol[1] + vol[3]).sum(dim=(0, 2))  # tissue mass per coronal plane (Y)
    ys = torch.nonzero(rows > 0.05 * rows.max()).flatten() if float(rows.max()) > 0 else torch.zeros(0)
    c = (vol.shape[2] - 1) / 2
    half = float(max(abs(int(ys[0]) - c), abs(int(ys[-1]) - c)) * sp[1]) if len(ys) else vol.shape[2] * sp[1] / 2
    return AnatomyVolume(vol.contiguous(), group, sp, half, str(getattr(ct, "source", "")))


@dataclass(frozen=True)
class AnatomyParams:
    """One anatomy variation (see module docstring). The identity (defaults) leaves the CT as it is.

    Attributes:
        field_seed: seed of the displacement field.
        displacement_mm: bound on ``|u|`` per axis (mm); 0 = no deformation.
        control_points: control-grid nodes per axis.
        scale: per-axis scaling ``(sx, sy, sz)`` about the centre.
        bone_density: factor per bone group, as ``((group, factor), ...)`` (missing groups: 1).
        lung_density: factor on the lung parenchyma density.
        fat_layer_mm: extra subcutaneous fat layer ℓ (mm).
        breasts: ``()`` or ``(thickness_cm, half_width_fraction)``.
        nodules: ``((row, col, diameter_mm, density_factor), ...)`` with row/col in [0, 1] of the lung field
            bounding box (placed on lung pixels; see :func:`add_nodules`).
    """

    field_seed: int = 0
    displacement_mm: float = 0.0
    control_points: int = 6
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    bone_density: tuple[tuple[str, float], ...] = ()
    lung_density: float = 1.0
    fat_layer_mm: float = 0.0
    breasts: tuple[float, ...] = ()
    nodules: tuple[tuple[float, float, float, float], ...] = ()

    def volume_key(self) -> tuple:
        """The fields that change the 3-D volume (cache key of :func:`vary_volume`)."""
        return (self.field_seed, self.displacement_mm, self.control_points, self.scale, self.bone_density, self.lung_density)

    def to_dict(self) -> dict:
        return {"field_seed": self.field_seed, "displacement_mm": self.displacement_mm, "control_points": self.control_points,
                "scale": list(self.scale), "bone_density": dict(self.bone_density), "lung_density": self.lung_density,
                "fat_layer_mm": self.fat_layer_mm, "breasts": list(self.breasts), "nodules": [list(n) for n in self.nodules]}

    @classmethod
    def from_dict(cls, d: dict) -> AnatomyParams:
        return cls(int(d["field_seed"]), float(d["displacement_mm"]), int(d["control_points"]), tuple(d["scale"]),
                   tuple((g, float(d["bone_density"][g])) for g in GROUPS if g in d["bone_density"]), float(d["lung_density"]), float(d["fat_layer_mm"]),
                   tuple(d["breasts"]), tuple(tuple(n) for n in d["nodules"]))


@dataclass(frozen=True)
class AnatomyRanges:
    """Randomisation ranges of :func:`draw_anatomy` (uniform unless noted)."""

    displacement_mm: tuple[float, float] = (3.0, 10.0)
    scale: tuple[float, float] = (0.85, 1.15)
    bone_density: tuple[float, float] = (0.75, 1.25)
    lung_density: tuple[float, float] = (0.8, 1.25)
    fat_layer_mm: tuple[float, float] = (0.0, 30.0)
    breast_p: float = 0.35
    breast_thickness_cm: tuple[float, float] = (2.0, 6.0)
    breast_half_width: tuple[float, float] = (0.12, 0.2)
    nodule_p: float = 0.5
    nodules_max: int = 3
    nodule_mm: tuple[float, float] = (5.0, 25.0)
    nodule_density: tuple[float, float] = (0.3, 1.0)


def draw_volume_anatomy(rng: np.random.Generator, ranges: AnatomyRanges = AnatomyRanges()) -> AnatomyParams:
    """The 3-D part of an anatomy variation (deformation, scaling, densities); reproducible from ``rng``."""
    u = lambda r: float(rng.uniform(*r))
    dens = tuple((g, round(u(ranges.bone_density), 4)) for g in GROUPS)
    return AnatomyParams(field_seed=int(rng.integers(2**31)), displacement_mm=round(u(ranges.displacement_mm), 3),
                         scale=tuple(round(u(ranges.scale), 4) for _ in range(3)), bone_density=dens,
                         lung_density=round(u(ranges.lung_density), 4))


def draw_habitus(base: AnatomyParams, rng: np.random.Generator, ranges: AnatomyRanges = AnatomyRanges()) -> AnatomyParams:
    """Add the per-view 2-D part (fat layer, breasts, nodules) to ``base``."""
    u = lambda r: float(rng.uniform(*r))
    breasts = (round(u(ranges.breast_thickness_cm), 3), round(u(ranges.breast_half_width), 3)) if rng.random() < ranges.breast_p else ()
    nod = []
    if rng.random() < ranges.nodule_p:
        for _ in range(int(rng.integers(1, ranges.nodules_max + 1))):
            nod.append((round(float(rng.uniform(0.15, 0.85)), 4), round(float(rng.uniform(0.1, 0.9)), 4),
                        round(u(ranges.nodule_mm), 2), round(u(ranges.nodule_density), 3)))
    return replace(base, fat_layer_mm=round(u(ranges.fat_layer_mm), 2), breasts=breasts, nodules=tuple(nod))


# --------------------------------------------------------------------------- deformation
def displacement_field(shape, spacing, max_mm: float, control_points: int = 6, seed: int = 0, device=None) -> torch.Tensor:
    """Smooth random displacement ``(3, X, Y, Z)`` in mm (|u| ≤ ``max_mm`` per axis), reproducible from ``seed``."""
    g = torch.Generator().manual_seed(int(seed))
    n = max(2, int(control_points))
    c = (torch.randn(1, 3, n, n, n, generator=g) * (max_mm / 2)).clamp(-max_mm, max_mm)
    return F.interpolate(c.to(device), size=tuple(shape), mode="trilinear", align_corners=True)[0]


def jacobian_determinant(disp: torch.Tensor, spacing, scale=(1.0, 1.0, 1.0)) -> torch.Tensor:
    """``det ∂q/∂p`` of the pull-back map ``q = c + (p − c)/s + u(p)`` by central differences, ``(X, Y, Z)``."""
    J = torch.empty(3, 3, *disp.shape[1:], dtype=disp.dtype, device=disp.device)
    for j in range(3):
        d = torch.gradient(disp, spacing=float(spacing[j]), dim=j + 1)[0]  # ∂u_i/∂p_j for all i
        for i in range(3):
            J[i, j] = d[i] + (1.0 / scale[i] if i == j else 0.0)
    return torch.linalg.det(J.permute(2, 3, 4, 0, 1).double()).to(disp.dtype)


def _coarse_jacobian_min(shape, spacing, p: AnatomyParams) -> float:
    """Minimum Jacobian determinant of the field on a coarse grid (the field is trilinear between nodes)."""
    n = max(2, p.control_points)
    coarse = displacement_field((4 * n,) * 3, spacing, p.displacement_mm, p.control_points, p.field_seed)
    sp = [e / (4 * n - 1) for e in (s * k for s, k in zip(spacing, shape))]
    return float(jacobian_determinant(coarse, sp, p.scale).min())


def vary_volume(av: AnatomyVolume, p: AnatomyParams) -> torch.Tensor:
    """The deformed, density-scaled material volume ``(6, X, Y, Z)`` of one anatomy variation (module docstring)."""
    vol = av.volume
    dens = dict(p.bone_density)
    if any(v != 1.0 for v in dens.values()):
        lut = torch.tensor([1.0] + [dens.get(g, 1.0) for g in GROUPS], device=vol.device, dtype=vol.dtype)
        vol = vol.clone()
        vol[0] *= lut[av.group.long()]
    if p.lung_density != 1.0:
        vol = vol.clone() if vol is av.volume else vol
        vol[2] *= p.lung_density
    if p.displacement_mm == 0 and all(s == 1.0 for s in p.scale):
        return vol
    shape, sp = av.shape, av.spacing
    dmax = p.displacement_mm
    while dmax > 0 and _coarse_jacobian_min(shape, sp, replace(p, displacement_mm=dmax)) < MIN_JACOBIAN:
        dmax /= 2
    dev = vol.device
    axes = [(torch.arange(n, device=dev, dtype=torch.float32) - (n - 1) / 2) * s for n, s in zip(shape, sp)]  # mm from centre
    half = [(n - 1) / 2 * s for n, s in zip(shape, sp)]
    u = displacement_field(shape, sp, dmax, p.control_points, p.field_seed, dev) if dmax > 0 else None
    coords = []
    for i in range(3):
        view = [1, 1, 1]
        view[i] = -1
        q = (axes[i] / p.scale[i]).view(*view).expand(*shape)
        if u is not None:
            q = q + u[i]
        coords.append(q / half[i])
    grid = torch.stack([coords[2], coords[1], coords[0]], -1)[None]  # (1, X, Y, Z, 3) as (W=Z, H=Y, D=X)
    del coords, u
    return F.grid_sample(vol[None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]


# --------------------------------------------------------------------------- projection-stage additions
def _disc_chord(h: int, w: int, row: float, col: float, radius_px: float, device, dtype) -> torch.Tensor:
    r = torch.arange(h, device=device, dtype=dtype).view(-1, 1) - row
    c = torch.arange(w, device=device, dtype=dtype).view(1, -1) - col
    return (radius_px**2 - r**2 - c**2).clamp(min=0).sqrt()  # half-chord in pixels


def add_habitus(t: torch.Tensor, p: AnatomyParams, pixel_mm: float) -> torch.Tensor:
    """Add the fat layer and breast shadows to projected thicknesses ``t (N, 6, H, W)`` (channels :data:`CHANNELS`).

    ``pixel_mm`` is the detector pixel pitch at the isocentre (mm). Returns a new tensor.
    """
    t = t.clone()
    body = (t[:, 1] + t[:, 3]) > 2.0  # more than 2 g/cm² of soft tissue: inside the body outline
    if p.fat_layer_mm > 0:
        t[:, 3] += body.to(t.dtype) * (2 * p.fat_layer_mm / 10.0) * ADIPOSE_DENSITY
    if p.breasts:
        thick_cm, half_w = p.breasts
        lung = t[:, 5] > 0.5
        h, w = t.shape[-2:]
        for n in range(t.shape[0]):
            rows = torch.nonzero(lung[n].any(1)).flatten()
            cols = torch.nonzero(lung[n].any(0)).flatten()
            if not len(rows):
                continue
            r0, r1, c0, c1 = (int(v) for v in (rows[0], rows[-1], cols[0], cols[-1]))
            a = half_w * w
            for side in (0.2, 0.8):  # over the lower lateral lung fields, the lower edge near the diaphragm
                cr, cc = r0 + 0.95 * (r1 - r0), c0 + side * (c1 - c0)
                rr = torch.arange(h, device=t.device, dtype=t.dtype).view(-1, 1) - cr
                cc_ = torch.arange(w, device=t.device, dtype=t.dtype).view(1, -1) - cc
                # half-ellipsoid seen from the front, thickest at its lower edge (a pendant breast), nothing below it
                disc = (1 - (rr / (0.9 * a)) ** 2 - (cc_ / a) ** 2).clamp(min=0).sqrt()
                prof = disc * ((rr + 0.9 * a) / (1.8 * a)).clamp(0, 1) * (rr <= 0.2 * a) * body[n]
                t[n, 1] += 0.5 * thick_cm * 1.0 * prof
                t[n, 3] += 0.5 * thick_cm * ADIPOSE_DENSITY * prof
    return t


def add_nodules(t: torch.Tensor, p: AnatomyParams, pixel_mm: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Insert the nodules of ``p`` into projected thicknesses ``t (N, 6, H, W)``; returns ``(t, nodule_mask (N, 1, H, W),
    nodule_mass (N, 1, H, W))``, the last the soft-tissue mass (g/cm²) the nodules added (it belongs to the lung
    X-ray: the lung paper inserts its nodules into the lung).

    A nodule of diameter d at (row, col) of the lung field's bounding box is moved to the nearest lung pixel;
    along its chord c (cm) it adds ``f · 1.03 · c`` g/cm² of soft tissue and removes the parenchyma it displaces
    (local lung density × c, at most what the ray holds).
    """
    n_, _, h, w = t.shape
    mask = torch.zeros(n_, 1, h, w, device=t.device, dtype=t.dtype)
    mass = torch.zeros_like(mask)
    if not p.nodules:
        return t, mask, mass
    t = t.clone()
    for n in range(n_):
        lung = t[n, 5] > 1.0  # at least 1 cm of lung along the ray
        pts = torch.nonzero(lung)
        if not len(pts):
            continue
        r0, c0 = pts.min(0).values.tolist()
        r1, c1 = pts.max(0).values.tolist()
        for fr, fc, d_mm, f in p.nodules:
            want = torch.tensor([r0 + fr * (r1 - r0), c0 + fc * (c1 - c0)], device=t.device, dtype=t.dtype)
            row, col = pts[((pts.to(t.dtype) - want) ** 2).sum(1).argmin()].tolist()
            half = _disc_chord(h, w, row, col, d_mm / 2 / pixel_mm, t.device, t.dtype)
            chord_cm = 2 * half * pixel_mm / 10.0
            rho_lung = t[n, 2] / t[n, 5].clamp(min=1e-3)
            removed = torch.minimum(rho_lung * chord_cm, t[n, 2])
            t[n, 2] -= removed
            t[n, 1] += f * SOFT_DENSITY * chord_cm
            mass[n, 0] += f * SOFT_DENSITY * chord_cm
            mask[n, 0] = torch.maximum(mask[n, 0], (half > 0).to(t.dtype))
    return t, mask, mass
