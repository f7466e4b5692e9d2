"""Writing DRR views to files (``cxrdecomp drr``): 16-bit PNG, float TIFF, NIfTI stacks and DICOM DX.

File formats (:data:`FORMATS`): ``png16`` (16-bit greyscale PNG of the display-domain outputs, ``round(65535·clip(x,
0, 1))``), ``tiff`` (float32 TIFF of every output, unclipped; resolution = detector pitch), ``nifti`` (one
``(W, H, N)`` float32 stack of the N views per output; voxel size = detector pitch × 1), ``dicom`` (a Digital X-Ray
Image "for presentation" per view and display output, :func:`cxrdecomp.io.dicom_out.write_dx_image`). Everything is
written to a staging folder next to OUT and renamed into OUT when complete, ``drr.json`` last: a failed or
interrupted run leaves OUT as it was. The views come from :func:`cxrdecomp.simulate.drr.render_drr`.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from cxrdecomp.errors import ConfigError, InputError

FORMATS = ("png16", "tiff", "nifti", "dicom")
PHOTOMETRIC = ("MONOCHROME2", "MONOCHROME1")
OUTPUT_DOMAINS: dict[str, str] = {
    "image": "display",
    "soft_tissue": "display",
    "bone": "display",
    "lung": "display",
    "log": "attenuation",
    "lung_mask": "mask",
    "bone_mask": "mask",
    "field": "mask",
    "t_bone": "g/cm2",
    "t_tissue": "g/cm2",
}
"""Outputs a view can carry and their domain: display ``[0, 1]`` (bone may be slightly negative), attenuation
``−ln I ≥ 0``, masks ``{0, 1}``, mass thickness in g/cm²."""
PNG_DOMAINS = ("display", "mask")
DICOM_OUTPUTS = ("image", "soft_tissue", "bone", "lung")
PARAMS_FILE = "drr.json"
_SERIES = {"image": 1, "soft_tissue": 2, "bone": 3, "lung": 4}  # DICOM series number offsets


def check_formats(formats: Iterable[str], photometric: str = "MONOCHROME2") -> tuple[tuple[str, ...], str]:
    """Validated ``(formats, photometric)``.

    Raises:
        ConfigError: an unknown format or photometric interpretation.
    """
    fm = (formats,) if isinstance(formats, str) else tuple(formats)
    unknown = [f for f in fm if f not in FORMATS]
    if unknown or not fm:
        raise ConfigError(f"unknown format(s) {', '.join(map(repr, unknown)) or '(none given)'}; choose from {', '.join(FORMATS)}")
    ph = str(photometric).upper()
    if ph not in PHOTOMETRIC:
        raise ConfigError(f"photometric must be MONOCHROME2 (air dark) or MONOCHROME1 (inverted stored values), not {photometric!r}")
    return tuple(dict.fromkeys(fm)), ph


def check_out_dir(out_dir: str | os.PathLike) -> Path:
    """The absolute output folder, refused if it cannot be made or written (call before rendering anything).

    Raises:
        InputError: OUT or one of its ancestors is a file, or the nearest existing folder is not writable.
    """
    out = Path(out_dir).absolute()
    if out.exists() and not out.is_dir():
        raise InputError(f"output folder {out_dir} is an existing file; give a folder")
    p = out
    while not p.exists():
        p = p.parent
    if not p.is_dir():
        raise InputError(f"cannot create output folder {out_dir}: {p} is a file")
    if not os.access(p, os.W_OK | os.X_OK):
        raise InputError(f"cannot write to output folder {out_dir}: {p} is not writable")
    return out


# --------------------------------------------------------------------------------------------- writing
def _write_tiff(path: Path, a: np.ndarray, pitch: tuple[float, float]) -> None:
    from PIL import Image

    from cxrdecomp.io.atomic import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(np.ascontiguousarray(a, dtype=np.float32)).save(
            tmp, format="TIFF", resolution_unit=3, x_resolution=10.0 / pitch[1], y_resolution=10.0 / pitch[0])


def _write_nifti(path: Path, stack: list[np.ndarray], pitch: tuple[float, float]) -> None:
    """``(W, H, N)`` float32: i = column (toward the patient's left), j = row (toward the feet), k = view."""
    import nibabel as nib

    from cxrdecomp.io.atomic import atomic_path

    data = np.stack([a.T for a in stack], axis=-1).astype(np.float32)
    w, h, _ = data.shape
    aff = np.zeros((4, 4))
    aff[0, 0], aff[2, 1], aff[1, 2], aff[3, 3] = -pitch[1], -pitch[0], 1.0, 1.0  # RAS: columns −X, rows −Z, views +Y
    aff[0, 3], aff[2, 3] = (w - 1) / 2 * pitch[1], (h - 1) / 2 * pitch[0]
    img = nib.Nifti1Image(data, aff)
    img.header.set_xyzt_units("mm")
    with atomic_path(path) as tmp:
        nib.save(img, str(tmp) + ".nii.gz")
        os.replace(str(tmp) + ".nii.gz", tmp)


def write_drr(views: Iterable[dict[str, Any]], out_dir: str | os.PathLike, formats: Iterable[str] = ("png16",),
              photometric: str = "MONOCHROME2", ct=None) -> list[Path]:
    """Write views of :func:`render_drr` (a list, or any iterable such as a :class:`DRRRenderer`) into ``out_dir``.

    One view: ``OUT/<output>.<ext>``; several: ``OUT/<output>_<k:03d>.<ext>`` (NIfTI: one ``OUT/<output>.nii.gz``
    stack of all views). ``png16`` and ``dicom`` take the display-domain outputs (clipped to ``[0, 1]``; masks too
    for PNG), ``tiff`` and ``nifti`` every output, unclipped. ``OUT/drr.json`` records every parameter, the geometry
    and the files. Files are written to a staging folder beside OUT and renamed into OUT (each rename atomic,
    ``drr.json`` last) once all are complete; files that an earlier ``drr.json`` in OUT listed and this run does not
    write are removed. An error or interrupt leaves OUT as it was.

    Args:
        views: the view dicts.
        out_dir: output folder (created).
        formats: any of :data:`FORMATS`.
        photometric: DICOM ``MONOCHROME2`` (stored values as displayed, air dark) or ``MONOCHROME1`` (stored values
            inverted, ``65535 − v``, PresentationLUTShape INVERSE: displays the same).
        ct: the CTVolume, whose file name seeds the DICOM placeholder PatientID (default: the views' CT source).

    Returns:
        The paths written, ``drr.json`` last.

    Raises:
        ConfigError: unknown format or photometric. InputError: unwritable ``out_dir``; no views; a write failing.
    """
    formats, photometric = check_formats(formats, photometric)
    out = check_out_dir(out_dir)
    views_iter = iter(views)
    ahead = [v for _, v in zip(range(2), views_iter)]  # one view or several decides the file names
    if not ahead:
        raise InputError("no views to write")
    several = len(views) > 1 if hasattr(views, "__len__") else len(ahead) > 1  # type: ignore[arg-type]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        base = out.parent if os.access(out.parent, os.W_OK) else out
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=base))
    except OSError as e:
        raise InputError(f"cannot write to output folder {out_dir}: {e}") from None
    try:
        names = _write_views(stage, itertools.chain(ahead, views_iter), several, formats, photometric, ct)
        old: list[str] = []
        if (out / PARAMS_FILE).is_file():
            try:
                old = [str(f) for f in json.loads((out / PARAMS_FILE).read_text()).get("files", [])]
            except (OSError, ValueError, AttributeError):
                old = []
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for nm in names:  # drr.json is the last name
            os.replace(stage / nm, out / nm)
            written.append(out / nm)
        for nm in set(old) - set(names):
            f = out / nm
            if Path(nm).name == nm and f.is_file():
                f.unlink()
        return written
    except OSError as e:
        raise InputError(f"cannot write to output folder {out_dir}: {e}") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _write_views(stage: Path, views: Iterable[dict[str, Any]], several: bool, formats: tuple[str, ...], photometric: str,
                 ct) -> list[str]:
    """Write every file of ``views`` into ``stage``; returns their names, ``drr.json`` last."""
    from cxrdecomp import __version__
    from cxrdecomp.io.atomic import atomic_path
    from cxrdecomp.io.images import write_png16

    def name(output: str, k: int, ext: str) -> str:
        return f"{output}_{k:03d}{ext}" if several else f"{output}{ext}"

    names: list[str] = []
    records: list[dict] = []
    stacks: dict[str, list[np.ndarray]] = {}
    study, series = None, {}
    first: dict[str, Any] = {}
    for k, v in enumerate(views):
        p = v["params"]
        first = first or p
        pitch = tuple(p["detector"]["pixel_spacing_mm"])
        files: dict[str, list[str]] = {}
        for o in (o for o in v if o != "params"):
            dom = OUTPUT_DOMAINS.get(o, "display")
            a = np.asarray(v[o], dtype=np.float32)
            mine: list[str] = []
            if "png16" in formats and dom in PNG_DOMAINS:
                mine.append(name(o, k, ".png"))
                write_png16(stage / mine[-1], a)
            if "tiff" in formats:
                mine.append(name(o, k, ".tif"))
                _write_tiff(stage / mine[-1], a, pitch)  # type: ignore[arg-type]
            if "dicom" in formats and o in DICOM_OUTPUTS:
                if study is None:
                    from cxrdecomp.io.dicom_out import DerivedStudy

                    src = Path(str((getattr(ct, "source", "") if ct is not None else "") or p["ct"]["source"] or "ct")).name
                    study = DerivedStudy(None, name=src)
                if o not in series:
                    from pydicom.uid import generate_uid

                    series[o] = generate_uid()
                mine.append(name(o, k, ".dcm"))
                _write_dicom(stage / mine[-1], a, o, k, p, study, series[o], photometric)
            if "nifti" in formats:
                stacks.setdefault(o, []).append(a)
            files[o] = mine
            names.extend(mine)
        records.append({"index": p["index"], "azimuth": p["azimuth"], "detector": p["detector"], "sample": p["sample"],
                        "files": files})
    for o, st in stacks.items():
        names.append(f"{o}.nii.gz")
        _write_nifti(stage / names[-1], st, tuple(first["detector"]["pixel_spacing_mm"]))  # type: ignore[arg-type]
    doc = {
        "software": f"cxrdecomp {__version__}",
        "command": "drr",
        "ct": first["ct"],
        "settings": first["settings"],
        "spectrum": first["spectrum"],
        "formats": list(formats),
        "photometric": photometric,
        "outputs": {o: OUTPUT_DOMAINS.get(o, "display") for o in first["settings"]["outputs"]},
        "notes": [
            ("image, soft_tissue, bone, lung: display domain [0, 1] (bone bright; bone = image - soft_tissue); "
             "png16 and dicom store round(65535*clip(x, 0, 1)); tiff and nifti store float32, unclipped"),
            "log: attenuation domain -ln I (tiff and nifti only); t_bone, t_tissue: g/cm2",
            "radiological orientation for PA and AP: the patient's right on the image's left, head at the top",
            "pixel spacing of tiff, nifti and DICOM ImagerPixelSpacing: detector pitch; DICOM PixelSpacing: at the isocentre",
        ],
        "views": records,
        "files": names + [PARAMS_FILE],
    }
    with atomic_path(stage / PARAMS_FILE) as tmp:
        tmp.write_text(json.dumps(doc, indent=1))
    return names + [PARAMS_FILE]


