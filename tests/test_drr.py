"""``cxrdecomp drr`` and :mod:`cxrdecomp.simulate.drr`: Beer–Lambert on analytic phantoms, spectra, PA/AP orientation,
material selection, file formats (PNG-16, TIFF, NIfTI, DICOM DX) and the one-line errors that leave OUT absent."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from cxrdecomp.errors import ConfigError
from cxrdecomp.io.ct import CTVolume
from cxrdecomp.physics.materials import hu_to_density, mass_attenuation
from cxrdecomp.io.drr_out import write_drr
from cxrdecomp.simulate.drr import DRRParams, DRRRenderer, parse_sweep, render_drr

AIR = -1024.0  # density 0 g/cm³ (DeepDRR's conversion clamps it): only the phantom attenuates


def _ct(hu: np.ndarray, spacing: float, name: str) -> CTVolume:
    return CTVolume(hu=hu.astype(np.float32), spacing=(spacing,) * 3, affine=np.diag([spacing] * 3 + [1.0]), source=name)


def _grid(n: int, spacing: float):
    c = (np.arange(n) - (n - 1) / 2) * spacing
    return np.meshgrid(c, c, c, indexing="ij")


def slab(thickness_mm: float, n: int = 32, spacing: float = 2.0) -> CTVolume:
    """Water-equivalent (0 HU) slab ``|y| < T/2`` filling X and Z, in density-free air: faces on voxel faces."""
    _, Y, _ = _grid(n, spacing)
    return _ct(np.where(np.abs(Y) < thickness_mm / 2, 0.0, AIR), spacing, f"slab{thickness_mm:g}")


def asymmetric(n: int = 48, spacing: float = 2.0) -> CTVolume:
    """Water box with a bone rod (1000 HU, along Z) at the patient's right-posterior, (x, y) = (+20, −15) mm, and a
    bone block at the patient's left-anterior-superior, (−20, +15, +24) mm (RAS: +x = patient right)."""
    X, Y, Z = _grid(n, spacing)
    hu = np.where((np.abs(X) < 40) & (np.abs(Y) < 30), 0.0, AIR)
    hu[(X - 20) ** 2 + (Y + 15) ** 2 <= 4.0**2] = 1000.0
    hu[(np.abs(X + 20) < 5) & (np.abs(Y - 15) < 5) & (np.abs(Z - 24) < 5)] = 1000.0
    return _ct(hu, spacing, "asymmetric")


MONO = {"energy_kev": 60.0, "outputs": ("log", "t_bone", "image")}


