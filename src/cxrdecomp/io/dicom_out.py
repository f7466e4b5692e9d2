"""Write derived images (bone, soft tissue, enhanced, ...) as DICOM: Secondary Capture (highdicom), or, for a CR/DX
source that gives its detector spacing (ImagerPixelSpacing), a derived Digital X-Ray image "for presentation" of the
same kind as commercial bone-suppression companions (:func:`write_dx_image`: ImageType ``DERIVED\\SECONDARY``,
ImagerPixelSpacing kept as it is, SourceImageSequence with purpose DCM 121322), since a Secondary Capture could only
state it as PixelSpacing, which would claim a calibration the source does not have.

Each derived image type becomes one instance in a NEW series of the SAME study as the source
radiograph: patient and study attributes are copied from the source (``highdicom.sc.SCImage.
from_ref_dataset``), Series and SOP Instance UIDs are new (derived deterministically from the source instance and
the derivation when both are known, so a resend replaces rather than duplicates), ``SeriesDescription`` names the image
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
        derivation: what made the derived images (method, checkpoint digest, options), e.g. a JSON string. With a
            source that has a SOP Instance UID, each derived series and instance UID is a hash of (source SOP Instance
            UID, derivation, image kind) (:func:`derived_uid`): decomposing the same instance the same way again gives
            the same UIDs, so a PACS replaces or ignores the resend instead of adding a duplicate series.
    """

    source: object | None = None
    name: str = "image"
    derivation: str | None = None
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

    def _as_dx(self) -> bool:
        """A CR/DX source with detector spacing (ImagerPixelSpacing): derived images are DX "for presentation", so that
        spacing keeps its meaning (a Secondary Capture has only PixelSpacing)."""
        ref = self.source
        return ref is not None and str(ref.get("Modality", "")) in ("CR", "DX") and _valid_spacing(ref.get("ImagerPixelSpacing"))

    def _uids(self, kind: str) -> tuple[str, str]:
        """``(SeriesInstanceUID, SOPInstanceUID)`` of a derived image: :func:`derived_uid` when deterministic, else new."""
        if not self._deterministic():
            return _new_uid(), _new_uid()
        sop = self._ref.SOPInstanceUID
        return derived_uid(sop, self.derivation, kind, "series"), derived_uid(sop, self.derivation, kind, "instance")

    def _write_dx(self, path, image, kind, method, label, offset, display_range) -> Path:
        ref = self.source
        series_uid, sop_uid = self._uids(kind)
        px_spacing, calib = None, None
        if _valid_spacing(ref.get("PixelSpacing")) and ref.get("PixelSpacingCalibrationType"):
            px_spacing = tuple(float(v) for v in ref.PixelSpacing)
            calib = (str(ref.PixelSpacingCalibrationType), str(ref.get("PixelSpacingCalibrationDescription", "")) or "as the source image")
        return write_dx_image(
            path, image, study=self,
            series_instance_uid=series_uid, sop_instance_uid=sop_uid,
            series_number=SERIES_NUMBER_BASE + offset, instance_number=1, series_description=f"{label} ({method}, cxrdecomp)",
            imager_pixel_spacing=tuple(float(v) for v in ref.ImagerPixelSpacing), image_type=("DERIVED", "SECONDARY"),  # DX: no value 3
            view_position=str(ref.get("ViewPosition", "")) or "PA", kvp=float(ref.KVP) if ref.get("KVP") else None,
            sdd_mm=float(ref.DistanceSourceToDetector) if ref.get("DistanceSourceToDetector") else None,
            source_to_patient_mm=float(ref.DistanceSourceToPatient) if ref.get("DistanceSourceToPatient") else None,
            pixel_spacing=px_spacing, pixel_spacing_calibration=calib, derivation=_derivation_description(label, method, display_range),
            model_name="cxrdecomp",
            source_image=ref, patient_orientation=_orientation(ref) or ("L", "F"),
        )

    def _deterministic(self) -> bool:
        return self.derivation is not None and self.source is not None and bool(self._ref.get("SOPInstanceUID"))

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
        if self._as_dx():
            return self._write_dx(path, image, kind, method, label, offset, display_range)
        pixels = to_uint16(image)
        ref = self._ref
        series_uid, sop_uid = self._uids(kind)
        orientation = _orientation(ref)
        common = dict(
            pixel_array=pixels,
            photometric_interpretation="MONOCHROME2",
            bits_allocated=16,
            coordinate_system="PATIENT",
            series_instance_uid=series_uid,
            series_number=SERIES_NUMBER_BASE + offset,
            sop_instance_uid=sop_uid,
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
        sc.DerivationDescription = _derivation_description(label, method, display_range)[:1024]
        sc.WindowCenter = 32767.5
        sc.WindowWidth = 65536
        sc.BurnedInAnnotation = "NO"
        if self.source is None:
            sc.BodyPartExamined = "CHEST"  # what cxrdecomp decomposes; an unpaired part needs no Laterality
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


def _valid_spacing(v) -> bool:
    try:
        return v is not None and len(v) == 2 and all(float(x) > 0 for x in v)
    except (TypeError, ValueError):
        return False


def _derivation_description(label: str, method: str, display_range: tuple[float, float] | None) -> str:
    """DerivationDescription: what the image is and how its pixel values map back to the display-domain values."""
    desc = f"{label} by cxrdecomp method {method}; pixel = 65535 * clip(value, 0, 1)"
    if display_range is not None:
        lo, hi = display_range
        desc += f"; value = (bone - {lo:.6g}) / ({hi:.6g} - {lo:.6g})"
    return desc


def _new_uid() -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid())


