"""Read CT volumes (HU) and label maps into the project's convention.

Convention: arrays ``(X, Y, Z)`` in RAS orientation (X → patient left, Y → anterior,
Z → superior), HU as float32, spacing in mm. Label maps share the CT's grid (int16).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cxrdecomp.errors import InputError


@dataclass
class CTVolume:
    """A CT volume in RAS orientation.

    Attributes:
        hu: ``(X, Y, Z)`` float32 Hounsfield units.
        spacing: ``(sx, sy, sz)`` voxel size in mm.
        affine: ``4×4`` voxel→RAS-mm matrix of the reoriented array.
        labels: optional ``(X, Y, Z)`` int16 label map on the same grid.
        label_names: optional mapping label id → structure name (e.g. ``"rib_left_3"``).
        source: where it was read from.
    """

    hu: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    labels: np.ndarray | None = None
    label_names: dict[int, str] = field(default_factory=dict)
    source: str = ""

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.hu.shape)  # type: ignore[return-value]


def _read_nifti_ras(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    try:
        img = nib.as_closest_canonical(nib.load(str(path)))
        data = np.asarray(img.dataobj)
    except Exception as e:  # nibabel raises many types on corrupt files
        raise InputError(f"cannot read {path} as NIfTI: {e}") from e
    return data, img.affine


def read_label_names(path: str | os.PathLike) -> dict[int, str]:
    """Read a ``structures.csv`` (columns ``structure``, ``id``) into ``{id: name}``."""
    with open(path, newline="") as f:
        return {int(r["id"]): r["structure"] for r in csv.DictReader(f)}


def read_ct(path: str | os.PathLike, labels: str | os.PathLike | None = None, label_names: str | os.PathLike | None = None) -> CTVolume:
    """Read a CT volume (NIfTI ``.nii``/``.nii.gz``) as HU in RAS orientation.

    Args:
        path: the CT file.
        labels: optional label map on the same grid.
        label_names: optional CSV with columns ``structure`` and ``id``.

    Returns:
        A :class:`CTVolume`.

    Raises:
        InputError: unreadable file, not 3-D, empty, NaN/inf values, or a label map of another shape.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"CT file {path} does not exist")
    data, affine = _read_nifti_ras(path)
    if data.ndim != 3 or min(data.shape) < 2:
        raise InputError(f"{path} is not a 3-D CT volume (shape {data.shape})")
    hu = np.asarray(data, dtype=np.float32)
    if not np.isfinite(hu).all():
        raise InputError(f"{path} contains NaN or infinite values")
    spacing = tuple(float(v) for v in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    vol = CTVolume(hu=hu, spacing=spacing, affine=affine, source=str(path))  # type: ignore[arg-type]
    if labels is not None:
        lab, _ = _read_nifti_ras(Path(labels))
        if lab.shape != hu.shape:
            raise InputError(f"label map {labels} has shape {lab.shape}, CT {path} has {hu.shape}")
        vol.labels = np.asarray(lab, dtype=np.int16)
    if label_names is not None:
        vol.label_names = read_label_names(label_names)
    return vol


def example_ct() -> CTVolume:
    """The example chest CT with its label map (fetched from the package registry on first use)."""
    from cxrdecomp.io.examples import example_file

    return read_ct(example_file("cxr.nii.gz"), example_file("mask.nii.gz"), example_file("structures.csv"))