def _centre(a: np.ndarray) -> float:
    h, w = a.shape
    return float(a[h // 2 - 1 : h // 2 + 1, w // 2 - 1 : w // 2 + 1].mean())


# ------------------------------------------------------------------------------------------- physics
def test_monochromatic_beer_lambert_on_the_central_ray():
    """−ln I = µ/ρ(E)·ρ·L through a 20 mm slab of 0 HU (soft tissue, ρ = 1.03 g/cm³), to 0.1 %."""
    v = render_drr(slab(20.0), size=32, **MONO)[0]
    expect = mass_attenuation("soft_tissue", 60.0)[0] * float(hu_to_density(np.float32(0.0))) * 2.0
    assert _centre(v["log"]) == pytest.approx(expect, rel=1e-3)
    # inside the field's border every ray crosses the same slab, longer by 1/cos(cone angle) only (< 0.01 %)
    np.testing.assert_allclose(v["log"][4:-4, 4:-4], expect, rtol=1e-3)


def test_single_line_spectrum_equals_monochromatic_and_two_lines_are_analytic():
    ct = slab(20.0)
    mono = render_drr(ct, size=32, **MONO)[0]["log"]
    line = render_drr(ct, size=32, spectrum=((50.0, 60.0, 70.0), (0.0, 1.0, 0.0)), outputs=("log",))[0]["log"]
    np.testing.assert_allclose(line, mono, rtol=1e-6)
    two = render_drr(ct, size=32, spectrum=((40.0, 80.0), (0.4, 0.6)), outputs=("log",))[0]["log"]
    rho_l = float(hu_to_density(np.float32(0.0))) * 2.0
    mu40, mu80 = mass_attenuation("soft_tissue", [40.0, 80.0])
    assert _centre(two) == pytest.approx(-np.log(0.4 * np.exp(-mu40 * rho_l) + 0.6 * np.exp(-mu80 * rho_l)), rel=1e-3)


def test_tube_spectrum_hardens_the_beam():
    """Polyenergetic (SpekPy 120 kVp): twice the slab attenuates less than twice (beam hardening), and the effective
    µ lies between µ at the highest and at the lowest energy of the spectrum."""
    thin, thick = (render_drr(slab(t), size=32, outputs=("log",))[0]["log"] for t in (20.0, 40.0))
    r = DRRRenderer(slab(20.0), DRRParams(size=32, outputs=("log",)))
    e = r.spectrum_dict()["energies_kev"]
    assert max(e) <= 120.5 and min(e) >= 5
    assert _centre(thick) < 0.99 * 2 * _centre(thin)  # measured: 1.97× (a single energy gives exactly 2×)
    mu = mass_attenuation("soft_tissue", [min(e), max(e)]) * 1.03 * 2.0
    assert mu[1] < _centre(thin) < mu[0]


def test_pa_and_ap_share_the_radiological_orientation_and_differ_by_magnification():
    """Patient right on the image left, head at the top, in both views; the posterior rod is magnified by
    sdd/(sod − 15 mm) in PA (source behind) and by sdd/(sod + 15 mm) in AP (source in front)."""
    ct = asymmetric()
    res = {}
    for view in ("PA", "AP"):
        v = render_drr(ct, size=64, view=view, sdd_mm=400.0, **MONO)[0]
        det = v["params"]["detector"]
        t = v["t_bone"]
        w = t.shape[1]
        rows = slice(40, 60)  # below the block: the rod only
        prof = t[rows].mean(0)
        left = prof.copy()
        left[w // 2 :] = 0
        col = float((left * np.arange(w)).sum() / left.sum())
        res[view] = (col - (w - 1) / 2) * det["pixel_spacing_mm"][1], det
        predicted = -20.0 * det["sdd_mm"] / (det["sod_mm"] + (-15.0 if view == "PA" else 15.0))
        assert res[view][0] == pytest.approx(predicted, abs=0.15 * det["pixel_spacing_mm"][1]), view
        # the block: patient's left (image right), superior (image top)
        h = t.shape[0]
        assert t[: h // 2, w // 2 :].max() > 0.3 * t.max() and t[h // 2 :, w // 2 :].max() < 1e-3, view
    (u_pa, det), (u_ap, _) = res["PA"], res["AP"]
    assert u_pa < 0 and u_ap < 0
    assert u_pa / u_ap == pytest.approx((det["sod_mm"] + 15.0) / (det["sod_mm"] - 15.0), rel=0.01)
    assert abs(u_pa) > abs(u_ap) * 1.05


def test_materials_bone_renders_only_the_bone():
    ct = asymmetric()
    full = render_drr(ct, size=48, sdd_mm=600.0, **MONO)[0]
    bone = render_drr(ct, size=48, sdd_mm=600.0, materials=("bone",), **MONO)[0]
    mu_bone = mass_attenuation("bone", 60.0)[0]
    off = bone["t_bone"] == 0
    assert off.sum() > 100 and np.abs(bone["log"][off]).max() < 1e-6  # no soft tissue, no air
    on = bone["t_bone"] > 0.05
    np.testing.assert_allclose(bone["log"][on], mu_bone * bone["t_bone"][on], rtol=1e-4)
    assert (full["log"][on] > bone["log"][on] + 0.1).all()  # the water box is there in the full DRR


def test_sweep_noise_and_settings():
    assert parse_sweep("-10:10:3") == (-10.0, 0.0, 10.0) and parse_sweep("5:5:1") == (5.0,)
    ct = slab(20.0)
    views = render_drr(ct, size=32, sweep=(-10.0, 0.0, 10.0), energy_kev=60.0, photons=1e4, seed=3, outputs=("log",))
    assert [v["params"]["azimuth"] for v in views] == [-10.0, 0.0, 10.0]
    again = render_drr(ct, size=32, azimuth=0.0, energy_kev=60.0, photons=1e4, seed=4, outputs=("log",))[0]
    np.testing.assert_array_equal(views[1]["log"], again["log"])  # view k uses seed + k: reproducible
    assert not np.array_equal(views[0]["log"], views[2]["log"])
    noise_free = render_drr(ct, size=32, energy_kev=60.0, outputs=("log",))[0]["log"]
    assert 0.003 < float(np.std(views[1]["log"] - noise_free)) < 0.03  # ≈ 1/sqrt(N·I)
    for bad in ({"materials": ("bone", "unobtainium")}, {"view": "LL"}, {"kvp": 20.0}, {"outputs": ("nope",)}, {"size": 8},
                {"method": "magic"}, {"spectrum": ((50.0,), (1.0, 2.0))}, {"processing": "fancy"}):
        with pytest.raises(ConfigError):
            DRRParams(**bad)


# ------------------------------------------------------------------------------------------- files
def test_png16_tiff_nifti_round_trip(tmp_path):
    import nibabel as nib
    from PIL import Image

    views = render_drr(asymmetric(), size=40, sdd_mm=600.0, sweep=(0.0, 5.0), processing="presentation")
    paths = write_drr(views, tmp_path / "o", formats=("png16", "tiff", "nifti"))
    names = sorted(p.name for p in paths)
    assert "image_000.png" in names and "log_001.tif" in names and "log_000.png" not in names and paths[-1].name == "drr.json"
    for k, v in enumerate(views):
        png = np.asarray(Image.open(tmp_path / "o" / f"image_{k:03d}.png")).astype(np.float64) / 65535.0
        assert np.abs(png - np.clip(v["image"], 0, 1)).max() <= 0.5 / 65535 + 1e-7
        tif = np.asarray(Image.open(tmp_path / "o" / f"log_{k:03d}.tif"))
        assert tif.dtype == np.float32 and np.array_equal(tif, v["log"])
    img = nib.load(str(tmp_path / "o" / "image.nii.gz"))
    pitch = views[0]["params"]["detector"]["pixel_spacing_mm"]
    assert img.shape == (40, 40, 2) and np.allclose(img.header.get_zooms(), (pitch[1], pitch[0], 1.0))
    np.testing.assert_array_equal(np.asarray(img.dataobj)[:, :, 1], views[1]["image"].T)
    doc = json.loads((tmp_path / "o" / "drr.json").read_text())
    assert doc["settings"]["sweep"] == [0.0, 5.0] and doc["settings"]["processing"] == "presentation"
    assert len(doc["views"]) == 2 and doc["views"][1]["sample"]["geometry"]["azimuth"] == 5.0
    assert sorted(doc["files"]) == names
    assert not list(tmp_path.glob(".o.partial-*"))  # the staging folder is gone
    # a later one-view run in the same folder replaces the sweep's files
    write_drr(views[:1], tmp_path / "o", formats=("png16",))
    left = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert left == ["bone.png", "drr.json", "image.png", "soft_tissue.png"], left


@pytest.mark.parametrize("photometric", ["MONOCHROME2", "MONOCHROME1"])
def test_dicom_dx_for_presentation(tmp_path, photometric):
    import pydicom

    from cxrdecomp.io.images import to_uint16

    view = "AP" if photometric == "MONOCHROME1" else "PA"
    v = render_drr(asymmetric(), size=40, sdd_mm=1000.0, view=view, kvp=90.0, outputs=("image", "bone"))
    paths = write_drr(v, tmp_path / "d", formats=("dicom",), photometric=photometric)
    det = v[0]["params"]["detector"]
    ds = pydicom.dcmread(tmp_path / "d" / "image.dcm")
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.1.1" and ds.Modality == "DX"
    assert ds.PresentationIntentType == "FOR PRESENTATION" and ds.PhotometricInterpretation == photometric
    assert ds.BitsAllocated == 16 and ds.BitsStored == 16 and ds.PixelRepresentation == 0
    assert [float(x) for x in ds.ImagerPixelSpacing] == pytest.approx(det["pixel_spacing_mm"], rel=1e-5)
    assert float(ds.DistanceSourceToDetector) == pytest.approx(1000.0)
    assert float(ds.DistanceSourceToPatient) == pytest.approx(1000.0 - 20.0)  # the support the patient touches
    assert float(ds.KVP) == 90.0 and ds.ViewPosition == view and list(ds.PatientOrientation) == ["L", "F"]
    assert ds.PresentationLUTShape == ("INVERSE" if photometric == "MONOCHROME1" else "IDENTITY")
    stored = to_uint16(v[0]["image"])
    expect = 65535 - stored if photometric == "MONOCHROME1" else stored
    np.testing.assert_array_equal(ds.pixel_array, expect)
    bone = pydicom.dcmread(tmp_path / "d" / "bone.dcm")
    assert bone.StudyInstanceUID == ds.StudyInstanceUID and bone.SeriesInstanceUID != ds.SeriesInstanceUID
    assert {p.name for p in paths} == {"image.dcm", "bone.dcm", "drr.json"}
    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed: attributes checked, IOD not validated")
    for name in ("image.dcm", "bone.dcm"):
        r = subprocess.run([tool, str(tmp_path / "d" / name)], capture_output=True, text=True, check=False)
        errors = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("Error")]
        assert not errors, errors


# ------------------------------------------------------------------------------------------- command line
def _nifti(path, data, spacing=2.0):
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.asarray(data, np.float32), np.diag([spacing] * 3 + [1.0])), str(path))
    return path


def _cli(monkeypatch, capsys, *args) -> tuple[int, str, str]:
    from cxrdecomp.cli import main

    monkeypatch.setattr(sys, "argv", ["cxrdecomp", "drr", *map(str, args)])
    try:
        main()
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_renders_a_nifti_ct(tmp_path, monkeypatch, capsys):
    ct = _nifti(tmp_path / "ct.nii.gz", asymmetric(32, 3.0).hu, 3.0)
    out = tmp_path / "out"
    code, stdout, err = _cli(monkeypatch, capsys, ct, "-o", out, "--size", 32, "--sweep", "-10:10:3", "--energy", 60,
                             "--format", "png16,tiff", "--sdd", 1000, "-q")
    assert code == 0, err
    assert "3 view(s)" in stdout and err == ""
    doc = json.loads((out / "drr.json").read_text())
    assert doc["settings"]["energy_kev"] == 60.0 and doc["settings"]["sweep"] == [-10.0, 0.0, 10.0]
    assert (out / "image_002.png").is_file() and (out / "log_000.tif").is_file()
    from PIL import Image

    api = render_drr(str(ct), size=32, sweep=(-10.0, 0.0, 10.0), energy_kev=60.0, sdd_mm=1000.0, outputs=("log",))
    np.testing.assert_array_equal(np.asarray(Image.open(out / "log_001.tif")), api[1]["log"])
    # a spectrum file of one line equals --energy; --materials bone keeps the bone only
    spec = tmp_path / "spectrum.txt"
    spec.write_text("# energy_keV, weight\nenergy,weight\n50, 0\n60, 1\n70, 0\n")
    code, _, err = _cli(monkeypatch, capsys, ct, "-o", tmp_path / "s", "--size", 32, "--sweep", "-10:10:3", "--spectrum", spec,
                        "--format", "tiff", "--sdd", 1000, "--materials", "bone", "--outputs", "log,t_bone", "-q")
    assert code == 0, err
    log = np.asarray(Image.open(tmp_path / "s" / "log_001.tif"))
    t_bone = np.asarray(Image.open(tmp_path / "s" / "t_bone_001.tif"))
    np.testing.assert_allclose(log, mass_attenuation("bone", 60.0)[0] * t_bone, rtol=1e-4, atol=1e-6)


def test_api_refuses_unusable_ct():
    from cxrdecomp.errors import InputError

    good = asymmetric(16, 4.0)
    for hu, match in ((np.where(np.isfinite(good.hu), np.nan, 0), "NaN"), (good.hu[:, :, 0], "3-D"), (good.hu[:, :, :1], "2 voxels")):
        with pytest.raises(InputError, match=match):
            render_drr(_ct(hu, 4.0, "bad"), size=16)
    with pytest.raises(ConfigError, match="source lies inside"):
        DRRRenderer(good, DRRParams(size=16, sdd_mm=75.0))  # source 29 mm from the centre of a 64 mm CT
    with pytest.raises(ConfigError, match="shearwarp"):
        DRRRenderer(good, DRRParams(size=16, method="shearwarp", sweep=(0.0, 90.0)))


def _two_series(folder):
    from test_io_ct import _write_series

    _write_series(folder)
    _write_series(folder)
    return folder


@pytest.mark.parametrize("case", ["nan", "2d", "one_slice", "two_series", "format", "material", "unwritable", "sdd", "example_and_ct",
                                  "sweep_and_azimuth", "view"])
def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, case):
    good = np.full((8, 8, 8), -1000.0)
    good[2:6, 2:6] = 0.0
    ct = _nifti(tmp_path / "ct.nii.gz", good)
    out = tmp_path / "out"
    extra: list = []
    match = {"nan": "NaN", "2d": "3-D", "one_slice": "3-D", "two_series": "2 DICOM series", "format": "unknown format",
             "material": "unknown material", "unwritable": "is a file", "sdd": "source lies inside", "example_and_ct": "not both",
             "sweep_and_azimuth": "not both", "view": "PA or AP"}[case]
    if case == "nan":
        bad = good.copy()
        bad[1, 1, 1] = np.nan
        ct = _nifti(tmp_path / "nan.nii.gz", bad)
    elif case == "2d":
        ct = _nifti(tmp_path / "flat.nii.gz", good[:, :, 0])
    elif case == "one_slice":
        ct = _nifti(tmp_path / "one.nii.gz", good[:, :, :1])
    elif case == "two_series":
        ct = _two_series(tmp_path / "dicom")
    elif case == "format":
        extra = ["--format", "png16,jpeg2000"]
    elif case == "material":
        extra = ["--materials", "bone,cartilage"]
    elif case == "unwritable":
        (tmp_path / "afile").write_text("x")
        out = tmp_path / "afile" / "out"
    elif case == "sdd":
        extra = ["--sdd", 30]
    elif case == "example_and_ct":
        extra = ["--example"]
    elif case == "sweep_and_azimuth":
        extra = ["--sweep", "-5:5:3", "--azimuth", "3"]
    elif case == "view":
        extra = ["--view", "LAT"]
    code, stdout, err = _cli(monkeypatch, capsys, ct, "-o", out, "--size", 16, "-q", *extra)
    assert code == 2, (stdout, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cxrdecomp: error: ") and match in lines[0], err
    assert not out.exists() and not list(tmp_path.glob(".out.partial-*"))