def derived_uid(source_sop_instance_uid: str, derivation: str, kind: str, level: str) -> str:
    """A UID that is a pure function of the source instance, the derivation, the image kind and the level
    (``"series"`` or ``"instance"``): ``2.25.<integer of a name-based UUID>`` (UUID version 5, SHA-1; the UUID-derived
    UID form of ISO/IEC 9834-8 and DICOM PS3.5 B.2)."""
    import uuid

    name = "\x1f".join(["cxrdecomp", str(source_sop_instance_uid), derivation, kind, level])
    return f"2.25.{uuid.uuid5(uuid.NAMESPACE_OID, name).int}"


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


DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
"""SOP Class UID of the Digital X-Ray Image Storage – For Presentation."""
DX_VIEW_CODES = {"PA": "399066004", "AP": "399348003"}
"""SNOMED CT codes of the views (CID 4010 "DX View"): postero-anterior, antero-posterior."""


def write_dx_image(
    path: str | os.PathLike,
    image,
    *,
    study: DerivedStudy,
    series_instance_uid: str,
    series_number: int,
    instance_number: int,
    series_description: str,
    imager_pixel_spacing: tuple[float, float],
    image_type: tuple[str, ...] = ("DERIVED", "SECONDARY"),
    view_position: str = "PA",
    kvp: float | None = None,
    sdd_mm: float | None = None,
    source_to_patient_mm: float | None = None,
    pixel_spacing: tuple[float, float] | None = None,
    magnification: float | None = None,
    photometric: str = "MONOCHROME2",
    derivation: str = "",
    comments: str = "",
    sop_instance_uid: str | None = None,
    model_name: str = "cxrdecomp drr",
    pixel_spacing_calibration: tuple[str, str] | None = ("GEOMETRY", "source-isocentre geometry of the simulation"),
    source_image: object | None = None,
    patient_orientation: tuple[str, str] = ("L", "F"),
) -> Path:
    """Write a display-domain image as a Digital X-Ray Image "for presentation" (DX IOD, PS3.3 A.26), atomically.

    Pixels are 16-bit unsigned, ``v = round(65535·clip(image, 0, 1))`` stored as is for ``MONOCHROME2`` (air dark)
    or inverted, ``65535 − v``, for ``MONOCHROME1`` (with PresentationLUTShape ``INVERSE``; both display the same).
    Patient and study come from ``study`` (its source radiograph, or its placeholder study). Orientation: columns
    toward the patient's left, rows toward the feet (``PatientOrientation L\\F``: radiological display).

    Args:
        path: output ``.dcm`` file.
        image: ``(H, W)`` display-domain image in ``[0, 1]`` (bone bright).
        study: the :class:`DerivedStudy` whose patient and study the instance joins.
        series_instance_uid, series_number, instance_number, series_description: series and instance.
        imager_pixel_spacing: ``(row, column)`` detector pitch in mm (ImagerPixelSpacing).
        image_type: ImageType values.
        view_position: ``"PA"`` or ``"AP"`` (ViewPosition and ViewCodeSequence).
        kvp: tube voltage (KVP), ``None`` to leave it out (e.g. a monochromatic simulation).
        sdd_mm, source_to_patient_mm: DistanceSourceToDetector and DistanceSourceToPatient (PS3.3: to the support or
            bucky side closest to the patient, along the central ray).
        pixel_spacing: ``(row, column)`` mm at the isocentre (PixelSpacing, calibration type GEOMETRY), optional.
        magnification: EstimatedRadiographicMagnificationFactor (sdd / source–isocentre distance), optional.
        photometric: ``"MONOCHROME2"`` or ``"MONOCHROME1"``.
        derivation: DerivationDescription; comments: ImageComments.
        sop_instance_uid: the SOP Instance UID (default: a new one).
        model_name: ManufacturerModelName.
        pixel_spacing_calibration: ``(PixelSpacingCalibrationType, description)`` written with ``pixel_spacing``
            (``None``: PixelSpacing without a calibration type).
        source_image: the dataset the image was derived from: a SourceImageSequence item pointing at it, purpose
            "Source image for image processing operation" (DCM 121322).
        patient_orientation: PatientOrientation (row, column directions).

    Returns:
        The path written.
    """
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"photometric must be MONOCHROME1 or MONOCHROME2, not {photometric!r}")
    px = to_uint16(image)
    if photometric == "MONOCHROME1":
        px = (np.uint16(65535) - px).astype(np.uint16)
    ref = study._ref
    now = datetime.datetime.now()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = DX_FOR_PRESENTATION
    ds.file_meta.MediaStorageSOPInstanceUID = sop_instance_uid or generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.ImageType = list(image_type)
    ds.SOPClassUID = DX_FOR_PRESENTATION
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyDate, ds.StudyTime = ref.StudyDate, ref.StudyTime
    ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = now.strftime("%Y%m%d")
    ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = now.strftime("%H%M%S")
    ds.AccessionNumber = ref.get("AccessionNumber", "")
    ds.Modality = "DX"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Manufacturer = MANUFACTURER
    ds.ReferringPhysicianName = ref.get("ReferringPhysicianName", "")
    ds.StudyDescription = ref.get("StudyDescription", "")
    ds.SeriesDescription = series_description[:64]
    ds.ManufacturerModelName = model_name
    ds.DerivationDescription = derivation[:1024]
    ds.PatientName = ref.PatientName
    ds.PatientID = ref.PatientID
    ds.PatientBirthDate = ref.get("PatientBirthDate", "")
    ds.PatientSex = ref.get("PatientSex", "")
    ds.BodyPartExamined = "CHEST"
    if kvp is not None:
        ds.KVP = f"{float(kvp):.6g}"
    ds.SoftwareVersions = _version()
    if sdd_mm is not None:
        ds.DistanceSourceToDetector = f"{float(sdd_mm):.6g}"
    if source_to_patient_mm is not None:
        ds.DistanceSourceToPatient = f"{float(source_to_patient_mm):.6g}"
    ds.ImagerPixelSpacing = [f"{float(v):.6g}" for v in imager_pixel_spacing]
    if magnification is not None:
        ds.EstimatedRadiographicMagnificationFactor = f"{float(magnification):.6g}"
    ds.DetectorType = ""
    ds.PositionerType = ""
    ds.ViewPosition = view_position
    if view_position in DX_VIEW_CODES:
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = DX_VIEW_CODES[view_position], "SCT", {
            "PA": "postero-anterior", "AP": "antero-posterior"}[view_position]
        code.ViewModifierCodeSequence = Sequence([])
        ds.ViewCodeSequence = Sequence([code])
    ds.StudyInstanceUID = ref.StudyInstanceUID
    ds.SeriesInstanceUID = series_instance_uid
    ds.StudyID = ref.get("StudyID", "")
    ds.SeriesNumber = int(series_number)
    ds.InstanceNumber = int(instance_number)
    ds.PatientOrientation = list(patient_orientation)
    ds.ImageLaterality = "U"
    region = Dataset()
    region.CodeValue, region.CodingSchemeDesignator, region.CodeMeaning = "51185008", "SCT", "Chest"
    ds.AnatomicRegionSequence = Sequence([region])
    ds.AcquisitionContextSequence = Sequence([])
    if comments:
        ds.ImageComments = comments[:10240]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.Rows, ds.Columns = (int(n) for n in px.shape)
    if pixel_spacing is not None:
        ds.PixelSpacing = [f"{float(v):.6g}" for v in pixel_spacing]
        if pixel_spacing_calibration is not None:
            ds.PixelSpacingCalibrationType, ds.PixelSpacingCalibrationDescription = pixel_spacing_calibration
    if source_image is not None and "SOPInstanceUID" in source_image and "SOPClassUID" in source_image:
        item = Dataset()
        item.ReferencedSOPClassUID = source_image.SOPClassUID
        item.ReferencedSOPInstanceUID = source_image.SOPInstanceUID
        purpose = Dataset()
        purpose.CodeValue, purpose.CodingSchemeDesignator, purpose.CodeMeaning = "121322", "DCM", "Source image for image processing operation"
        item.PurposeOfReferenceCodeSequence = Sequence([purpose])
        ds.SourceImageSequence = Sequence([item])
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.BurnedInAnnotation = "NO"
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = -1 if photometric == "MONOCHROME2" else 1  # high stored value = less X-ray
    ds.WindowCenter, ds.WindowWidth = "32768", "65536"
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY" if photometric == "MONOCHROME2" else "INVERSE"
    ds.PixelData = np.ascontiguousarray(px, dtype="<u2").tobytes()
    path = Path(path)
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path


__all__ = ["DX_FOR_PRESENTATION", "DX_VIEW_CODES", "KINDS", "DerivedStudy", "write_derived_dicom", "write_dx_image"]
