"""Voxel targets of a CT: which voxels are bone, which are soft tissue.

Bone-extraction paper (Gozes & Greenspan, "Bone structures extraction and enhancement in chest
radiographs via CNN trained on synthetic data", ISBI 2019) §2.2: the bone X-ray is the DRR of the
bone voxels only (every other voxel set to −1024 HU); the paper finds bone voxels by the HU window
``[300, 700]``. Wherever a label map exists, cxrdecomp uses the union of the bone labels instead
(ribs, vertebrae, clavicles, scapulae, sternum, humeri, hips, femurs, sacrum, skull and costal
cartilages): on contrast-enhanced chest CT the HU window also takes the contrast-filled aorta and
heart and misses the dense rib cortex (> 700 HU) — see docs/simulation.md.

The soft-tissue volume is the complement (non-bone voxels), so that
``µ = µ·bone + µ·(1 − bone)`` voxel by voxel and, projected, bone + soft tissue = DRR in the
attenuation domain (line integrals add).

Reusable pieces for other targets (e.g. the lung views of :mod:`cxrdecomp.simulate.lung_generate`):
:func:`labels_matching`, :func:`mask_from_labels`, :func:`hu_window_mask`, :func:`hu_to_mu`.

All volumes are ``(X, Y, Z)`` numpy arrays or torch tensors in RAS orientation.
"""

from __future__ import annotations

import re
import warnings
from typing import Iterable

import numpy as np

from cxrdecomp.errors import InputError

MU_WATER_PER_CM = 0.2
"""Linear attenuation of water in cm⁻¹ used by the paper (§2.1), ≈ 60 keV effective energy."""

PAPER_BONE_HU = (300.0, 700.0)
"""The paper's bone HU window (§2.2)."""

BONE_LABEL_PATTERNS: tuple[str, ...] = (
    r"^rib_",
    r"^vertebra",
    r"^clavicula",
    r"^clavicle",
    r"^scapula",
    r"^sternum",
    r"^humerus",
    r"^hip_",
    r"^femur",
    r"^sacrum",
    r"^skull",
    r"^costal_cartilage",
)
"""Regular expressions (matched against lower-case TotalSegmentator-style names) of bone labels."""


def labels_matching(label_names: dict[int, str], patterns: Iterable[str]) -> list[int]:
    """Label ids whose (lower-case) name matches any of the regular expressions ``patterns``."""
    rx = [re.compile(p) for p in patterns]
    return sorted(i for i, n in label_names.items() if any(r.search(n.lower()) for r in rx))


def mask_from_labels(labels: np.ndarray, ids: Iterable[int]) -> np.ndarray:
    """Boolean ``(X, Y, Z)`` mask of the voxels whose label is in ``ids``."""
    ids = sorted(set(int(i) for i in ids))
    if not ids:
        return np.zeros(labels.shape, dtype=bool)
    if labels.dtype.kind in "iu" and int(labels.min()) >= 0 and int(labels.max()) < 1 << 16:
        lut = np.zeros(max(int(labels.max()), max(ids)) + 1, dtype=bool)  # look-up table: fast on big volumes
        lut[ids] = True
        return lut[labels]
    return np.isin(labels, ids)


def labels_present(labels: np.ndarray) -> set[int]:
    """Label ids occurring in a label map (fast for non-negative integer maps)."""
    if labels.dtype.kind in "iu" and int(labels.min()) >= 0 and int(labels.max()) < 1 << 16:
        return set(np.flatnonzero(np.bincount(labels.ravel().astype(np.int64))).tolist())
    return set(np.unique(labels).tolist())


def hu_window_mask(hu: np.ndarray, lo: float = PAPER_BONE_HU[0], hi: float = PAPER_BONE_HU[1]) -> np.ndarray:
    """Boolean mask of voxels with ``lo <= HU <= hi`` (the paper's bone definition with defaults)."""
    return (hu >= lo) & (hu <= hi)


