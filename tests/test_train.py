"""The training engine and the bone U-Net's training: losses, a smoke run exporting a loadable checkpoint,
resume after a kill, the generated `cxrdecomp train METHOD` commands, CPU DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
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
    simulate([chest_phantom(32, 3.0)], out, n_per_ct=6, size=64, progress=False, previews=False)
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
    from cxrdecomp.methods.bone_unet.network import build
    from cxrdecomp.methods.bone_unet.predict import predict

    net = build(base=4, depth=2).eval()
    x = torch.rand(1, 1, 32, 32)
    b1 = predict(net, x, {"bone_scale": 2.0})["bone"]
    b2 = predict(net, 0.5 * x + 0.2, {"bone_scale": 2.0})["bone"]
    assert b1.abs().max() > 1e-4  # not trivially zero
    assert torch.allclose(b2, 0.5 * b1, atol=1e-5)


def _opts(**kw):
    from cxrdecomp.methods.bone_unet.options import Options

    base = dict(max_steps=2, epochs=1, batch_size=3, size=64, base=4, depth=2, accelerator="cpu", progress=False)
    return Options(**{**base, **kw})


def test_train_smoke_export_and_load(simdir, tmp_path):
    from cxrdecomp.decomposer import Decomposer
    from cxrdecomp.methods.bone_unet.module import train

    torch.set_num_threads(1)
    run = tmp_path / "run"
    folder = train(_opts(data=simdir, out=run, vgg_weights=_random_vgg(tmp_path / "vgg.pth")))
    assert (run / "last.ckpt").is_file() and (run / "logs" / "metrics.csv").is_file()
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["dtype"] == "float16" and cfg["inference"]["bone_scale"] > 0 and cfg["input_size"] == 64
    assert cfg["method"] == "bone_unet" and cfg["training"]["global_step"] == 2
    assert cfg["training"]["options"]["batch_size"] == 3 and cfg["training"]["options"]["data"] == str(simdir)
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"val/rmse", "val/psnr", "val/ssim", "val/ms_ssim", "val/rmse_zero"} <= set(metrics)
    dec = Decomposer.from_pretrained(folder, device="cpu")
    img = np.random.default_rng(0).random((90, 70)).astype(np.float32)
    out = dec(img)
    assert out.bone.shape == (90, 70)
    assert torch.allclose(out.soft_tissue + out.bone, torch.from_numpy(img), atol=1e-5)


def test_train_online_on_a_users_ct(tmp_path):
    """`--online` renders fresh realistic samples of the given CT each epoch; validation uses the held-out anatomies."""
    import nibabel as nib

    from cxrdecomp.errors import ConfigError
    from cxrdecomp.methods.bone_unet.module import train

    torch.set_num_threads(1)
    ct = chest_phantom(32, 3.0)
    p = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(ct.hu, ct.affine), str(p))
    folder = train(_opts(online=True, ct=p, epoch_samples=6, val_samples=3, out=tmp_path / "run", epochs=2, max_steps=100))
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["training"]["global_step"] == 4  # 2 epochs × 2 batches of 3
    assert "online realistic simulation" in (folder / "MODEL_CARD.md").read_text()
    with pytest.raises(ConfigError, match="either --data or --online"):
        train(_opts(online=True, data=tmp_path, out=tmp_path / "r"))


def test_resume_keeps_history_and_survives_a_broken_last_link(simdir, tmp_path, capsys):
    """metrics.csv keeps the first run's rows after a resume; a last.ckpt link to a missing file falls back to the
    newest checkpoint left (with a message) instead of silently starting again."""
    import csv as _csv

    from cxrdecomp.methods.bone_unet.module import train

    torch.set_num_threads(1)
    run = tmp_path / "run"
    train(_opts(data=simdir, out=run, max_steps=-1, epochs=1))
    first = list(_csv.DictReader(open(run / "logs" / "metrics.csv")))
    assert first and {r["epoch"] for r in first if r.get("epoch")} == {"0"}
    train(_opts(data=simdir, out=run, max_steps=-1, epochs=2))
    rows = list(_csv.DictReader(open(run / "logs" / "metrics.csv")))
    assert {r["epoch"] for r in rows if r.get("epoch")} == {"0", "1"} and len(rows) > len(first)
    # break the link: last.ckpt → a file that is gone
    target = (run / "last.ckpt").resolve()
    newest = max((p for p in run.glob("*.ckpt") if p.name != "last.ckpt"), key=lambda p: p.stat().st_mtime)
    (run / "last.ckpt").unlink()
    (run / "last.ckpt").symlink_to(run / "epoch=99-step=9999.ckpt")
    capsys.readouterr()
    folder = train(_opts(data=simdir, out=run, max_steps=-1, epochs=3))
    err = capsys.readouterr().err
    assert f"resuming from the newest checkpoint {newest.name}" in err and target.name == newest.name
    steps_per_epoch = int(first[-1]["step"]) + 1 if first[-1].get("step") else None
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["training"]["epochs"] == 3  # continued from epoch 2, not restarted at 0
    assert steps_per_epoch is None or cfg["training"]["global_step"] >= 3 * (steps_per_epoch - 1)


def test_checkpoints_within_an_epoch(simdir, tmp_path):
    from cxrdecomp.methods.bone_unet.module import train

    torch.set_num_threads(1)
    run = tmp_path / "run"
    train(_opts(data=simdir, out=run, batch_size=1, max_steps=4, epochs=1, checkpoint_minutes=1e-6))
    assert list(run.glob("within-epoch=0-step=*.ckpt")), sorted(p.name for p in run.iterdir())


def test_train_missing_data(tmp_path):
    from cxrdecomp.methods.bone_unet.module import train

    with pytest.raises(DataNotFoundError, match="cxrdecomp simulate"):
        train(_opts(data=tmp_path, out=tmp_path / "r"))


def _cli(*args):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    return [sys.executable, "-m", "cxrdecomp.cli", *args], env


def test_killed_training_resumes_from_its_checkpoint(simdir, tmp_path):
    """SIGKILL a training process after its first epoch checkpoint; rerunning the command continues from it:
    with the killed run's epoch count nothing is left to train (the export equals the checkpoint's weights,
    which a restart from scratch could not give), one epoch more adds exactly one epoch of steps."""
    run = tmp_path / "run"
    args = ["train", "bone_unet", "--data", str(simdir), "-o", str(run), "--batch-size", "1", "--size", "64", "--base", "4",
            "--depth", "2", "--accelerator", "cpu", "--no-progress", "--bone-scale", "1.0"]
    cmd, env = _cli(*args, "--epochs", "1000")
    p = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t0 = time.monotonic()
    while not list(run.glob("epoch=*.ckpt")):
        assert p.poll() is None, p.stderr.read().decode()[-3000:]
        assert time.monotonic() - t0 < 180, "no checkpoint after 180 s"
        time.sleep(0.1)
    time.sleep(0.5)  # let the checkpoint write finish
    p.send_signal(signal.SIGKILL)
    p.wait()
    ck = torch.load(run / "last.ckpt", map_location="cpu", weights_only=False)
    epochs_done, step = int(ck["epoch"]) + 1, int(ck["global_step"])
    assert step > 0 and (run / "last.ckpt").is_symlink()

    cmd, env = _cli(*args, "--epochs", str(epochs_done))
    q = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert q.returncode == 0, q.stderr[-3000:]
    assert "resuming from" in q.stderr
    cfg = json.loads((run / "model" / "config.json").read_text())
    assert cfg["training"]["global_step"] == step
    from safetensors.torch import load_file

    exported = load_file(str(run / "model" / "model.safetensors"))
    for k, v in exported.items():
        assert torch.equal(v, ck["state_dict"][f"net.{k}"].to(v.dtype)), k

    steps_per_epoch = step // epochs_done
    cmd, env = _cli(*args, "--epochs", str(epochs_done + 1))
    q = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert q.returncode == 0 and "resuming from" in q.stderr, q.stderr[-3000:]
    cfg = json.loads((run / "model" / "config.json").read_text())
    assert cfg["training"]["global_step"] == step + steps_per_epoch and cfg["training"]["epochs"] == epochs_done + 1


def test_time_budget_survives_resume(tmp_path):
    """The elapsed training time is written to the Lightning checkpoint and read back on resume, also from the
    keys written before the one engine (bsdiff, dae)."""
    from cxrdecomp.methods.bone_unet.module import BoneUNetModule

    m = BoneUNetModule(size=32, base=4, depth=2)
    m._elapsed_before = 12.5
    ck = {}
    m.on_save_checkpoint(ck)
    assert ck["cxrdecomp_elapsed_s"] == pytest.approx(12.5)
    for old in ({"cxrdecomp_elapsed_s": 7.0}, {"bsdiff_elapsed_s": 8.0}, {"dae_best": {"elapsed": 9.0}}):
        n = BoneUNetModule(size=32, base=4, depth=2)
        n.on_load_checkpoint(old)
        assert n.elapsed() == pytest.approx(next(iter(old.values())) if "dae_best" not in old else 9.0)
    m.max_minutes = 0.2  # 12 s < 12.5 s: the budget is spent
    assert m.progress(0) == 1.0


def test_cli_train_lists_every_method_and_rejects_unknown(tmp_path):
    from typer.testing import CliRunner

    from cxrdecomp import methods
    from cxrdecomp.cli import app

    r = CliRunner().invoke(app, ["train", "--help"])
    assert r.exit_code == 0
    for name in ("bone_unet", "lung", "dae", "bsdiff", "xraysyn"):
        assert name in r.output and name in methods.trainable()
    r = CliRunner().invoke(app, ["train", "nope", "--data", str(tmp_path)])
    assert r.exit_code == 2 and "No such command 'nope'" in r.output


def test_cli_train_options_come_from_the_options_dataclass(tmp_path, monkeypatch):
    """Each `train METHOD` flag is a field of the method's Options (types parsed, bools as --x/--no-x); an option
    another method has is refused."""
    from typer.testing import CliRunner

    from cxrdecomp import methods
    from cxrdecomp.cli import app

    seen = {}
    monkeypatch.setattr(methods, "trainer", lambda name: (lambda o: seen.setdefault(name, o) and tmp_path))
    base = ["--data", str(tmp_path), "-o", str(tmp_path / "r"), "--batch-size", "4"]
    r = CliRunner().invoke(app, ["train", "bsdiff", *base, "--stage", "2", "--target", "residual", "--no-clahe"])
    assert r.exit_code == 0, r.output
    o = seen["bsdiff"]
    assert isinstance(o, methods.train_options("bsdiff")) and o.stage == 2 and o.target == "residual" and o.clahe is False
    assert o.batch_size == 4 and o.out == tmp_path / "r"
    r = CliRunner().invoke(app, ["train", "dae", *base, "--variant", "ae", "--devices", "2"])
    assert r.exit_code == 0, r.output
    assert seen["dae"].variant == "ae" and seen["dae"].devices_value == 2
    r = CliRunner().invoke(app, ["train", "lung", *base, "--stage", "seg", "--depth", "3"])
    assert r.exit_code == 0, r.output
    assert seen["lung"].depth == 3 and seen["lung"].stage == "seg"
    r = CliRunner().invoke(app, ["train", "bsdiff", *base, "--depth", "3"])
    assert r.exit_code == 2 and "No such option: --depth" in r.output


@pytest.mark.slow
def test_ddp_two_processes_cpu(simdir, tmp_path):
    cmd, env = _cli("train", "bone_unet", "--data", str(simdir), "-o", str(tmp_path / "ddp"), "--max-steps", "2", "--epochs", "1",
                    "--batch-size", "1", "--size", "64", "--base", "4", "--depth", "2", "--accelerator", "cpu", "--devices", "2",
                    "--strategy", "ddp", "--no-progress")
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    except subprocess.TimeoutExpired:
        pytest.fail("2-process DDP run did not finish in 240 s")
    assert p.returncode == 0, p.stderr[-3000:]
    cfg = json.loads((tmp_path / "ddp" / "model" / "config.json").read_text())
    assert "x2" in cfg["training"]["device"]


def test_bone_loss_counts_only_the_field_where_the_target_holds():
    from cxrdecomp.methods.bone_unet.module import BoneUNetModule
    from cxrdecomp.methods.bone_unet.predict import bone_to_target, normalize

    torch.manual_seed(0)
    m = BoneUNetModule(size=32, base=4, depth=2, bone_scale=1.0).eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        out = m.net(normalize(x))
    bone = torch.zeros_like(x)
    err = (out - bone_to_target(bone, x, 1.0)).abs()
    field = torch.zeros_like(x)
    field[..., :16] = 1
    with torch.no_grad():
        full, _, _ = m._losses({"x": x, "bone": bone})
        half, _, _ = m._losses({"x": x, "bone": bone, "field": field})
    assert full.item() == pytest.approx(err.mean().item(), rel=1e-5)
    assert half.item() == pytest.approx(err[..., :16].mean().item(), rel=1e-5)
    assert abs(half.item() - full.item()) > 1e-4


def test_init_from_starts_from_the_weights_and_adds_up_the_compute(simdir, tmp_path):
    from safetensors.torch import load_file

    from cxrdecomp.errors import ConfigError
    from cxrdecomp.methods.bone_unet.module import train

    torch.set_num_threads(1)
    parent = train(_opts(data=simdir, out=tmp_path / "a", max_steps=3, epochs=5))
    child = train(_opts(data=simdir, out=tmp_path / "b", init_from=str(parent), lr=0.0, max_steps=2))
    fresh = train(_opts(data=simdir, out=tmp_path / "c", lr=0.0, max_steps=2, seed=1))
    wp, wc, wf = (load_file(str(f / "model.safetensors")) for f in (parent, child, fresh))
    assert all(torch.equal(wp[k], wc[k]) for k in wp)  # lr 0: the child is its parent
    assert not all(torch.equal(wp[k], wf[k]) for k in wp)
    cfg = json.loads((child / "config.json").read_text())
    assert cfg["inference"]["bone_scale"] == json.loads((parent / "config.json").read_text())["inference"]["bone_scale"]
    t = cfg["training"]
    assert [r["steps"] for r in t["lineage"]] == [3, 2] and t["total"]["steps"] == 5 and t["total"]["runs"] == 2
    assert t["total"]["elapsed_s"] == pytest.approx(sum(r["elapsed_s"] for r in t["lineage"]), abs=0.2)
    assert "Compute, all runs behind these weights" in (child / "MODEL_CARD.md").read_text()
    grand = train(_opts(data=simdir, out=tmp_path / "d", init_from=str(child), max_steps=1))
    assert [r["steps"] for r in json.loads((grand / "config.json").read_text())["training"]["lineage"]] == [3, 2, 1]
    with pytest.raises(ConfigError, match="same network options"):
        train(_opts(data=simdir, out=tmp_path / "e", init_from=str(parent), base=8))
