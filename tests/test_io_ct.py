"""CT reader: NIfTI, DICOM series, NRRD/MHA, RAS orientation and error paths."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from cxrdecomp.errors import InputError
from cxrdecomp.io.ct import read_ct


def _write_series(folder, n=6, spacing=2.0, skip=(), modality="CT", series_uid=None, marker=True):
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study = generate_uid()
    rows, cols = 8, 10
    for k in range(n):
        if k in skip:
            continue
        px = np.full((rows, cols), 1024, dtype=np.int16)  # 1024 stored → 0 HU (water) with intercept −1024
        px[:, :2] = 0  # air column on the patient's right (LPS x low)
        if marker and k == n - 1:
            px[1, cols - 2] = 2024  # 1000 HU: patient left, anterior, superior
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = modality
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = series_uid
        ds.PatientID = "X"
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, k * spacing]
        ds.PixelSpacing = [0.5, 0.75]
        ds.SliceThickness = spacing
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.PixelData = px.tobytes()
        ds.save_as(folder / f"s{series_uid[-6:]}_{k:03d}.dcm", enforce_file_format=True)
    return series_uid


def test_dicom_series_ras_and_hu(tmp_path):
    _write_series(tmp_path / "ct")
    v = read_ct(tmp_path / "ct")
    assert v.shape == (10, 8, 6)  # (X columns, Y rows, Z slices)
    assert v.spacing == pytest.approx((0.75, 0.5, 2.0))
    # RAS+: X grows to the patient's right, Y anterior, Z superior. The marker sits at the patient's
    # left (LPS column 8 → X = 10-1-8), anterior (rows ran posterior → Y = 8-1-1), superior (Z high)
    assert np.unravel_index(np.argmax(v.hu), v.shape) == (1, 8 - 1 - 1, 5)
    assert v.hu.max() == pytest.approx(1000.0)
    assert v.hu[-1].max() == pytest.approx(-1024.0)  # patient-right air columns at X high
    assert np.median(v.hu) == pytest.approx(0.0)


def test_dicom_missing_slice_resampled_with_warning(tmp_path, capfd):
    """One Python warning, and none of ITK's C++ warnings ("Non uniform sampling ...") on the process's stderr."""
    _write_series(tmp_path / "ct", n=7, skip=(3,))
    capfd.readouterr()
    with pytest.warns(UserWarning, match="uneven slice spacing"):
        v = read_ct(tmp_path / "ct")
    assert v.shape[2] == 7 and v.spacing[2] == pytest.approx(2.0)
    assert np.isfinite(v.hu).all()
    assert "WARNING" not in capfd.readouterr().err


def test_dicom_two_series_names_both(tmp_path):
    a = _write_series(tmp_path / "ct")
    b = _write_series(tmp_path / "ct")
    with pytest.raises(InputError) as e:
        read_ct(tmp_path / "ct")
    assert a in str(e.value) and b in str(e.value)


def test_dicom_not_ct(tmp_path):
    _write_series(tmp_path / "mr", modality="MR")
    with pytest.raises(InputError, match="not 'CT'"):
        read_ct(tmp_path / "mr")


def test_empty_folder(tmp_path):
    (tmp_path / "e").mkdir()
    with pytest.raises(InputError, match="no DICOM series"):
        read_ct(tmp_path / "e")


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_nrrd_mha_round_trip(tmp_path, suffix):
    import SimpleITK as sitk

    a = np.full((5, 6, 7), 0, dtype=np.int16)  # sitk array order (z, y, x)
    a[..., 0] = -1000
    a[4, 1, 6] = 900
    img = sitk.GetImageFromArray(a)
    img.SetSpacing((0.8, 0.9, 2.5))
    p = tmp_path / f"v{suffix}"
    sitk.WriteImage(img, str(p))
    v = read_ct(p)
    assert v.shape == (7, 6, 5)
    assert v.spacing == pytest.approx((0.8, 0.9, 2.5))
    # identity direction = LPS: x → left, y → posterior; RAS+ flips both
    assert np.unravel_index(np.argmax(v.hu), v.shape) == (7 - 1 - 6, 6 - 1 - 1, 4)


def _nifti(tmp_path, data, name="v.nii.gz"):
    import nibabel as nib

    p = tmp_path / name
    nib.save(nib.Nifti1Image(data, np.eye(4)), str(p))
    return p


def test_nifti_bad_inputs(tmp_path):
    good = np.zeros((4, 4, 4), np.float32)
    good[0] = -1000
    bad = good.copy()
    bad[1, 1, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        read_ct(_nifti(tmp_path, bad, "nan.nii.gz"))
    with pytest.raises(InputError, match="3-D"):
        read_ct(_nifti(tmp_path, np.zeros((16, 16), np.float32) - 1000, "flat.nii.gz"))
    with pytest.raises(InputError, match="Hounsfield"):
        read_ct(_nifti(tmp_path, np.full((4, 4, 4), 100, np.float32), "mr.nii.gz"))
    with pytest.raises(InputError):
        read_ct(_nifti(tmp_path, np.zeros((0, 4, 4), np.float32), "empty.nii.gz"))
    with pytest.raises(InputError, match="does not exist"):
        read_ct(tmp_path / "nope.nii.gz")
    (tmp_path / "junk.nii.gz").write_bytes(b"not a nifti")
    with pytest.raises(InputError):
        read_ct(tmp_path / "junk.nii.gz")
    (tmp_path / "x.xyz").write_bytes(b"")
    with pytest.raises(InputError, match="unknown CT format"):
        read_ct(tmp_path / "x.xyz")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        v = read_ct(_nifti(tmp_path, good, "good.nii.gz"))
    assert v.shape == (4, 4, 4)
