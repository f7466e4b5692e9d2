"""Inference outputs: CLI end to end, decomposition identity, DICOM round trip, failures write nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cxrdecomp import checkpoint
from cxrdecomp.batch import decompose_files
from cxrdecomp.decomposer import Decomposer
from cxrdecomp.io import examples
from cxrdecomp.io.radiograph import read_radiograph
from cxrdecomp.methods.bone_unet.network import build as build_bone_unet

pydicom = pytest.importorskip("pydicom")
pytestmark = [
    pytest.mark.filterwarnings("ignore::cxrdecomp.io.radiograph.RadiographWarning"),
    pytest.mark.filterwarnings("ignore:.*unlikely to represent the intended person name"),  # source's own names
]

OUTPUTS = ("bone", "soft_tissue", "enhanced")


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ckpt") / "tiny"
    cfg = {"method": "bone_unet", "model": {"base": 4, "depth": 2}, "input_size": 64}
    return checkpoint.save(folder, build_bone_unet(base=4, depth=2), cfg, "tiny random test model")


@pytest.fixture(scope="module")
def tiny(tiny_ckpt) -> Decomposer:
    return Decomposer.from_pretrained(tiny_ckpt, device="cpu")


def cached_example(name: str) -> Path:
    p = examples.cache_dir() / name
    if not p.is_file():
        pytest.skip(f"example {name} not cached; run `cxrdecomp data fetch` first")
    return p


def test_cli_decompose_end_to_end(tiny_ckpt, tmp_path):
    from typer.testing import CliRunner

    from cxrdecomp.cli import app

    src = cached_example("RG1_UNCI.dcm")
    corrupt = tmp_path / "corrupt.dcm"
    corrupt.write_bytes(b"\0" * 128 + b"DICM" + os.urandom(2000))
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["decompose", str(src), str(corrupt), "-o", str(out), "-c", str(tiny_ckpt), "-q", "--w", "1.5"])
    assert res.exit_code == 2, res.output
    errors = [line for line in res.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and str(corrupt) in errors[0]

    case = out / "RG1_UNCI"
    assert not (out / "corrupt").exists()
    assert sorted(p.name for p in out.iterdir()) == ["RG1_UNCI", "index.html"]  # no temp leftovers
    src_ds = pydicom.dcmread(src, stop_before_pixels=True)
    series = set()
    for kind in OUTPUTS:
        png = Image.open(case / f"{kind}.png")
        assert png.size == (1841, 1955) and png.mode.startswith("I;16")
        ds = pydicom.dcmread(case / f"{kind}.dcm")
        assert ds.StudyInstanceUID == src_ds.StudyInstanceUID
        assert ds.PatientID == src_ds.PatientID and str(ds.PatientName) == str(src_ds.PatientName)
        assert ds.SeriesInstanceUID != src_ds.SeriesInstanceUID and ds.SOPInstanceUID != src_ds.SOPInstanceUID
        assert list(ds.ImageType)[:2] == ["DERIVED", "SECONDARY"]
        assert ds.PhotometricInterpretation == "MONOCHROME2" and ds.BitsAllocated == 16
        assert "bone_unet" in ds.SeriesDescription
        assert ds.pixel_array.shape == (1955, 1841)
        assert ds.SourceImageSequence[0].ReferencedSOPInstanceUID == src_ds.SOPInstanceUID
        series.add(ds.SeriesInstanceUID)
        # the PNG and the DICOM hold the same pixels
        np.testing.assert_array_equal(np.asarray(png), ds.pixel_array)
    assert len(series) == 3
    assert "Bone" in pydicom.dcmread(case / "bone.dcm", stop_before_pixels=True).SeriesDescription
    assert Image.open(case / "preview.png").size[0] > 4 * 400
    meta = json.loads((case / "decomposition.json").read_text())
    assert meta["options"]["w"] == 1.5 and meta["method"] == "bone_unet"
    html = (out / "index.html").read_text()
    assert 'src="RG1_UNCI/preview.png"' in html and "corrupt.dcm" in html

    # the written soft-tissue and enhanced images obey the weighted sums of the bone image
    img = read_radiograph(src).image
    lo, hi = meta["display_range"]["bone"]
    bone = lo + np.asarray(Image.open(case / "bone.png"), np.float64) / 65535 * (hi - lo)
    soft = np.asarray(Image.open(case / "soft_tissue.png"), np.float64) / 65535
    inside = (bone > lo + 1e-3) & (bone < hi - 1e-3) & (img - bone > 1e-3) & (img - bone < 1 - 1e-3)
    assert inside.mean() > 0.2
    assert np.abs(soft + bone - img)[inside].max() < 2e-3 * (1 + hi - lo)


def test_full_resolution_detail_kept_only_when_the_change_is_upsampled(tiny):
    """DESIGN.md "Full resolution": with ``upsample="change"`` the model's bone image (model size, 64²) is upsampled
    and subtracted, so detail finer than the model size survives in the soft-tissue image; with ``"soft"`` the
    upsampled model-size soft-tissue image has lost it (it ends up in the bone image instead)."""
    n = 256
    yy, xx = np.mgrid[0:n, 0:n] / n
    smooth = 0.3 + 0.4 * np.exp(-((xx - 0.5) ** 2 + (yy - 0.5) ** 2) / 0.1)
    checker = 0.05 * ((np.indices((n, n)).sum(0) % 2) * 2 - 1)  # 1-pixel checkerboard: invisible at 64²
    img = (smooth + checker).astype(np.float32)

    def detail(a):  # correlation with the checkerboard = its amplitude in the image
        return float((np.asarray(a) * checker).sum() / (checker**2).sum())

    change, soft = tiny(img, upsample="change"), tiny(img, upsample="soft")
    assert detail(change.soft_tissue) == pytest.approx(1.0, abs=0.02)
    assert abs(detail(change.bone)) < 0.02
    assert abs(detail(soft.soft_tissue)) < 0.02
    assert detail(soft.bone) == pytest.approx(1.0, abs=0.02)
    # both modes: outputs at the input's size, weights applied around the input
    d = tiny(img, w=2.0, w_s=0.5)
    assert d.bone.shape == d.soft_tissue.shape == d.enhanced.shape == img.shape
    assert float((d.enhanced - d.soft_tissue - 2.5 * d.bone).abs().max()) < 1e-5

def test_j2kr_decomposes_like_unci(tiny):
    a = read_radiograph(cached_example("RG1_UNCI.dcm")).image
    b = read_radiograph(cached_example("RG1_J2KR.dcm")).image
    da, db = tiny([a, b])
    assert (da.soft_tissue - db.soft_tissue).abs().mean() < 0.003
    assert (da.bone - db.bone).abs().mean() < 0.003


def test_png_input_gets_new_study_and_failures_write_nothing(tiny, tmp_path):
    good = tmp_path / "in" / "chest.png"
    good.parent.mkdir()
    yy, xx = np.mgrid[0:80, 0:72]
    Image.fromarray(((xx + yy) * 1.5).astype(np.uint8)).save(good)
    (tmp_path / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (tmp_path / "in" / "blank.png").write_bytes(b"")
    ct = tmp_path / "in" / "sub" / "ct.dcm"
    ct.parent.mkdir()
    from pydicom.data import get_testdata_file

    ct.write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    logs: list[str] = []
    out = tmp_path / "out"
    (tmp_path / "emptydir").mkdir()
    res = decompose_files([tmp_path / "in", tmp_path / "missing.dcm", tmp_path / "emptydir"], out, tiny, progress=False, log=logs.append)
    assert [r.ok for r in res] == [False, False, True, False, False, False]  # folder sorted, then the others
    assert sorted(p.name for p in out.iterdir()) == ["chest", "index.html"]
    assert len([s for s in logs if not s.startswith("warning")]) == 5 and "no DICOM" in logs[-1]
    ds = pydicom.dcmread(out / "chest" / "soft_tissue.dcm")
    ds2 = pydicom.dcmread(out / "chest" / "bone.dcm")
    assert ds.PatientID.startswith("CXRDECOMP-") and ds.StudyInstanceUID == ds2.StudyInstanceUID
    assert ds.SeriesInstanceUID != ds2.SeriesInstanceUID and ds.pixel_array.shape == (80, 72)

    # re-running replaces the case atomically and the index lists it once
    decompose_files([good], out, tiny, progress=False, write_dicom=False)
    assert not (out / "chest" / "bone.dcm").exists() and (out / "chest" / "bone.png").exists()
    assert (out / "index.html").read_text().count("<h2>chest</h2>") == 1


def test_console_script_exit_code(tmp_path):
    """Through the real entry point: a CxrdecompError is one stderr line and exit code 2."""
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    p = subprocess.run(
        [sys.executable, "-m", "cxrdecomp.cli", "decompose", str(bad), "-o", str(tmp_path / "o"), "-c", str(tmp_path / "nockpt")],
        capture_output=True, text=True, env=env,
    )
    assert p.returncode == 2
    assert len(p.stderr.strip().splitlines()) == 1 and p.stderr.startswith("cxrdecomp: error: no checkpoint")
    assert not (tmp_path / "o").exists()


def test_demo_command_and_path_input(tiny_ckpt, tmp_path, monkeypatch):
    """``cxrdecomp demo`` decomposes RG1_UNCI.dcm with the default bone model (here: the tiny one)."""
    from typer.testing import CliRunner

    from cxrdecomp.cli import app
    from cxrdecomp import methods as registry

    src = cached_example("RG1_UNCI.dcm")
    monkeypatch.setattr(registry, "default_checkpoint", lambda: str(tiny_ckpt))
    res = CliRunner().invoke(app, ["demo", "-o", str(tmp_path / "demo")])
    assert res.exit_code == 0, res.output
    index = Path(res.stdout.strip().splitlines()[-1])
    assert index == (tmp_path / "demo" / "index.html").resolve() and index.is_file()
    assert (tmp_path / "demo" / "RG1_UNCI" / "soft_tissue.dcm").is_file()
    # Python API on a file path: the full DICOM matrix, MONOCHROME1 inverted (air dark in the display domain)
    dec = Decomposer.from_pretrained(tiny_ckpt, device="cpu")
    ds = pydicom.dcmread(src)
    out = dec(src)
    assert out.bone.shape == (ds.Rows, ds.Columns) and ds.PhotometricInterpretation == "MONOCHROME1"
    img = out.soft_tissue + out.bone
    assert float(img[: ds.Rows // 10].mean()) < float(img[ds.Rows // 3 : ds.Rows // 2, ds.Columns // 2 - 50 : ds.Columns // 2 + 50].mean())


def test_derived_uids_repeat_for_the_same_derivation_only(tiny_ckpt, tmp_path):
    """A resend of the same instance decomposed the same way gets the same Series/SOP Instance UIDs (a PACS then
    replaces instead of adding a duplicate series); other options, weights or another source get new ones."""
    from cxrdecomp.batch import derivation, write_case

    src = cached_example("RG1_UNCI.dcm")
    rg = read_radiograph(src)
    dec = Decomposer.from_pretrained(tiny_ckpt, device="cpu")
    d = dec(rg.image)

    def uids(name, options, checkpoint=str(tiny_ckpt)):
        folder = write_case(tmp_path / name, rg, d, dec.method, options, checkpoint=checkpoint)
        return {k: (pydicom.dcmread(folder / f"{k}.dcm", stop_before_pixels=True).SeriesInstanceUID,
                    pydicom.dcmread(folder / f"{k}.dcm", stop_before_pixels=True).SOPInstanceUID) for k in ("bone", "soft_tissue")}

    a, b, c = uids("a", {"w": 1.0}), uids("b", {"w": 1.0}), uids("c", {"w": 2.0})
    assert a == b and a != c
    assert a["bone"][0] != a["soft_tissue"][0] and a["bone"][1] != a["bone"][0]  # series and instances all distinct
    assert all(u.startswith("2.25.") and len(u) <= 64 for pair in a.values() for u in pair)
    other = tmp_path / "other_ckpt"
    import shutil

    shutil.copytree(tiny_ckpt, other)
    from safetensors.torch import load_file, save_file

    w = load_file(str(other / "model.safetensors"))
    k0 = next(iter(w))
    w[k0] = w[k0] + 1
    save_file(w, str(other / "model.safetensors"))
    assert derivation("bone_unet", str(other), {"w": 1.0}) != derivation("bone_unet", str(tiny_ckpt), {"w": 1.0})
    assert uids("d", {"w": 1.0}, checkpoint=str(other)) != a


def test_unwritable_output_is_one_line_and_exit_2(tiny_ckpt, tmp_path, monkeypatch, capsys):
    import sys

    from cxrdecomp import cli

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    monkeypatch.setattr(sys, "argv", ["cxrdecomp", "decompose", str(cached_example("RG1_UNCI.dcm")), "-o", str(blocker / "out"),
                                      "-c", str(tiny_ckpt), "-q"])
    with pytest.raises(SystemExit) as e:
        cli.main()
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line]
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("cxrdecomp: error: cannot use") and "a_file" in err[0]


def _dciodvfy_errors(path) -> list[str]:
    import shutil
    import subprocess

    tool = shutil.which("dciodvfy")
    if tool is None:
        pytest.skip("dciodvfy (dicom3tools) is not installed; .ci/run installs it")
    r = subprocess.run([tool, str(path)], capture_output=True, text=True)
    return [line for line in (r.stdout + r.stderr).splitlines() if line.startswith("Error")]


def test_every_derived_dicom_kind_passes_dciodvfy_and_keeps_detector_spacing(tiny_ckpt, tmp_path):
    """Issue 15 item 6: a CR that gives only ImagerPixelSpacing gets derived DX images that keep it as
    ImagerPixelSpacing (no PixelSpacing claiming a calibration); other inputs get Secondary Capture. dciodvfy reports
    no error for any of them."""
    import io

    from serve_helpers import synthetic_cr

    cr = pydicom.dcmread(io.BytesIO(synthetic_cr((96, 80))))
    del cr.PixelSpacing
    cr.ImagerPixelSpacing = [0.15, 0.15]
    cr.ViewPosition = "PA"
    src = tmp_path / "cr.dcm"
    cr.save_as(src, enforce_file_format=True)
    png = tmp_path / "chest.png"
    Image.fromarray((np.indices((80, 72)).sum(0) * 1.5).astype(np.uint8)).save(png)
    dec = Decomposer.from_pretrained(tiny_ckpt, device="cpu")
    res = decompose_files([src, cached_example("RG1_UNCI.dcm"), png], tmp_path / "out", dec, progress=False)
    assert all(r.ok for r in res)
    for case, sop in (("cr", "1.2.840.10008.5.1.4.1.1.1.1"), ("RG1_UNCI", "1.2.840.10008.5.1.4.1.1.7"), ("chest", "1.2.840.10008.5.1.4.1.1.7")):
        for kind in OUTPUTS:
            f = tmp_path / "out" / case / f"{kind}.dcm"
            ds = pydicom.dcmread(f, stop_before_pixels=True)
            assert ds.SOPClassUID == sop, (case, kind)
            assert _dciodvfy_errors(f) == [], (case, kind)
    dx = pydicom.dcmread(tmp_path / "out" / "cr" / "bone.dcm")
    assert [float(v) for v in dx.ImagerPixelSpacing] == [0.15, 0.15] and "PixelSpacing" not in dx
    assert list(dx.ImageType)[:2] == ["DERIVED", "SECONDARY"] and dx.StudyInstanceUID == cr.StudyInstanceUID
    ref = dx.SourceImageSequence[0]
    assert ref.ReferencedSOPInstanceUID == cr.SOPInstanceUID and ref.PurposeOfReferenceCodeSequence[0].CodeValue == "121322"
    np.testing.assert_array_equal(dx.pixel_array, np.asarray(Image.open(tmp_path / "out" / "cr" / "bone.png")))


def _archive(folder, n=4):
    folder.mkdir()
    for i in range(n):
        yy, xx = np.mgrid[0:80, 0:72]
        Image.fromarray(((xx + yy * (1 + i)) % 256).astype(np.uint8)).save(folder / f"case{i}.png")
    return folder


def test_archive_shards_resume_and_workers_give_the_unsharded_result(tiny, tiny_ckpt, tmp_path):
    """Shards 0/2 and 1/2 into one folder equal one unsharded run (bit for bit), reading with 2 worker processes
    changes nothing, and a rerun skips every finished case unless the options differ."""
    src = _archive(tmp_path / "in")
    ref = decompose_files([src], tmp_path / "ref", tiny, progress=False, write_dicom=False)
    parts = [decompose_files([src], tmp_path / "sh", tiny, progress=False, write_dicom=False, shard=(k, 2), num_workers=2 if k else 0)
             for k in range(2)]
    assert sorted(r.name for p in parts for r in p) == sorted(r.name for r in ref) and not {r.name for r in parts[0]} & {r.name for r in parts[1]}
    for r in ref:
        for kind in ("bone", "soft_tissue", "enhanced"):
            assert (tmp_path / "sh" / r.name / f"{kind}.png").read_bytes() == (r.folder / f"{kind}.png").read_bytes()
    again = decompose_files([src], tmp_path / "ref", tiny, progress=False, write_dicom=False)
    assert all(r.skipped and r.ok for r in again)
    other = decompose_files([src], tmp_path / "ref", Decomposer.from_pretrained(tiny_ckpt, device="cpu", w=2.0), progress=False,
                            write_dicom=False)
    assert not any(r.skipped for r in other)
    with pytest.raises(Exception, match="shard"):
        decompose_files([src], tmp_path / "x", tiny, progress=False, shard=(2, 2))


def test_a_write_failing_half_way_leaves_no_half_result_and_the_rerun_finishes(tiny, tiny_ckpt, tmp_path, monkeypatch):
    """Redoing an archive with new options, the third PNG write of case1 fails (disk full): case1 keeps its earlier
    complete result, nothing half-written or temporary remains, and the rerun redoes only case1."""
    from cxrdecomp.io import images

    src = _archive(tmp_path / "in", 3)
    out = tmp_path / "out"
    decompose_files([src], out, tiny, progress=False, write_dicom=False)
    before = {p.name: p.read_bytes() for p in (out / "case1").iterdir()}
    real, calls = images.write_png16, []

    def flaky(path, px):
        calls.append(path)
        if "case1" in str(path) and sum("case1" in str(c) for c in calls) == 3:
            raise OSError(28, "No space left on device", str(path))
        return real(path, px)

    monkeypatch.setattr(images, "write_png16", flaky)
    new = Decomposer.from_pretrained(tiny_ckpt, device="cpu", w=1.5)
    res = decompose_files([src], out, new, progress=False, write_dicom=False, batch_size=1)
    assert [r.ok for r in res] == [True, False, True] and "No space left" in res[1].error
    assert sorted(p.name for p in out.iterdir()) == ["case0", "case1", "case2", "index.html"]  # no temporary folder left
    assert {p.name: p.read_bytes() for p in (out / "case1").iterdir()} == before  # the old result, whole
    monkeypatch.setattr(images, "write_png16", real)
    rerun = decompose_files([src], out, new, progress=False, write_dicom=False)
    assert [r.skipped for r in rerun] == [True, False, True] and all(r.ok for r in rerun)
    assert json.loads((out / "case1" / "decomposition.json").read_text())["options"]["w"] == 1.5