def bone_mask(ct, method: str = "auto", hu_window: tuple[float, float] = PAPER_BONE_HU, patterns: Iterable[str] = BONE_LABEL_PATTERNS) -> np.ndarray:
    """Bone voxels of a CT.

    Args:
        ct: a :class:`cxrdecomp.io.ct.CTVolume`.
        method: ``"labels"`` (union of bone labels; needs ``ct.labels`` and ``ct.label_names``),
            ``"hu"`` (the paper's HU window), or ``"auto"`` (labels when available, else HU window).
        hu_window: ``(lo, hi)`` HU for ``"hu"``.
        patterns: regular expressions naming bone labels.

    Returns:
        ``(X, Y, Z)`` bool array.

    Raises:
        InputError: ``method="labels"`` without a label map / names, or no bone label found.
    """
    if method not in ("auto", "labels", "hu"):
        raise InputError(f"bone mask method must be 'auto', 'labels' or 'hu', not {method!r}")
    have_labels = ct.labels is not None and bool(ct.label_names)
    if method == "hu" or (method == "auto" and not have_labels):
        return hu_window_mask(ct.hu, *hu_window)
    if not have_labels:
        raise InputError(f"{ct.source or 'CT'}: bone mask from labels needs a label map and a label-name table (structures.csv)")
    ids = labels_matching(ct.label_names, patterns)
    in_map = labels_present(ct.labels)
    present = [i for i in ids if i in in_map]
    if not present:
        if method == "auto":
            warnings.warn(f"{ct.source or 'CT'}: no bone label in the label map; using the HU window {hu_window}", stacklevel=2)
            return hu_window_mask(ct.hu, *hu_window)
        raise InputError(f"{ct.source or 'CT'}: the label map holds none of the bone labels {BONE_LABEL_PATTERNS}")
    return mask_from_labels(ct.labels, present)


def hu_to_mu(hu, mu_water: float = MU_WATER_PER_CM):
    """Attenuation µ (cm⁻¹) from HU, bone-extraction paper §2.1: ``µ = µ_water (HU + 1000) / 1000``.

    HU below −1000 (padding outside the scanner's field of view, e.g. −2048) are clipped to −1000
    so that µ ≥ 0. Works on numpy arrays and torch tensors of any shape.
    """
    if hasattr(hu, "clamp"):
        return mu_water * (hu.clamp(min=-1000.0) + 1000.0) / 1000.0
    return mu_water * (np.maximum(hu, -1000.0) + 1000.0) / 1000.0


def split_mu(hu, mask, mu_water: float = MU_WATER_PER_CM, soft_fill_hu: float | None = None):
    """Split µ into a bone and a soft-tissue volume that add up to µ voxel by voxel.

    Args:
        hu: ``(X, Y, Z)`` HU (numpy or torch).
        mask: ``(X, Y, Z)`` bool bone mask of the same type.
        soft_fill_hu: ``None`` (the paper): bone voxels are −1024 HU (µ = 0) in the soft-tissue volume and
            hold their full µ in the bone volume. A number (e.g. 40, muscle): bone voxels hold this HU in the
            soft-tissue volume and only the excess ``µ − µ(fill)`` in the bone volume (what a radiologist
            calls the bone *shadow*: removing it leaves the surrounding tissue, not a hole).

    Returns:
        ``(mu_bone, mu_soft)`` in cm⁻¹, each ≥ 0 except the excess variant where bone voxels less dense
        than the fill are slightly negative; ``mu_bone + mu_soft == hu_to_mu(hu)`` exactly (up to float).
    """
    mu = hu_to_mu(hu, mu_water)
    m = mask.to(mu.dtype) if hasattr(mu, "clamp") else mask.astype(mu.dtype)
    if soft_fill_hu is None:
        bone = mu * m
    else:
        fill = mu_water * (max(float(soft_fill_hu), -1000.0) + 1000.0) / 1000.0
        bone = (mu - fill) * m
    return bone, mu - bone
