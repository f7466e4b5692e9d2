"""Write derived images (bone, soft tissue, enhanced, ...) as DICOM Secondary Capture (highdicom).

Each derived image type becomes one instance in a NEW series of the SAME study as the source
radiograph: patient and study attributes are copied from the source (``highdicom.sc.SCImage.
from_ref_dataset``), Series and SOP Instance UIDs are new, ``SeriesDescription`` names the image
type and the method (e.g. ``"Bone image (bone_unet, cxrdecomp)"``), ``ImageType`` is
``DERIVED\\SECONDARY\\<TYPE>``, pixels are 16-bit ``MONOCHROME2`` (display domain ``[0, 1]`` scaled to
``0..65535``), ``PixelSpacing`` is kept, and a ``SourceImageSequence`` points at the source instance.

For a non-DICOM input a new study is created with placeholder patient data (``PatientName``
``ANONYMOUS^CXRDECOMP``, ``PatientID`` ``CXRDECOMP-<hash of the file name>``), shared by all derived
images of that input.

Files are written atomically.
"""

from __future__ import annotations

import datetime
import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from cxrdecomp.io.atomic import atomic_path
from cxrdecomp.io.images import to_uint16

#: image type key → (human label for SeriesDescription, ImageType value 3, series number offset)
KINDS: dict[str, tuple[str, str, int]] = {
    "bone": ("Bone image", "BONE", 1),
    "soft_tissue": ("Soft-tissue image (bone suppressed)", "SOFT_TISSUE", 2),
    "enhanced": ("Bone-enhanced image", "ENHANCED", 3),
    "lung": ("Lung structures image", "LUNG", 4),
    "lung_mask": ("Lung mask", "LUNG_MASK", 5),
}
SERIES_NUMBER_BASE = 900

# highdicom warns about single-component person names (e.g. ReferringPhysicianName "ward") that we
# copy unchanged from the source; a targeted global filter (catch_warnings is not thread-safe and
# the files are written from worker threads)
warnings.filterwarnings("ignore", message=r".*unlikely to represent the intended person name.*", category=UserWarning)
MANUFACTURER = "cxrdecomp"


def _label(kind: str) -> tuple[str, str, int]:
    if kind in KINDS:
        return KINDS[kind]
    code = "".join(ch if ch.isalnum() else "_" for ch in kind.upper())[:16]
    return (kind.replace("_", " ").capitalize() + " image", code, 9)


