"""Read a real chest radiograph (DICOM CR/DX, PNG, JPEG, TIFF) into the display domain.

:func:`read_radiograph` returns a :class:`Radiograph` whose ``image`` is ``(H, W)`` float32 in the
*display domain* ``[0, 1]`` (air dark, bone bright), at the file's full resolution.

DICOM (CR, DX "for presentation" and "for processing"; any transfer syntax pydicom can decode,
including JPEG 2000 and JPEG lossless through pylibjpeg):

1. Modality LUT: ``RescaleSlope`` / ``RescaleIntercept`` (or a Modality LUT Sequence), in float32.
2. For-processing images whose ``PixelIntensityRelationship`` is ``LIN`` (proportional to the
   detected exposure) are log-transformed, so that pixel values are proportional to attenuation
   (line integrals), as in a for-presentation image.
3. VOI: a VOI LUT Sequence if present, else the first ``WindowCenter`` / ``WindowWidth`` pair
   (DICOM PS3.3 C.11.2.1.2, functions LINEAR, LINEAR_EXACT, SIGMOID), mapped to ``[0, 1]``;
   without either, a robust percentile normalisation (0.5 % → 0, 99.5 % → 1).
4. ``MONOCHROME1`` (high value = dark) is inverted so that bone is bright.

Pixel spacing ``(row, col)`` in mm comes from ``PixelSpacing`` or, failing that,
``ImagerPixelSpacing`` (at the detector plane); zero or missing values give ``None`` and a warning.

Image files: 8-bit images are divided by 255; 16-bit images by ``2**b − 1`` where ``b`` is the
effective bit depth (the bits needed for the largest value, at least 8, so that 12-bit data stored
in a 16-bit PNG is not nearly black); floating-point images are percentile-normalised. Colour
images are converted to grey (ITU-R 601 luma) with a warning. JPEG EXIF orientation is applied.

Every unusable input raises :class:`cxrdecomp.errors.InputError` with the file name and the reason:
missing, empty, corrupt or truncated file; not a radiograph (CT, MR, ultrasound, ...; multi-frame);
over :data:`MAX_PIXELS`; smaller than :data:`MIN_SIDE` pixels on a side; blank (constant) image.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cxrdecomp.errors import InputError

#: Largest accepted image, in pixels (100 megapixels).
MAX_PIXELS = 100_000_000
#: Smallest accepted side length, in pixels.
MIN_SIDE = 8

DICOM_SUFFIXES = (".dcm", ".dicom", ".dic")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
RADIOGRAPH_SUFFIXES = DICOM_SUFFIXES + IMAGE_SUFFIXES

# SOP classes read as projection radiographs
_CR = "1.2.840.10008.5.1.4.1.1.1"
_DX_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
_DX_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
RADIOGRAPH_SOP_CLASSES = {_CR: "CR", _DX_PRESENTATION: "DX for presentation", _DX_PROCESSING: "DX for processing"}
RADIOGRAPH_MODALITIES = ("CR", "DX", "RG")


class RadiographWarning(UserWarning):
    """Something about an input radiograph the user should know (colour converted, no spacing...)."""


@dataclass
class Radiograph:
    """A radiograph ready for decomposition.

    Attributes:
        image: ``(H, W)`` float32, display domain ``[0, 1]`` (air dark, bone bright), full resolution.
        pixel_spacing: ``(row, col)`` spacing in mm, or ``None`` when unknown.
        dataset: the pydicom ``Dataset`` of a DICOM input (pixel data included), else ``None``.
        path: the file read.
        bits: bits per stored sample (``BitsStored`` for DICOM; effective bit depth for image files).
        photometric: ``MONOCHROME1`` / ``MONOCHROME2`` (DICOM), or the PIL mode of an image file.
        warnings: human-readable notes on what was converted or missing.
    """

    image: np.ndarray
    pixel_spacing: tuple[float, float] | None
    dataset: Any | None
    path: Path
    bits: int
    photometric: str
    warnings: list[str] = field(default_factory=list)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.image.shape)  # type: ignore[return-value]

    @property
    def is_dicom(self) -> bool:
        return self.dataset is not None


def _warn(warns: list[str], msg: str) -> None:
    warns.append(msg)
    warnings.warn(msg, RadiographWarning, stacklevel=3)


def _check_size(path: Path, rows: int, cols: int) -> None:
    if rows * cols == 0:
        raise InputError(f"{path}: the image is empty ({rows}x{cols} pixels)")
    if min(rows, cols) < MIN_SIDE:
        raise InputError(f"{path}: a {rows}x{cols}-pixel image is too small to be a radiograph (need >= {MIN_SIDE} per side)")
    if rows * cols > MAX_PIXELS:
        raise InputError(
            f"{path}: {rows}x{cols} = {rows * cols / 1e6:.0f} megapixels is over the limit of "
            f"{MAX_PIXELS // 1_000_000} megapixels; downsample the image first"
        )


def _check_content(path: Path, a: np.ndarray) -> None:
    if not np.isfinite(a).all():
        raise InputError(f"{path}: the image holds NaN or infinite values")
    if float(a.max()) == float(a.min()):
        raise InputError(f"{path}: the image is blank (every pixel is {float(a.min()):g})")


def percentile_normalize(a: np.ndarray, lo: float = 0.5, hi: float = 99.5) -> np.ndarray:
    """Map the ``lo``-th percentile to 0 and the ``hi``-th to 1, clipped. ``(H, W)`` → float32 ``(H, W)``.

    Percentiles are estimated on a regular subsample (every 4th pixel on large images) for speed.
    """
    step = 4 if a.size > 1_000_000 else 1
    sub = a[::step, ::step]
    p_lo, p_hi = np.percentile(sub, [lo, hi])
    if p_hi <= p_lo:
        p_lo, p_hi = float(a.min()), float(a.max())
    out = (a.astype(np.float32, copy=False) - np.float32(p_lo)) * np.float32(1.0 / (p_hi - p_lo))
    return np.clip(out, 0.0, 1.0, out=out)


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True if the file has the DICOM Part 10 marker ``DICM`` at byte 128."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def read_radiograph(path: str | os.PathLike) -> Radiograph:
    """Read a chest radiograph from a DICOM or image file into the display domain.

    Args:
        path: a DICOM file (CR / DX; with or without the ``.dcm`` suffix), or a PNG / JPEG / TIFF.

    Returns:
        :class:`Radiograph` with ``image`` ``(H, W)`` float32 in ``[0, 1]`` (air dark, bone bright).

    Raises:
        InputError: missing, empty, corrupt or truncated file; not a projection radiograph
            (e.g. CT, MR, ultrasound, multi-frame, colour DICOM); over 100 megapixels; fewer than
            8 pixels on a side; blank image.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file")
    if p.is_dir():
        raise InputError(f"{p}: is a folder holding no DICOM, PNG, JPEG or TIFF file, not a radiograph")
    if p.stat().st_size == 0:
        raise InputError(f"{p}: the file is empty (0 bytes)")
    suffix = p.suffix.lower()
    if is_dicom_file(p) or suffix in DICOM_SUFFIXES or suffix not in IMAGE_SUFFIXES:
        return _read_dicom(p)
    return _read_image(p)


