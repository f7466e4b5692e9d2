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
from cxrdecomp.methods.bone_unet.network import build_bone_unet

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


def test_decomposition_identity(tiny, tmp_path):
    """soft + w_s·bone == input and enhanced − w·bone == input, in both upsampling modes, any size."""
    rng = np.random.default_rng(1)
    images = [rng.random((100, 90), dtype=np.float32), rng.random((64, 64), dtype=np.float32)]
    for mode in ("change", "soft"):
        outs = tiny(images, w=2.0, w_s=0.7, upsample=mode)
        for img, d in zip(images, outs):
            x = torch.from_numpy(img)
            assert d.bone.shape == d.soft_tissue.shape == d.enhanced.shape == x.shape
            assert (d.soft_tissue + 0.7 * d.bone - x).abs().max() < 1e-5
            assert (d.enhanced - 2.0 * d.bone - x).abs().max() < 1e-5
    # "soft" mode: with w_s = 1 the soft-tissue image is the upsampled model-size soft-tissue image
    x = torch.from_numpy(images[0])[None, None]
    small = tiny.to_model_size(x)
    soft_small = small - tiny.predict_model_size(small)["bone"]
    want = torch.nn.functional.interpolate(soft_small, size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    got = tiny(images[0], upsample="soft").soft_tissue
    assert (got - want).abs().max() < 1e-5
    # a batch of equal-size images gives the same as one at a time
    batch = tiny(np.stack([images[0], images[0]]))
    assert torch.allclose(batch[1].bone, tiny(images[0]).bone, atol=1e-6)


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
    monkeypatch.setattr(registry, "DEFAULT", str(tiny_ckpt))
    res = CliRunner().invoke(app, ["demo", "-o", str(tmp_path / "demo")])
    assert res.exit_code == 0, res.output
    index = Path(res.stdout.strip().splitlines()[-1])
    assert index == (tmp_path / "demo" / "index.html").resolve() and index.is_file()
    assert (tmp_path / "demo" / "RG1_UNCI" / "soft_tissue.dcm").is_file()
    # Python API on a file path == on the read image
    dec = Decomposer.from_pretrained(tiny_ckpt, device="cpu")
    assert torch.equal(dec(src).bone, dec(read_radiograph(src).image).bone)