@dataclass
class DerivedStudy:
    """Study context shared by the derived series of one input radiograph.

    Args:
        source: the pydicom Dataset of a DICOM input, or ``None`` (a new study is made).
        name: file name of the input (seeds the placeholder PatientID of a non-DICOM input).
    """

    source: object | None = None
    name: str = "image"
    _ref: object = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._ref = self.source if self.source is not None else self._placeholder()

    def _placeholder(self):
        import highdicom as hd
        from pydicom.dataset import Dataset

        now = datetime.datetime.now()
        ds = Dataset()
        ds.PatientName = "ANONYMOUS^CXRDECOMP"
        ds.PatientID = "CXRDECOMP-" + hashlib.sha1(self.name.encode()).hexdigest()[:8].upper()
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
        ds.StudyInstanceUID = str(hd.UID())
        ds.StudyID = "CXRDECOMP"
        ds.StudyDate = now.strftime("%Y%m%d")
        ds.StudyTime = now.strftime("%H%M%S")
        ds.AccessionNumber = ""
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "cxrdecomp derived images"
        return ds

    @property
    def study_instance_uid(self) -> str:
        return str(self._ref.StudyInstanceUID)

    def write(
        self,
        path: str | os.PathLike,
        image,
        kind: str,
        method: str,
        pixel_spacing: tuple[float, float] | None = None,
        display_range: tuple[float, float] | None = None,
    ) -> Path:
        """Write one derived image as a Secondary Capture instance in a new series (atomic).

        Args:
            path: output ``.dcm`` file.
            image: ``(H, W)`` display-domain image in ``[0, 1]`` (clipped), already mapped for display.
            kind: ``"bone"``, ``"soft_tissue"``, ``"enhanced"``, ``"lung"``, ``"lung_mask"`` or another name.
            method: the method name written into ``SeriesDescription``.
            pixel_spacing: ``(row, col)`` mm, or ``None``.
            display_range: ``(low, high)`` of a display mapping (bone image), recorded in
                ``DerivationDescription`` so that values can be recovered.

        Returns:
            The path written.
        """
        import highdicom as hd
        from pydicom.dataset import Dataset
        from pydicom.uid import ExplicitVRLittleEndian

        label, code, offset = _label(kind)
        pixels = to_uint16(image)
        ref = self._ref
        orientation = _orientation(ref)
        common = dict(
            pixel_array=pixels,
            photometric_interpretation="MONOCHROME2",
            bits_allocated=16,
            coordinate_system="PATIENT",
            series_instance_uid=str(hd.UID()),
            series_number=SERIES_NUMBER_BASE + offset,
            sop_instance_uid=str(hd.UID()),
            instance_number=1,
            manufacturer=MANUFACTURER,
            pixel_spacing=tuple(float(v) for v in pixel_spacing) if pixel_spacing else None,
            patient_orientation=orientation or ("L", "F"),
            transfer_syntax_uid=ExplicitVRLittleEndian,
            series_description=f"{label} ({method}, cxrdecomp)"[:64],
            software_versions=_version(),
        )
        sc = self._make(hd, ref, common)
        if self.source is None:
            sc.StudyDescription = ref.StudyDescription
        if orientation is None:
            sc.PatientOrientation = None  # unknown: type 2, left empty rather than guessed
        sc.ImageType = ["DERIVED", "SECONDARY", code]
        desc = f"{label} by cxrdecomp method {method}; pixel = 65535 * clip(value, 0, 1)"
        if display_range is not None:
            lo, hi = display_range
            desc += f"; value = (bone - {lo:.6g}) / ({hi:.6g} - {lo:.6g})"
        sc.DerivationDescription = desc[:1024]
        sc.WindowCenter = 32767.5
        sc.WindowWidth = 65536
        sc.BurnedInAnnotation = "NO"
        if self.source is not None:
            for key in ("BodyPartExamined", "ViewPosition", "Laterality", "StudyDescription"):
                if key in ref and key not in sc:
                    setattr(sc, key, ref.get(key))
            if "SOPInstanceUID" in ref and "SOPClassUID" in ref:
                item = Dataset()
                item.ReferencedSOPClassUID = ref.SOPClassUID
                item.ReferencedSOPInstanceUID = ref.SOPInstanceUID
                sc.SourceImageSequence = [item]
        path = Path(path)
        with atomic_path(path) as tmp:
            sc.save_as(tmp, enforce_file_format=True)
        return path

    def _make(self, hd, ref, common):
        if self.source is not None:
            return hd.sc.SCImage.from_ref_dataset(ref, **common)
        return hd.sc.SCImage(
            study_instance_uid=ref.StudyInstanceUID,
            patient_id=ref.PatientID,
            patient_name=ref.PatientName,
            patient_birth_date=None,
            patient_sex=None,
            accession_number=None,
            study_id=ref.StudyID,
            study_date=ref.StudyDate,
            study_time=ref.StudyTime,
            referring_physician_name=None,
            **common,
        )


def _orientation(ds) -> tuple[str, str] | None:
    po = ds.get("PatientOrientation") if ds is not None else None
    try:
        if po is not None and len(po) == 2 and all(str(v) for v in po):
            import highdicom as hd

            vals = (str(po[0]), str(po[1]))
            for v in vals:
                for ch in v:
                    hd.PatientOrientationValuesBiped(ch)
            if all(len(v) == 1 for v in vals):
                return vals
    except (ValueError, TypeError):
        pass
    return None


def _version() -> str:
    from cxrdecomp import __version__

    return f"cxrdecomp {__version__}"


def write_derived_dicom(path, image, kind: str, method: str, source=None, name: str = "image", **kwargs) -> Path:
    """One-shot :meth:`DerivedStudy.write` (a new study per call when ``source`` is ``None``)."""
    return DerivedStudy(source, name).write(path, image, kind, method, **kwargs)


__all__ = ["DerivedStudy", "KINDS", "write_derived_dicom"]