def _write_dicom(path: Path, a: np.ndarray, output: str, k: int, p: dict, study, series_uid: str, photometric: str) -> None:
    from cxrdecomp.io.dicom_out import SERIES_NUMBER_BASE, write_dx_image

    det, st = p["detector"], p["settings"]
    offset = _SERIES[output]
    sample = p["sample"]
    beam = f"{st['energy_kev']:g} keV monochromatic" if st["energy_kev"] > 0 else (
        "user spectrum" if st.get("spectrum") else f"{st['kvp']:g} kVp, {st['filtration_mm_al']:g} mm Al")
    label = {"image": "DRR", "soft_tissue": "DRR soft tissue (bone removed)", "bone": "DRR bone (image - soft tissue)",
             "lung": "DRR lung only"}[output]
    write_dx_image(
        path, a, study=study, series_instance_uid=series_uid, series_number=SERIES_NUMBER_BASE + 50 + offset,
        instance_number=k + 1, series_description=f"{label} ({p['view']}, cxrdecomp)",
        image_type=("DERIVED", "SECONDARY"), view_position=p["view"],
        kvp=st["kvp"] if st["energy_kev"] <= 0 and not st.get("spectrum") else None,
        sdd_mm=det["sdd_mm"], source_to_patient_mm=det["source_to_support_mm"],
        imager_pixel_spacing=tuple(det["pixel_spacing_mm"]),
        pixel_spacing=(det["pixel_spacing_isocentre_mm"],) * 2, magnification=det["magnification"],
        photometric=photometric,
        derivation=(f"Digitally reconstructed radiograph (cxrdecomp drr) of CT {Path(str(p['ct']['source'])).name or 'volume'}: "
                    f"{beam}, azimuth {sample['geometry']['azimuth']:g} deg, tilt {sample['geometry']['tilt']:g} deg, "
                    f"roll {sample['geometry']['roll']:g} deg, processing {st['processing']}; pixel = 65535 * clip(value, 0, 1)"),
        comments=f"view {k + 1}; simulated image, research use only, not for diagnosis",
    )


__all__ = ["FORMATS", "OUTPUT_DOMAINS", "PHOTOMETRIC", "check_formats", "check_out_dir", "write_drr"]
