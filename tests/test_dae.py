"""Disentanglement autoencoder (``cxrdecomp.methods.dae``) and the paired augmentation: shapes, inference
network without the bone branch, loss, model selection, simulated-pair readers, training and resume,
checkpoint round trip."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from cxrdecomp.data.augment import PairedAffine, affine_matrices, apply_affine
from cxrdecomp.errors import ConfigError, DataNotFoundError
from cxrdecomp.methods.dae.data import ArrayPairs, SimulateOutputPairs, simulated_pairs
from cxrdecomp.methods.dae.losses import bone_mask, dae_loss
from cxrdecomp.methods.dae.module import DAEModule, train
from cxrdecomp.methods.dae.network import DAE, BoneSegBranch, build
from cxrdecomp.methods.dae.options import Options
from cxrdecomp.methods.dae.predict import predict

torch.set_num_threads(1)


def _pair(b=2, s=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    soft = 0.3 + 0.4 * torch.rand(b, 1, s, s, generator=g).cumsum(-1) / s
    yy = torch.arange(s).view(1, 1, s, 1)
    ribs = ((yy // 6) % 3 == 0).float() * 0.08  # horizontal "ribs"
    return (soft + ribs).clamp(0, 1), soft.clamp(0, 1)


# --- network -------------------------------------------------------------------------------------


def test_shapes_paper_size_features():
    net = DAE(base=16)
    x = torch.rand(1, 1, 64, 64)
    h = net.features(x)
    assert h.shape == (1, 64, 16, 16)  # 4·base channels at S/4 (512² → 128×128×64)
    assert net(x).shape == x.shape
    assert BoneSegBranch(16)(h).shape == x.shape
    with pytest.raises(ValueError, match="must be divisible by 4"):
        net(torch.rand(1, 1, 62, 62))


def test_encoder_is_four_convs_two_pools_doubling_except_last():
    convs = [m for m in DAE(base=16).encoder if isinstance(m, torch.nn.Conv2d)]
    pools = [m for m in DAE(base=16).encoder if isinstance(m, torch.nn.MaxPool2d)]
    assert [c.out_channels for c in convs] == [16, 32, 64, 64]
    assert len(pools) == 2


def test_residual_model_starts_at_identity():
    x = torch.rand(2, 1, 64, 64)
    assert torch.equal(DAE(base=4)(x), x)
    direct = DAE(base=4, residual=False)(x)
    assert direct.min() >= 0 and direct.max() <= 1


def test_state_dict_keys_of_bundled_checkpoint():
    # the bundled `dae` checkpoint was saved with these keys; renaming a submodule would break it
    from safetensors.torch import load_file

    from cxrdecomp import checkpoint

    folder = checkpoint.resolve("dae")
    cfg = checkpoint.load_config("dae")
    saved = load_file(str(next(folder.glob("*.safetensors"))))
    assert cfg["method"] == "dae"
    assert set(saved) == set(build(**cfg["model"]).state_dict())


def test_inference_imports_no_lightning():
    code = ("import sys, torch; from cxrdecomp.methods import load, predictor; m, cfg = load('dae'); "
            "out = predictor(cfg['method'])(m, torch.rand(1, 1, 64, 64), {}); "
            "assert set(out) == {'soft_tissue'}; print(sorted(k for k in sys.modules if k.startswith('lightning')))")
    r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_bone_branch_absent_at_inference():
    mod = DAEModule("dae-msssim", base=4, size=64)
    assert mod.seg_branch is not None
    keys = list(mod.net.state_dict())
    assert keys and not any("seg" in k or "bone" in k for k in keys)
    n_inf = sum(p.numel() for p in mod.net.parameters())
    ae = DAEModule("ae", base=4, size=64)
    assert ae.seg_branch is None and ae.method == "ae"
    assert n_inf == sum(p.numel() for p in ae.net.parameters())  # no extra cost over a plain autoencoder
    calls = []
    mod.seg_branch.register_forward_hook(lambda *a: calls.append(1))
    out = predict(mod.net.eval(), torch.rand(1, 1, 64, 64), {})
    assert set(out) == {"soft_tissue"} and out["soft_tissue"].shape == (1, 1, 64, 64)
    assert calls == []
    with pytest.raises(ConfigError, match="unknown DAE variant 'vae'"):
        DAEModule("vae")


def test_exported_inference_module_has_no_bone_branch():
    net = build(base=4).eval()  # what a checkpoint rebuilds
    x = torch.rand(1, 1, 64, 64)
    exported = torch.export.export(net, (x,))
    assert exported.state_dict and not any("seg" in k for k in exported.state_dict)
    assert set(exported.state_dict) == set(net.state_dict())
    torch.testing.assert_close(exported.module()(x), net(x))


# --- loss ----------------------------------------------------------------------------------------


def test_bone_mask_threshold():
    cxr, soft = _pair()
    m = bone_mask(cxr, soft)
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(m, ((cxr - soft) > 4 / 255).float())
    assert 0.2 < m.mean() < 0.5
    assert bone_mask(cxr, soft, threshold=0.1).sum() == 0  # the ribs are 0.08 above the soft tissue


def test_loss_terms_by_variant():
    cxr, soft = _pair()
    logits = torch.zeros_like(cxr)
    loss, p = dae_loss(cxr, soft, logits, bone_mask(cxr, soft), lambda_mse=2.0, lambda_seg=0.5)
    assert set(p) == {"mse", "msssim", "seg"}
    assert p["seg"].item() == pytest.approx(math.log(2), rel=1e-5)  # BCE of p = 1/2
    assert p["mse"].item() == pytest.approx(((cxr - soft) ** 2).mean().item(), rel=1e-6)
    assert 0.001 < p["msssim"].item() < 0.5  # a ribbed image is structurally close to its soft tissue
    assert loss.item() == pytest.approx(p["msssim"].item() + 2.0 * p["mse"].item() + 0.5 * math.log(2), rel=1e-5)
    assert dae_loss(soft, soft)[1]["msssim"].abs() < 1e-5  # 1 − MS-SSIM(S, S) = 0
    loss, p = dae_loss(cxr, soft, use_msssim=False)
    assert set(p) == {"mse"} and loss.item() == pytest.approx(((cxr - soft) ** 2).mean().item(), rel=1e-6)
    with pytest.raises(ValueError, match="a bone mask is needed"):
        dae_loss(cxr, soft, logits, None)


@pytest.mark.parametrize("variant", ["dae-msssim", "ae"])
def test_few_steps_lower_loss_on_fixed_batch(variant):
    torch.manual_seed(0)
    mod = DAEModule(variant, base=4, size=64, augment=False)
    cxr, soft = _pair(b=2, s=64)
    batch = {"cxr": cxr, "soft": soft}
    params = list(mod.net.parameters()) + (list(mod.seg_branch.parameters()) if mod.seg_branch is not None else [])
    opt = torch.optim.Adam(params, lr=1e-2)
    losses = []
    for _ in range(20):
        loss, _, _ = mod._loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses


# --- validation metrics and model selection -------------------------------------------------------


def _validate(mod, batch, epoch):
    mod._trainer = types.SimpleNamespace(sanity_checking=False, world_size=1, current_epoch=epoch, training=False)
    mod.on_validation_epoch_start()
    with torch.no_grad():
        mod.validation_step(batch, 0)
    mod.on_validation_epoch_end()


def test_validation_bsr_and_best_weights_selected_for_export(monkeypatch):
    torch.manual_seed(0)
    cxr, soft = _pair(b=2, s=64)
    batch = {"cxr": cxr, "soft": soft}
    mod = DAEModule("dae-msssim", base=4, size=64)
    logged = {}
    monkeypatch.setattr(mod, "log", lambda name, value, **kw: logged.__setitem__(name, float(value)))

    _validate(mod, batch, 0)  # untrained residual model = identity: BSR 0
    assert logged["val/bsr"] == pytest.approx(0.0, abs=1e-9)
    assert logged["val/psnr"] == pytest.approx(logged["val/psnr_identity"])

    # epoch 1: a model that removes 60 % of the rib layer
    rib_fraction = 0.6
    mod.net.soft_from_features = lambda x, h: x - rib_fraction * (cxr - soft)
    _validate(mod, batch, 1)
    expected = 1 - ((0.4 * (cxr - soft)) ** 2).sum() / ((cxr - soft) ** 2).sum()  # BSR = 1 − 0.4² = 0.84
    assert logged["val/bsr"] == pytest.approx(float(expected), rel=1e-6)
    best = {k: v.clone() for k, v in mod.net.state_dict().items()}
    assert mod.best_metrics["val/epoch"] == 1 and mod.best_metrics["val/bsr"] == pytest.approx(0.84, rel=1e-6)

    # epoch 2: worse (removes 200 %: BSR 0) with other weights: the epoch-1 weights stay selected
    mod.net.soft_from_features = lambda x, h: x - 2.0 * (cxr - soft)
    with torch.no_grad():
        for p in mod.net.parameters():
            p.add_(1.0)
    _validate(mod, batch, 2)
    assert logged["val/bsr"] == pytest.approx(0.0, abs=1e-6)
    last = {"val/bsr": logged["val/bsr"]}
    selected = mod.select_for_export(last)
    assert selected["val/epoch"] == 1 and selected["val/bsr"] == pytest.approx(0.84, rel=1e-6)
    for k, v in mod.net.state_dict().items():
        torch.testing.assert_close(v, best[k])
    assert DAEModule("ae", base=4, size=64).select_for_export(last) == last  # nothing validated yet


# --- augmentation ---------------------------------------------------------------------------------


def test_affine_identity_and_flip():
    x = torch.rand(3, 1, 32, 48)
    eye = affine_matrices(3)  # all ranges zero
    torch.testing.assert_close(apply_affine(eye, x)[0], x, atol=1e-5, rtol=0)
    flip = affine_matrices(3, hflip=1.0)
    torch.testing.assert_close(apply_affine(flip, x)[0], x.flip(-1), atol=1e-5, rtol=0)


def test_affine_pure_shift_moves_pixels():
    x = torch.zeros(1, 1, 40, 40)
    x[..., 10:20, 10:20] = 1
    theta = torch.tensor([[[1.0, 0, -0.25], [0, 1.0, 0]]])  # output x samples input x − 0.25·(W/2) = 5 px
    y = apply_affine(theta, x, padding_mode="zeros")[0]
    torch.testing.assert_close(y[..., 10:20, 15:25], x[..., 10:20, 10:20])


def test_paired_augmentation_keeps_pairs_registered():
    cxr, soft = _pair(b=4, s=64)
    g = torch.Generator().manual_seed(1)
    aug = PairedAffine(rotation=10, shift=0.1, shear=5, zoom=0.1, hflip=0.5)
    a_cxr, a_soft, a_bone = aug(cxr, soft, cxr - soft, generator=g)
    assert a_cxr.shape == cxr.shape
    assert not torch.allclose(a_cxr, cxr)
    torch.testing.assert_close(a_cxr - a_soft, a_bone, atol=1e-5, rtol=0)  # linear warp, same grid
    # same generator state → same transform
    b_cxr, = PairedAffine()(cxr, generator=torch.Generator().manual_seed(1))
    c_cxr, = PairedAffine()(cxr, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(b_cxr, c_cxr)
    with pytest.raises(ValueError):
        apply_affine(affine_matrices(4), cxr, soft[:, :, :32])


# --- simulated pairs -------------------------------------------------------------------------------


def test_simulated_pairs_npz_attenuation_domain(tmp_path):
    x = np.linspace(0, 5, 80 * 80, dtype=np.float32).reshape(80, 80)
    np.savez(tmp_path / "a.npz", drr=x, soft_tissue=x * 0.9)
    torch.save({"cxr": torch.full((1, 80, 80), 0.5), "y": torch.full((80, 80), 0.25)}, tmp_path / "b.pt")
    ds = simulated_pairs(tmp_path, size=64)
    assert isinstance(ds, ArrayPairs) and ds.names == ["a", "b"]
    item = ds[0]
    assert set(item) == {"cxr", "soft", "bone", "name"}
    assert item["cxr"].shape == (1, 64, 64) and item["cxr"].min() >= 0 and item["cxr"].max() <= 1
    torch.testing.assert_close(item["bone"], item["cxr"] - item["soft"])
    # one affine map v → v / 5 for both: bone = 0.1·x / 5 ∈ [0, 0.1]
    assert item["bone"].min() >= -1e-6 and item["bone"].max() == pytest.approx(0.1, rel=0.02)
    b = ds[1]  # already in [0, 1]: unchanged
    assert torch.allclose(b["cxr"], torch.tensor(0.5)) and torch.allclose(b["bone"], torch.tensor(0.25))
    with pytest.raises(DataNotFoundError, match="no simulated pairs in"):
        simulated_pairs(tmp_path / "nothing", size=64)
    np.savez(tmp_path / "c.npz", image=x)
    with pytest.raises(DataNotFoundError, match="has none of the keys"):
        simulated_pairs(tmp_path, size=64)


def test_simulated_pairs_from_simulate_output(tmp_path):
    from _phantoms import chest_phantom
    from cxrdecomp.simulate.generate import simulate

    simulate([chest_phantom(24, 4.0)], tmp_path, n_per_ct=2, size=32, progress=False, previews=False)
    ds = simulated_pairs(tmp_path, size=32, augment=False)
    assert isinstance(ds, SimulateOutputPairs) and len(ds) == 2
    item = ds[0]
    assert item["name"] == "ct000_s00000"
    assert item["cxr"].shape == item["soft"].shape == (1, 32, 32)
    assert torch.allclose(item["cxr"] - item["soft"], item["bone"])
    assert item["bone"].max() > 0.02  # the phantom's spine and ribs


def test_simulated_pairs_from_image_folders(tmp_path):
    from cxrdecomp.data.pairs import PairedImages

    _write_split(tmp_path, n=2, s=64)
    ds = simulated_pairs(tmp_path, size=32)
    assert isinstance(ds, PairedImages) and len(ds) == 2 and ds[0]["cxr"].shape == (1, 32, 32)


# --- options and errors ----------------------------------------------------------------------------


def test_options_defaults_and_cli_types():
    from cxrdecomp import methods

    o = Options()
    assert (o.size, o.epochs, o.lr, o.batch_size, str(o.out)) == (512, 100, 1e-3, 8, "runs/dae")
    assert (o.variant, o.residual, o.mask_threshold) == ("dae-msssim", True, 4 / 255)
    assert methods.train_options("dae") is Options and methods.train_options("ae") is Options
    assert methods.trainer("dae") is train
    assert "extra" not in {f.name for f in dataclasses.fields(Options)}
    allowed = {"bool", "int", "float", "str", "Path", "Optional[Path]", "Optional[float]", "Optional[str]", "Optional[int]"}
    assert {f.type for f in dataclasses.fields(Options)} <= allowed
    assert all(f.metadata.get("help") for f in dataclasses.fields(Options))


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"variant": "vae"}, ConfigError, "unknown variant 'vae'"),
        ({"sim_mode": "both"}, ConfigError, "--sim-mode must be one of mix, pretrain, not 'both'"),
        ({"size": 66}, ConfigError, "--size must be divisible by 4, got 66"),
        ({}, DataNotFoundError, "has no train/ folder"),
    ],
)
def test_train_rejects_bad_options(tmp_path, changes, error, match):
    with pytest.raises(error, match=match):
        train(Options(data=tmp_path, out=tmp_path / "run", **changes))


# --- checkpoint round trip --------------------------------------------------------------------------


def test_checkpoint_round_trip_through_decomposer(tmp_path):
    from cxrdecomp import checkpoint
    from cxrdecomp.decomposer import Decomposer

    torch.manual_seed(0)
    mod = DAEModule("dae-msssim", base=4, size=64)
    torch.nn.init.normal_(mod.net.soft_decoder[-1].weight, std=0.01)
    cfg = mod.export_config({"val/bsr": 0.5}, {"command": "test"})
    assert cfg["training"]["variant"] == "dae-msssim" and cfg["method"] == "dae"
    folder = checkpoint.save(tmp_path / "model", mod.net, cfg, mod.model_card({}, {}, 1, 0.1))
    dec = Decomposer.from_pretrained(folder, device="cpu")
    assert dec.method == "dae" and dec.size == 64
    img = torch.rand(96, 80)
    out = dec(img)
    assert out.bone.shape == img.shape and out.soft_tissue.shape == img.shape
    torch.testing.assert_close(out.soft_tissue + out.bone, img)  # I = S + B (w_s = 1)
    with torch.no_grad():
        small = torch.nn.functional.interpolate(img[None, None], size=(64, 64), mode="area")
        expected = mod.net.eval()(small)
    torch.testing.assert_close(dec.predict_model_size(img[None, None])["soft_tissue"], expected)


@pytest.mark.data
def test_bundled_checkpoint_suppresses_bone_on_bse_jsrt():
    from cxrdecomp import metrics
    from cxrdecomp.data.pairs import default_bse_jsrt, list_pairs, read_gray01
    from cxrdecomp.decomposer import Decomposer

    root = default_bse_jsrt()
    if not (root / "val").is_dir():
        pytest.skip(f"BSE-JSRT pairs not found at {root} (set CXRDECOMP_BSE_JSRT)")
    c, s = list_pairs(root / "val")[0]
    img, soft = torch.from_numpy(read_gray01(c)), torch.from_numpy(read_gray01(s))
    out = Decomposer.from_pretrained("dae", device="cpu")(img)
    assert 0.2 < float(metrics.bsr(out.soft_tissue, soft, img)) < 0.9  # 0.37 on average at 1024² (docs/results.md)


# --- training ----------------------------------------------------------------------------------------


def _write_split(root, n=2, s=64, seed0=0):
    from PIL import Image

    for i in range(n):
        cxr, soft = _pair(b=1, s=s, seed=seed0 + i)
        for kind, t in (("cxr", cxr), ("soft", soft)):
            (root / kind).mkdir(parents=True, exist_ok=True)
            Image.fromarray((t[0, 0].numpy() * 255).round().astype(np.uint8)).save(root / kind / f"P{seed0 + i}.png")


def _write_pairs(root, n=2, s=64):
    _write_split(root / "train", n, s)
    _write_split(root / "val", n, s, seed0=10)


def test_train_mixing_simulated_pairs_and_resume(tmp_path, capfd, monkeypatch):
    import json

    from cxrdecomp.decomposer import Decomposer

    _write_pairs(tmp_path / "pairs")
    (tmp_path / "sim").mkdir()
    x = np.random.default_rng(0).random((80, 80), dtype=np.float32) * 3
    np.savez(tmp_path / "sim" / "s0.npz", drr=x, soft=0.8 * x)
    opts = Options(out=tmp_path / "run", variant="ae-msssim", data=tmp_path / "pairs", size=64, epochs=1,
                   batch_size=2, base=4, accelerator="cpu", progress=False, sim_data=tmp_path / "sim")
    steps = []
    step = DAEModule.training_step
    monkeypatch.setattr(DAEModule, "training_step", lambda self, batch, i: (steps.append(self.global_step), step(self, batch, i))[1])

    folder = train(opts)
    cfg = Decomposer.from_pretrained(folder, device="cpu").config
    assert cfg["method"] == "ae" and "mixed with 1 simulated pairs" in cfg["training"]["data"]
    assert cfg["training"]["global_step"] == 2  # 2 real + 1 simulated pairs, batch 2, last batch kept
    assert cfg["training"]["options"]["variant"] == "ae-msssim" and cfg["training"]["selection"] == "best val/bsr"
    assert cfg["metrics"]["val/epoch"] == 0 and "val/rmae" in cfg["metrics"]
    assert steps == [0, 1]
    assert "resuming from" not in capfd.readouterr().err

    steps.clear()
    train(dataclasses.replace(opts, epochs=2))  # the same run, one more epoch: resumes from last.ckpt
    assert f"resuming from {tmp_path / 'run' / 'last.ckpt'}" in capfd.readouterr().err
    assert steps == [2, 3]  # continued from the first run's step, not restarted at 0
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["training"]["global_step"] == 4
    assert cfg["metrics"]["val/epoch"] in (0, 1)  # selected over both runs' epochs (kept in "dae_best")
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == cfg["metrics"]


def test_train_pretrain_on_simulated_pairs(tmp_path):
    import json

    _write_pairs(tmp_path / "pairs")
    _write_split(tmp_path / "sim", n=2, s=64, seed0=20)
    opts = Options(out=tmp_path / "run", variant="dae", data=tmp_path / "pairs", size=64, epochs=1, batch_size=2,
                   base=4, accelerator="cpu", progress=False, sim_data=tmp_path / "sim", sim_mode="pretrain", sim_epochs=1)
    folder = train(opts)
    pre = json.loads((tmp_path / "run" / "pretrain" / "model" / "config.json").read_text())
    assert pre["training"]["global_step"] == 1 and "2 simulated pairs" in pre["training"]["data"]
    cfg = json.loads((folder / "config.json").read_text())
    assert "pre-trained 1 epochs on 2 simulated pairs" in cfg["training"]["data"]
    assert cfg["training"]["global_step"] == 1


@pytest.mark.data
def test_smoke_training_run_on_bse_jsrt(tmp_path):
    import shutil

    from cxrdecomp.data.pairs import default_bse_jsrt, list_pairs
    from cxrdecomp.decomposer import Decomposer

    root = default_bse_jsrt()
    if not (root / "train").is_dir():
        pytest.skip(f"BSE-JSRT pairs not found at {root} (set CXRDECOMP_BSE_JSRT)")
    small = tmp_path / "data"  # two pairs per split keep the run short
    for split in ("train", "val"):
        for c, s in list_pairs(root / split)[:2]:
            for src, kind in ((c, "cxr"), (s, "soft")):
                (small / split / kind).mkdir(parents=True, exist_ok=True)
                shutil.copy(src, small / split / kind / src.name)
    opts = Options(out=tmp_path / "run", data=small, size=64, epochs=1, max_steps=2, batch_size=2,
                   base=4, limit_pairs=2, accelerator="cpu", progress=False)
    folder = train(opts)
    dec = Decomposer.from_pretrained(folder, device="cpu")
    assert dec.config["training"]["variant"] == "dae-msssim"
    assert "val/bsr" in dec.config["metrics"]
    assert (tmp_path / "run" / "last.ckpt").is_file()


def test_train_through_cli(tmp_path):
    import json

    from typer.testing import CliRunner

    from cxrdecomp.cli import app

    _write_pairs(tmp_path / "pairs")
    args = ["train", "dae", "--data", str(tmp_path / "pairs"), "-o", str(tmp_path / "run"), "--variant", "ae",
            "--size", "64", "--epochs", "1", "--batch-size", "2", "--base", "4", "--no-residual", "--no-augment",
            "--accelerator", "cpu", "--no-progress"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert cfg["method"] == "ae" and cfg["input_size"] == 64
    assert cfg["model"] == {"base": 4, "kernel": 3, "residual": False, "norm": False}
    assert cfg["training"]["options"]["augment"] is False
    r = CliRunner().invoke(app, [*args[:2], "--data", str(tmp_path / "pairs"), "--size", "30"])
    assert isinstance(r.exception, ConfigError) and "--size must be divisible by 4, got 30" in str(r.exception)
