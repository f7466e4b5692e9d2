"""Read CT volumes (HU) and label maps into the project's convention.

Convention: arrays ``(X, Y, Z)`` in RAS+ orientation (nibabel's canonical: X → patient right,
Y → anterior, Z → superior), HU as float32, spacing in mm. Label maps share the CT's grid (int16).
"""

from __future__ import annotations

import csv
import os
import warnings
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


NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")


def _read_nifti_ras(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    try:
        img = nib.as_closest_canonical(nib.load(str(path)))
        data = np.asarray(img.dataobj)
    except Exception as e:  # nibabel raises many types on corrupt files
        raise InputError(f"cannot read {path} as NIfTI: {e}") from e
    return data, img.affine


def _to_ras(data_ijk: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reorient an ``(i, j, k)`` array with a voxel→RAS affine to the closest canonical (RAS) axes."""
    import nibabel as nib

    img = nib.as_closest_canonical(nib.Nifti1Image(data_ijk, affine))
    return np.asarray(img.dataobj), img.affine


def _sitk_to_ras(img) -> tuple[np.ndarray, np.ndarray]:
    """SimpleITK image (LPS physical space) → ``(X, Y, Z)`` RAS array and voxel→RAS affine."""
    import SimpleITK as sitk

    if img.GetDimension() != 3:
        raise InputError(f"image has {img.GetDimension()} dimensions; a CT volume has 3")
    arr = sitk.GetArrayFromImage(img)  # (k, j, i)
    if arr.ndim != 3:
        raise InputError(f"image has {img.GetNumberOfComponentsPerPixel()} components per voxel; a CT has 1")
    data = np.transpose(arr, (2, 1, 0))
    D = np.array(img.GetDirection(), dtype=float).reshape(3, 3)
    aff = np.eye(4)
    aff[:3, :3] = D * np.array(img.GetSpacing(), dtype=float)[None, :]
    aff[:3, 3] = img.GetOrigin()
    aff[:2] *= -1  # LPS → RAS
    return _to_ras(data, aff)


def _sitk():
    """SimpleITK with its C++ warning display off (ITK prints warnings straight onto stderr, past Python's
    logging; what matters is raised as an exception and reported as one line)."""
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    return sitk


def _read_itk_file(path: Path) -> tuple[np.ndarray, np.ndarray]:
    sitk = _sitk()

    try:
        img = sitk.ReadImage(str(path))
    except Exception as e:
        raise InputError(f"cannot read {path} as an image volume (NRRD/MHA): {e}") from e
    return _sitk_to_ras(img)


def _resample_slices(data_ijk: np.ndarray, pos: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation of slices at positions ``pos`` (ascending, mm) onto an even grid of ``step``."""
    n = int(np.floor((pos[-1] - pos[0]) / step + 1e-6)) + 1
    new = pos[0] + step * np.arange(n)
    idx = np.clip(np.searchsorted(pos, new, side="right") - 1, 0, len(pos) - 2)
    w = ((new - pos[idx]) / (pos[idx + 1] - pos[idx])).astype(np.float32)
    out = data_ijk[..., idx] * (1 - w) + data_ijk[..., idx + 1] * w
    return out.astype(np.float32), new


def _read_dicom_series(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """One DICOM CT series of a folder → ``(X, Y, Z)`` RAS HU and affine (uneven slices resampled)."""
    sitk = _sitk()

    ids = list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    if not ids:
        raise InputError(f"{folder} holds no DICOM series (no readable DICOM image files)")
    if len(ids) > 1:
        raise InputError(
            f"{folder} holds {len(ids)} DICOM series ({', '.join(ids)}); put one series per folder "
            "(cxrdecomp reads one CT per folder)"
        )
    files = list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), ids[0]))
    import pydicom

    try:
        heads = [pydicom.dcmread(f, stop_before_pixels=True) for f in files]
    except Exception as e:
        raise InputError(f"cannot read DICOM headers in {folder}: {e}") from e
    modality = str(getattr(heads[0], "Modality", ""))
    if modality != "CT":
        raise InputError(f"{folder}: DICOM Modality is {modality or 'missing'!r}, not 'CT'; cxrdecomp simulates DRRs from CT only")
    if len(files) < 2:
        raise InputError(f"{folder}: the series has {len(files)} slice; a CT volume needs at least 2")
    try:
        iop = np.array(heads[0].ImageOrientationPatient, dtype=float)
        ipp = np.array([h.ImagePositionPatient for h in heads], dtype=float)
        ps = [float(v) for v in heads[0].PixelSpacing]  # row spacing, column spacing
    except AttributeError as e:
        raise InputError(f"{folder}: DICOM slices lack geometry ({e}); cannot build a volume") from e
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    pos = ipp @ normal
    order = np.argsort(pos)
    files = [files[i] for i in order]
    pos, ipp = pos[order], ipp[order]
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        img = reader.Execute()  # applies rescale slope/intercept
    except Exception as e:
        raise InputError(f"cannot read the DICOM series in {folder}: {e}") from e
    arr = np.transpose(sitk.GetArrayFromImage(img), (2, 1, 0)).astype(np.float32)  # (col i, row j, slice k)
    d = np.diff(pos)
    if np.any(d <= 1e-6):
        raise InputError(f"{folder}: two slices share a position; the series is inconsistent (duplicate slices?)")
    step = float(np.median(d))
    if np.max(np.abs(d - step)) > 0.01 * step + 1e-3:
        warnings.warn(
            f"{folder}: uneven slice spacing ({d.min():.3g}–{d.max():.3g} mm; missing slices?); "
            f"resampled linearly to an even {step:.3g} mm",
            stacklevel=3,
        )
        arr, new = _resample_slices(arr, pos, step)
    # voxel (i, j, k) → LPS mm: ipp0 + i*col_sp*row + j*row_sp*col + k*step*normal
    aff = np.eye(4)
    aff[:3, 0] = row * ps[1]
    aff[:3, 1] = col * ps[0]
    aff[:3, 2] = normal * step
    aff[:3, 3] = ipp[0]
    aff[:2] *= -1  # LPS → RAS
    return _to_ras(arr, aff)