# --- DICOM ------------------------------------------------------------------------------------


def _read_dicom(path: Path) -> Radiograph:
    import pydicom
    from pydicom.errors import InvalidDicomError

    warns: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=not is_dicom_file(path))
    except (InvalidDicomError, EOFError, ValueError, KeyError, TypeError, OSError) as e:
        raise InputError(f"{path}: not a readable DICOM file ({type(e).__name__}: {e}); the file may be corrupt or truncated") from e
    except Exception as e:  # pydicom raises many types on garbage
        raise InputError(f"{path}: not a readable DICOM file ({type(e).__name__}: {e})") from e
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        if "SOPClassUID" not in ds and "Modality" not in ds:
            raise InputError(f"{path}: not a DICOM file (no DICOM header found)")
        raise InputError(f"{path}: the DICOM file holds no image (no Pixel Data); e.g. a report or a structured document")

    _check_is_radiograph(path, ds)
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    _check_size(path, rows, cols)
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise InputError(
            f"{path}: photometric interpretation {photometric} is not a greyscale radiograph "
            "(expected MONOCHROME1 or MONOCHROME2)"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raw = ds.pixel_array
    except Exception as e:
        tsyntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        hint = f" or its transfer syntax ({tsyntax.name}) is not supported" if tsyntax is not None and tsyntax.is_compressed else ""
        raise InputError(f"{path}: the pixel data cannot be decoded: the file may be truncated or corrupt{hint} ({e})") from e
    if raw.ndim != 2:
        raise InputError(f"{path}: pixel data of shape {raw.shape} is not a single greyscale frame")
    if raw.shape != (rows, cols):
        raise InputError(f"{path}: pixel data shape {raw.shape} does not match Rows x Columns {rows}x{cols}")

    a = _modality_lut(ds, raw)
    _check_content(path, a)
    a = _voi(ds, a, path, warns)
    if photometric == "MONOCHROME1":
        a = np.subtract(1.0, a, out=a)
    spacing = _pixel_spacing(ds, path, warns)
    return Radiograph(
        image=np.ascontiguousarray(a, dtype=np.float32),
        pixel_spacing=spacing,
        dataset=ds,
        path=path,
        bits=int(ds.get("BitsStored", raw.dtype.itemsize * 8) or raw.dtype.itemsize * 8),
        photometric=photometric,
        warnings=warns,
    )


def _check_is_radiograph(path: Path, ds) -> None:
    from pydicom.uid import UID

    sop = str(ds.get("SOPClassUID", "") or "")
    modality = str(ds.get("Modality", "") or "").strip().upper()
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    sop_name = UID(sop).name if sop else "no SOP class"
    if frames > 1:
        raise InputError(f"{path}: a multi-frame image ({frames} frames, {sop_name}) is not a single radiograph")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise InputError(
            f"{path}: a colour DICOM image ({modality or '?'} / {sop_name}) is not a projection radiograph"
        )
    if sop in RADIOGRAPH_SOP_CLASSES:
        return
    if (not sop or sop.startswith(_SECONDARY_CAPTURE)) and modality in RADIOGRAPH_MODALITIES:
        return
    raise InputError(
        f"{path}: not a projection radiograph (Modality {modality or 'missing'}, {sop_name}); "
        "cxrdecomp reads CR and DX chest radiographs"
    )


def _modality_lut(ds, raw: np.ndarray) -> np.ndarray:
    """Stored values → output units of the modality LUT, float32 (no float64 copy)."""
    if "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        return np.asarray(apply_modality_lut(raw, ds), dtype=np.float32)
    a = raw.astype(np.float32)
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    if slope != 1.0:
        a *= np.float32(slope)
    if intercept != 0.0:
        a += np.float32(intercept)
    return a


def _first(v) -> float:
    try:
        return float(v[0]) if hasattr(v, "__len__") and not isinstance(v, str) else float(v)
    except (TypeError, ValueError, IndexError):
        return float("nan")


def _voi(ds, a: np.ndarray, path: Path, warns: list[str]) -> np.ndarray:
    """Apply VOI LUT / window (or log + percentiles) and return float32 in ``[0, 1]`` (in place where possible)."""
    if "VOILUTSequence" in ds and len(ds.VOILUTSequence):
        try:
            item = ds.VOILUTSequence[0]
            n, first = int(item.LUTDescriptor[0]) or 65536, int(item.LUTDescriptor[1])
            lut = np.asarray(item.LUTData, dtype=np.float32).ravel()[:n]
            lo, hi = float(lut.min()), float(lut.max())
            if hi > lo:  # PS3.3 C.11.2.1.1: values below/above the LUT range map to its first/last entry
                idx = np.clip(np.rint(a) - first, 0, lut.size - 1).astype(np.intp)
                out = (lut[idx] - np.float32(lo)) * np.float32(1.0 / (hi - lo))
                return out
        except Exception as e:  # a broken LUT: fall back to the window or percentiles
            _warn(warns, f"{path.name}: the VOI LUT could not be applied ({e}); using the window or percentiles instead")

    relationship = str(ds.get("PixelIntensityRelationship", "") or "").strip().upper()
    center, width = _first(ds.get("WindowCenter")), _first(ds.get("WindowWidth"))
    if np.isfinite(center) and np.isfinite(width) and width >= 1:
        fn = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
        if fn == "SIGMOID":
            out = np.exp(-4.0 * (a - np.float32(center)) / np.float32(width), dtype=np.float32)
            out += 1.0
            return np.reciprocal(out, out=out)
        if fn == "LINEAR_EXACT":
            c, w = center, width
        else:  # LINEAR (PS3.3 C.11.2.1.2.1)
            c, w = center - 0.5, max(width - 1.0, 1e-6)
        a -= np.float32(c - w / 2.0)
        a *= np.float32(1.0 / w)
        return np.clip(a, 0.0, 1.0, out=a)

    if relationship == "LIN":
        # for-processing data proportional to exposure: log makes it proportional to attenuation
        a -= a.min()
        a = np.log1p(a, out=a)
        _warn(warns, f"{path.name}: linear for-processing data log-transformed and percentile-normalised (no VOI window)")
    return percentile_normalize(a)


def _pixel_spacing(ds, path: Path, warns: list[str]) -> tuple[float, float] | None:
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        v = ds.get(key)
        if v is None:
            continue
        try:
            r, c = float(v[0]), float(v[1])
        except (TypeError, ValueError, IndexError):
            continue
        if r > 0 and c > 0 and np.isfinite(r) and np.isfinite(c):
            if key == "ImagerPixelSpacing":
                _warn(warns, f"{path.name}: pixel spacing taken from ImagerPixelSpacing (at the detector, not corrected for magnification)")
            return (r, c)
    _warn(warns, f"{path.name}: no valid pixel spacing in the DICOM header; outputs carry none")
    return None


# --- PNG / JPEG / TIFF -------------------------------------------------------------------------


def _effective_bits(maxval: float) -> int:
    return max(8, int(np.ceil(np.log2(float(maxval) + 1.0))))


def _read_image(path: Path) -> Radiograph:
    from PIL import Image, ImageOps, UnidentifiedImageError

    warns: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError as e:
        raise InputError(f"{path}: the image is over the limit of {MAX_PIXELS // 1_000_000} megapixels ({e})") from e
    except UnidentifiedImageError as e:
        if path.suffix.lower() in (".tif", ".tiff"):
            return _read_tiff_fallback(path, e)
        raise InputError(f"{path}: not a readable {path.suffix.lstrip('.').upper()} image; the file may be corrupt") from e
    except OSError as e:
        raise InputError(f"{path}: cannot open the image ({e})") from e
    with im:
        cols, rows = im.size
        _check_size(path, rows, cols)
        if getattr(im, "n_frames", 1) > 1:
            raise InputError(f"{path}: a multi-frame image ({im.n_frames} frames) is not a single radiograph")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im.load()
                if im.format == "JPEG":
                    im = ImageOps.exif_transpose(im)
        except Exception as e:
            raise InputError(f"{path}: the image data cannot be decoded ({e}); the file may be corrupt or truncated") from e
        mode = im.mode
        a, bits = _pil_to_gray(im, path, warns)
    return _finish_image(path, a, bits, mode, warns)


def _pil_to_gray(im, path: Path, warns: list[str]) -> tuple[np.ndarray, int | None]:
    """PIL image → ``(array, bits)``; ``bits`` None means "float: normalise by percentiles"."""
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return np.asarray(im).astype(np.float32), 16
    if mode == "I":
        a = np.asarray(im)
        if a.min() < 0:
            return a.astype(np.float32), None
        return a.astype(np.float32), 16 if a.max() <= 65535 else None
    if mode == "F":
        return np.asarray(im, dtype=np.float32), None
    if mode in ("L", "1"):
        return np.asarray(im.convert("L"), dtype=np.float32), 8
    if mode in ("LA", "La"):
        _warn(warns, f"{path.name}: alpha channel ignored")
        return np.asarray(im.getchannel(0), dtype=np.float32), 8
    # colour: RGB, RGBA, P, CMYK, YCbCr, LAB, HSV ...
    rgb = im.convert("RGB")
    arr = np.asarray(rgb)
    same = bool((arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all())
    _warn(
        warns,
        f"{path.name}: colour image ({mode}) converted to grey"
        + (" (its channels were equal)" if same else " with ITU-R 601 luma weights"),
    )
    return np.asarray(rgb.convert("L"), dtype=np.float32), 8


def _read_tiff_fallback(path: Path, err: Exception) -> Radiograph:
    try:
        import tifffile
    except ImportError:  # pragma: no cover
        raise InputError(f"{path}: not a readable TIFF image ({err})") from err
    warns: list[str] = []
    try:
        with tifffile.TiffFile(path) as tf:
            if len(tf.pages) > 1:
                raise InputError(f"{path}: a multi-page TIFF ({len(tf.pages)} pages) is not a single radiograph")
            page = tf.pages[0]
            shape = page.shape
            _check_size(path, int(shape[0]), int(shape[1]) if len(shape) > 1 else 0)
            a = page.asarray()
    except InputError:
        raise
    except Exception as e:
        raise InputError(f"{path}: not a readable TIFF image ({e}); the file may be corrupt or truncated") from e
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        _warn(warns, f"{path.name}: colour TIFF converted to grey with ITU-R 601 luma weights")
        a = a[..., :3].astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    if a.ndim != 2:
        raise InputError(f"{path}: TIFF of shape {a.shape} is not a single greyscale image")
    bits = {1: 8, 2: 16}.get(a.dtype.itemsize) if a.dtype.kind == "u" else None
    return _finish_image(path, a.astype(np.float32), bits, f"tiff-{a.dtype}", warns)


def _finish_image(path: Path, a: np.ndarray, bits: int | None, mode: str, warns: list[str]) -> Radiograph:
    _check_content(path, a)
    if bits is None:
        out = percentile_normalize(a)
        eff = 32
    elif bits == 8:
        out = a * np.float32(1.0 / 255.0)
        eff = 8
    else:
        eff = _effective_bits(a.max())
        out = a * np.float32(1.0 / (2**eff - 1))
    return Radiograph(
        image=np.ascontiguousarray(np.clip(out, 0.0, 1.0), dtype=np.float32),
        pixel_spacing=None,
        dataset=None,
        path=path,
        bits=eff,
        photometric=mode,
        warnings=warns,
    )
