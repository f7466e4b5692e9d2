"""Disentanglement autoencoder (issue 6) and the paired augmentation: shapes, inference network without
the bone branch, loss decreases, augmentation keeps pairs registered, checkpoint round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cxrdecomp.data.augment import PairedAffine, affine_matrices, apply_affine
from cxrdecomp.models import dae as dae_mod
from cxrdecomp.methods.dae.network import (
    DAE,
    BoneSegBranch,
    SimulatedPairs,
    bone_mask,
    build_dae,
    dae_loss,
    ms_ssim_loss,
    msssim_window,
    predict_dae,
)

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
    with pytest.raises(ValueError):
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


def test_bone_branch_absent_at_inference():
    mod = dae_mod.DAEModule("dae-msssim", base=4, size=64)
    assert mod.seg_branch is not None
    keys = list(mod.net.state_dict())
    assert keys and not any("seg" in k or "bone" in k for k in keys)
    n_inf = sum(p.numel() for p in mod.net.parameters())
    n_ae = sum(p.numel() for p in dae_mod.DAEModule("ae", base=4, size=64).net.parameters())
    assert n_inf == n_ae  # no extra cost over a plain autoencoder
    calls = []
    mod.seg_branch.register_forward_hook(lambda *a: calls.append(1))
    out = predict_dae(mod.net.eval(), torch.rand(1, 1, 64, 64), {})
    assert set(out) == {"soft_tissue"} and out["soft_tissue"].shape == (1, 1, 64, 64)
    assert calls == []


def test_exported_inference_module_has_no_bone_branch():
    net = build_dae(base=4).eval()  # what a checkpoint rebuilds
    x = torch.rand(1, 1, 64, 64)
    exported = torch.export.export(net, (x,))
    assert exported.state_dict and not any("seg" in k for k in exported.state_dict)
    assert set(exported.state_dict) == set(net.state_dict())
    torch.testing.assert_close(exported.module()(x), net(x))


# --- loss ----------------------------------------------------------------------------------------


def test_msssim_window_and_loss_properties():
    assert msssim_window(512) == 11 and msssim_window(64) == 3 and msssim_window(161) == 11
    with pytest.raises(ValueError):
        msssim_window(32)
    x = torch.rand(2, 1, 64, 64)
    assert ms_ssim_loss(x, x).abs() < 1e-5
    assert ms_ssim_loss(x, torch.rand(2, 1, 64, 64)) > 0.1


def test_bone_mask_threshold():
    cxr, soft = _pair()
    m = bone_mask(cxr, soft)
    assert set(m.unique().tolist()) <= {0.0, 1.0}
    torch.testing.assert_close(m, ((cxr - soft) > 4 / 255).float())
    assert 0.2 < m.mean() < 0.5


def test_loss_terms_by_variant():
    cxr, soft = _pair()
    logits = torch.zeros_like(cxr)
    _, p = dae_loss(cxr, soft, logits, bone_mask(cxr, soft))
    assert set(p) == {"mse", "msssim", "seg"}
    assert p["seg"].item() == pytest.approx(math.log(2), rel=1e-5)
    loss, p = dae_loss(cxr, soft, use_msssim=False)
    assert set(p) == {"mse"} and loss.item() == pytest.approx(((cxr - soft) ** 2).mean().item(), rel=1e-6)
    with pytest.raises(ValueError):
        dae_loss(cxr, soft, logits, None)


@pytest.mark.parametrize("variant", ["dae-msssim", "ae"])
def test_few_steps_lower_loss_on_fixed_batch(variant):
    torch.manual_seed(0)
    mod = dae_mod.DAEModule(variant, base=4, size=64, augment=False)
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


def test_metrics_identity_and_perfect():
    cxr, soft = _pair()
    ident = dae_mod._soft_metrics(cxr, soft, cxr)
    torch.testing.assert_close(ident["bsr"], torch.zeros(2))
    perfect = dae_mod._soft_metrics(soft, soft, cxr)
    torch.testing.assert_close(perfect["bsr"], torch.ones(2))
    assert (perfect["ssim"] > 0.999).all() and (perfect["psnr"] > 100).all()


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
    ds = SimulatedPairs(tmp_path, size=64)
    item = ds[0]
    assert item["cxr"].shape == (1, 64, 64) and item["cxr"].min() >= 0 and item["cxr"].max() <= 1
    assert (item["cxr"] - item["soft"]).min() >= -1e-6
    from cxrdecomp.errors import DataNotFoundError

    with pytest.raises(DataNotFoundError):
        SimulatedPairs(tmp_path / "nothing", size=64)


# --- checkpoint round trip --------------------------------------------------------------------------


def test_checkpoint_round_trip_through_decomposer(tmp_path):
    from cxrdecomp import checkpoint
    from cxrdecomp.decomposer import Decomposer

    torch.manual_seed(0)
    mod = dae_mod.DAEModule("dae-msssim", base=4, size=64)
    torch.nn.init.normal_(mod.net.soft_decoder[-1].weight, std=0.01)
    cfg = mod.export_config({"val/bsr": 0.5}, {"command": "test"})
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
def test_smoke_training_run_on_bse_jsrt(tmp_path):
    from cxrdecomp.data.pairs import default_bse_jsrt
    from cxrdecomp.decomposer import Decomposer

    import shutil

    from cxrdecomp.data.pairs import list_pairs

    root = default_bse_jsrt()
    if not (root / "train").is_dir():
        pytest.skip(f"BSE-JSRT pairs not found at {root} (set CXRDECOMP_BSE_JSRT)")
    small = tmp_path / "data"  # two pairs per split keep the run short
    for split in ("train", "val"):
        for c, s in list_pairs(root / split)[:2]:
            for src, kind in ((c, "cxr"), (s, "soft")):
                (small / split / kind).mkdir(parents=True, exist_ok=True)
                shutil.copy(src, small / split / kind / src.name)
    opts = dae_mod.DAETrainOptions(out=tmp_path / "run", data=small, size=64, epochs=1, max_steps=2, batch_size=2,
                                   base=4, limit_pairs=2, accelerator="cpu", progress=False)
    folder = dae_mod.train_dae(opts)
    dec = Decomposer.from_pretrained(folder, device="cpu")
    assert dec.config["training"]["variant"] == "dae-msssim"
    assert "val/bsr" in dec.config["metrics"]
    assert (tmp_path / "run" / "last.ckpt").is_file()


def _write_pairs(root, n=2, s=64):
    from PIL import Image

    for split in ("train", "val"):
        for i in range(n):
            cxr, soft = _pair(b=1, s=s, seed=i)
            for kind, t in (("cxr", cxr), ("soft", soft)):
                (root / split / kind).mkdir(parents=True, exist_ok=True)
                Image.fromarray((t[0, 0].numpy() * 255).round().astype(np.uint8)).save(root / split / kind / f"P{i}.png")


def test_train_mixing_simulated_pairs_and_resume(tmp_path):
    from cxrdecomp.decomposer import Decomposer

    _write_pairs(tmp_path / "pairs")
    (tmp_path / "sim").mkdir()
    x = np.random.default_rng(0).random((80, 80), dtype=np.float32) * 3
    np.savez(tmp_path / "sim" / "s0.npz", drr=x, soft=0.8 * x)
    opts = dae_mod.DAETrainOptions(out=tmp_path / "run", variant="ae-msssim", data=tmp_path / "pairs", size=64, epochs=1,
                                   batch_size=2, base=4, accelerator="cpu", progress=False, sim_data=tmp_path / "sim")
    folder = dae_mod.train_dae(opts)
    cfg = Decomposer.from_pretrained(folder, device="cpu").config
    assert cfg["method"] == "ae" and "mixed with 1 simulated pairs" in cfg["training"]["data"]
    assert cfg["training"]["global_step"] == 2  # 3 pairs, batch 2
    opts.epochs = 2
    dae_mod.train_dae(opts)  # resumes from last.ckpt and trains one more epoch
    import json

    assert json.loads((folder / "config.json").read_text())["training"]["global_step"] > 2


def test_simulated_pairs_from_simulate_output(tmp_path):
    (tmp_path / "samples").mkdir()
    rng = np.random.default_rng(0)
    soft = rng.random((64, 64), dtype=np.float32) * 4
    bone = np.zeros_like(soft)
    bone[20:30] = 1.0
    np.save(tmp_path / "samples" / "ct000_s00000.npy", np.stack([soft + bone, bone, soft]))
    (tmp_path / "samples" / "ct000_s00000.json").write_text("{}")
    item = SimulatedPairs(tmp_path, size=64, augment=False)[0]
    assert item["cxr"].shape == item["soft"].shape == (1, 64, 64)
    d = item["bone"][0]
    assert d[20:30].mean() > 5 * d[40:].abs().mean()  # the bone layer is where the bone was