def _read_volume(path: Path) -> tuple[np.ndarray, np.ndarray]:
    name = path.name.lower()
    if path.is_dir():
        return _read_dicom_series(path)
    if name.endswith(NIFTI_SUFFIXES):
        return _read_nifti_ras(path)
    if name.endswith(ITK_SUFFIXES):
        return _read_itk_file(path)
    if name.endswith(".dcm"):
        raise InputError(f"{path} is a single DICOM file; give the folder holding the whole CT series")
    raise InputError(f"{path}: unknown CT format; use NIfTI (.nii, .nii.gz), NRRD/MHA or a folder with one DICOM series")


def read_label_names(path: str | os.PathLike) -> dict[int, str]:
    """Read a ``structures.csv`` (columns ``structure``, ``id``) into ``{id: name}``."""
    with open(path, newline="") as f:
        return {int(r["id"]): r["structure"] for r in csv.DictReader(f)}


def read_ct(path: str | os.PathLike, labels: str | os.PathLike | None = None, label_names: str | os.PathLike | None = None) -> CTVolume:
    """Read a CT volume as HU in RAS orientation.

    Formats: NIfTI (``.nii``, ``.nii.gz``), NRRD / MetaImage (``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd``,
    via SimpleITK), or a folder holding exactly one DICOM series (SimpleITK ``ImageSeriesReader``;
    rescale slope/intercept applied). A DICOM series with missing slices or uneven slice spacing is
    **resampled** linearly along the slice axis to an even spacing (the median slice distance), with
    a warning.

    Args:
        path: the CT file or DICOM folder.
        labels: optional label map on the same grid (any of the formats above).
        label_names: optional CSV with columns ``structure`` and ``id``.

    Returns:
        A :class:`CTVolume`: ``(X, Y, Z)`` float32 HU, spacing in mm.

    Raises:
        InputError: missing or unreadable file; several DICOM series in one folder (their
            SeriesInstanceUIDs are named); DICOM modality other than CT; not 3-D (e.g. a 2-D image);
            empty; NaN/inf values; values that are not HU (no air below −500 HU); a label map of
            another shape.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"CT file {path} does not exist")
    data, affine = _read_volume(path)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.size == 0:
        raise InputError(f"{path} is empty (shape {data.shape})")
    if data.ndim != 3 or min(data.shape) < 2:
        raise InputError(f"{path} is not a 3-D CT volume (shape {data.shape}); a 2-D image or a single slice cannot be projected")
    hu = np.asarray(data, dtype=np.float32)
    if not np.isfinite(hu).all():
        raise InputError(f"{path} contains NaN or infinite values")
    if float(hu.min()) > -500.0:
        raise InputError(
            f"{path} does not look like a CT in Hounsfield units: its minimum is {float(hu.min()):.0f} (air is −1000 HU). "
            "Not a CT (MR?), or stored values without the rescale intercept (then subtract 1024)."
        )
    if float(hu.max()) - float(hu.min()) < 200.0:
        raise InputError(f"{path} is nearly constant ({float(hu.min()):.0f}…{float(hu.max()):.0f}); not a CT volume")
    spacing = tuple(float(v) for v in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    vol = CTVolume(hu=hu, spacing=spacing, affine=affine, source=str(path))  # type: ignore[arg-type]
    if labels is not None:
        if not Path(labels).exists():
            raise InputError(f"label map {labels} does not exist")
        lab, _ = _read_volume(Path(labels))
        if lab.ndim == 4 and lab.shape[3] == 1:
            lab = lab[..., 0]
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
