"""Bone U-Net training: losses, a 2-step smoke run exporting a loadable checkpoint, CPU DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cxrdecomp.errors import DataNotFoundError

from _phantoms import chest_phantom

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def simdir(tmp_path_factory):
    from cxrdecomp.simulate.generate import simulate

    out = tmp_path_factory.mktemp("sim")
    simulate([chest_phantom(32, 3.0)], out, n_per_ct=6, size=64, bone="hu", progress=False, previews=False)
    return out


def _random_vgg(path):
    from cxrdecomp.nn.losses import vgg16_features

    torch.manual_seed(0)
    sd = {f"features.{k}": v for k, v in vgg16_features().state_dict().items()}
    sd["classifier.0.weight"] = torch.zeros(2, 2)  # a full torchvision dict also has classifier keys
    torch.save(sd, path)
    return path


def test_perceptual_loss(tmp_path):
    from cxrdecomp.nn.losses import PerceptualLoss

    loss = PerceptualLoss(_random_vgg(tmp_path / "vgg16.pth"))
    a = torch.rand(2, 1, 32, 32)
    assert loss(a, a).item() == pytest.approx(0.0, abs=1e-10)
    b = a.clone().requires_grad_(True)
    v = loss(b, torch.rand(2, 1, 32, 32))
    v.backward()
    assert v.item() > 0 and b.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss.features.parameters())
    assert len(loss.features) == 9 and isinstance(loss.features[7], torch.nn.Conv2d)  # ends at block2_conv2 + ReLU
    with pytest.raises(DataNotFoundError, match="not found"):
        PerceptualLoss(tmp_path / "missing.pth")
    torch.save({"x": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(DataNotFoundError, match="not a torchvision VGG16"):
        PerceptualLoss(tmp_path / "bad.pth")


def test_predict_bone_equivariant():
    from cxrdecomp.methods.bone_unet.network import build_bone_unet, predict_bone

    net = build_bone_unet(base=4, depth=2).eval()
    x = torch.rand(1, 1, 32, 32)
    b1 = predict_bone(net, x, {"bone_scale": 2.0})["bone"]
    b2 = predict_bone(net, 0.5 * x + 0.2, {"bone_scale": 2.0})["bone"]
    assert torch.allclose(b2, 0.5 * b1, atol=1e-5)


def test_train_smoke_export_and_load(simdir, tmp_path):
    from cxrdecomp.decomposer import Decomposer
    from cxrdecomp.methods.bone_unet.module import train_bone_unet

    torch.set_num_threads(1)
    run = tmp_path / "run"
    opts = {"data": simdir, "out": run, "max_steps": 2, "epochs": 1, "batch_size": 3, "size": 64, "base": 4, "depth": 2,
            "accelerator": "cpu", "progress": False, "vgg_weights": _random_vgg(tmp_path / "vgg.pth")}
    folder = train_bone_unet(opts)
    assert (run / "last.ckpt").is_file() and (run / "logs" / "metrics.csv").is_file()
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["dtype"] == "float16" and cfg["inference"]["bone_scale"] > 0 and cfg["input_size"] == 64
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"val/rmse", "val/psnr", "val/ssim", "val/ms_ssim"} <= set(metrics)
    dec = Decomposer.from_pretrained(folder, device="cpu")
    img = np.random.default_rng(0).random((90, 70)).astype(np.float32)
    out = dec(img)
    assert out.bone.shape == (90, 70)
    assert torch.allclose(out.soft_tissue + out.bone, torch.from_numpy(img), atol=1e-5)
    # resume: a second run with more steps continues from last.ckpt
    folder = train_bone_unet({**opts, "max_steps": 4, "epochs": 5})
    assert json.loads((folder / "config.json").read_text())["training"]["global_step"] == 4


def test_train_missing_data(tmp_path):
    from cxrdecomp.methods.bone_unet.module import train_bone_unet

    with pytest.raises(DataNotFoundError, match="cxrdecomp simulate"):
        train_bone_unet({"data": tmp_path, "out": tmp_path / "r"})


def test_cli_train_unknown_method(tmp_path):
    from typer.testing import CliRunner

    from cxrdecomp.cli import app

    res = CliRunner().invoke(app, ["train", "--method", "nope", "--data", str(tmp_path), "-o", str(tmp_path / "r")])
    assert res.exit_code != 0 and "no trainer" in str(res.exception)


def test_ddp_two_processes_cpu(simdir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "cxrdecomp.cli", "train", "--method", "bone_unet", "--data", str(simdir), "-o", str(tmp_path / "ddp"),
           "--max-steps", "2", "--epochs", "1", "--batch-size", "1", "--size", "64", "--base", "4", "--depth", "2",
           "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp"]
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    except subprocess.TimeoutExpired:
        pytest.fail("2-process DDP run did not finish in 240 s")
    assert p.returncode == 0, p.stderr[-3000:]
    cfg = json.loads((tmp_path / "ddp" / "model" / "config.json").read_text())
    assert "x2" in cfg["training"]["device"]


def test_cli_train_dispatches_every_method(tmp_path, monkeypatch):
    """`train --method M` maps the common options onto each method's own names and rejects the rest."""
    from typer.testing import CliRunner

    from cxrdecomp import trainers
    from cxrdecomp.cli import app
    from cxrdecomp.models import bsdiff, dae, lung

    seen = {}
    monkeypatch.setattr(bsdiff, "train_bsdiff", lambda o: seen.setdefault("bsdiff", o) and tmp_path)
    monkeypatch.setattr(dae, "train_dae", lambda o: seen.setdefault("dae", o) and tmp_path)
    monkeypatch.setattr(lung, "train_lung_seg", lambda o: seen.setdefault("lung_seg", o) and tmp_path)
    base = ["train", "--data", str(tmp_path), "-o", str(tmp_path / "r"), "--batch-size", "4"]
    r = CliRunner().invoke(app, base + ["--method", "bsdiff", "--vgg-weights", str(tmp_path / "v.pth"), "--opt", "stage=2",
                                        "--opt", 'model={"target": "residual"}'])
    assert r.exit_code == 0, r.output
    o = seen["bsdiff"]
    assert o["stage"] == 2 and o["batch_size"] == 4 and o["model"] == {"target": "residual"}
    assert o["perceptual_weights"] == tmp_path / "v.pth" and "vgg_weights" not in o and "epochs" not in o
    r = CliRunner().invoke(app, base + ["--method", "dae", "--opt", "variant=ae"])
    assert r.exit_code == 0, r.output
    assert seen["dae"].variant == "ae" and seen["dae"].batch_size == 4
    r = CliRunner().invoke(app, base + ["--method", "lung_seg", "--depth", "3"])
    assert r.exit_code == 0, r.output
    assert seen["lung_seg"].depth == 3 and seen["lung_seg"].data == str(tmp_path)
    # an option the method does not have is an error, not silently ignored
    r = CliRunner().invoke(app, base + ["--method", "bsdiff", "--depth", "3"])
    assert r.exit_code != 0 and "does not take ['depth']" in str(r.exception)
    assert set(trainers.TRAINERS) >= {"bone_unet", "dae", "bsdiff", "lung_seg", "lung_extract"}
