"""BS-Diff: noise schedule, schedulers, conditioning, loss decrease, seeded sampling, checkpoint round trip,
augmentation, options, both training stages and resume, oracle regression tests of the samplers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cxrdecomp import checkpoint, methods
from cxrdecomp.errors import CheckpointError, ConfigError, InputError
from cxrdecomp.methods.bsdiff.data import BSDiffPairs
from cxrdecomp.methods.bsdiff.diffusion import (
    BETA_END,
    BETA_START,
    cosine_interpolated_betas,
    make_scheduler,
)
from cxrdecomp.methods.bsdiff.network import Enhancer, build
from cxrdecomp.methods.bsdiff.options import Options
from cxrdecomp.methods.bsdiff.predict import condition, make_condition, predict
from cxrdecomp.preprocess import clahe
from cxrdecomp.train.ema import ema_decay_at, make_ema

TINY = {"channels": (8, 8, 16, 16, 16), "norm_num_groups": 8, "enhancer_channels": (8, 8), "enhancer_latent_channels": 2, "enhancer_res_blocks": 1}


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _tiny(**kw):
    """Tiny BS-Diff whose U-Net output layer is randomised (MONAI zero-initialises it, which makes an
    untrained sampler return sign(noise) whatever the number of steps)."""
    net = build(**{**TINY, **kw})
    for m in [*net.unet.out.modules(), net.enhancer.ae.decoder.blocks[-1].conv]:  # (the enhancer's starts at zero: identity)
        if isinstance(m, torch.nn.Conv2d):
            m.reset_parameters()
    return net


def _phantom(b=2, s=32, seed=0):
    """Display-domain 'radiograph' = smooth soft tissue + bright stripes ('ribs')."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, s), torch.linspace(-1, 1, s), indexing="ij")
    soft = (0.3 + 0.3 * torch.exp(-(xx**2 + yy**2) * 2))[None, None].repeat(b, 1, 1, 1)
    soft = soft + 0.02 * torch.rand(b, 1, s, s, generator=g)
    bone = 0.2 * (torch.sin(yy * 12) > 0.6).float()[None, None]
    return (soft + bone).clamp(0, 1), soft.clamp(0, 1)


def test_cosine_betas_range_shape_and_monotone():
    b = cosine_interpolated_betas(1000)
    assert b.shape == (1000,) and b.dtype == torch.float32
    assert b[0].item() == pytest.approx(BETA_START, abs=1e-7) and b[-1].item() == pytest.approx(BETA_END, abs=1e-7)
    assert bool((b[1:] >= b[:-1]).all())
    # half cosine: the midpoint is the mean of the ends, and the ends are flat (ease in / ease out)
    assert b[500].item() == pytest.approx((BETA_START + BETA_END) / 2, rel=2e-3)
    assert (b[1] - b[0]).item() < (b[500] - b[499]).item() / 100
    abar = torch.cumprod(1 - b.double(), 0)
    assert abar[-1].item() < 1e-4  # x_T is (nearly) pure noise
    with pytest.raises(ConfigError, match="num_train_timesteps must be"):
        cosine_interpolated_betas(1)
    with pytest.raises(ConfigError, match="β must lie in"):
        cosine_interpolated_betas(10, beta_start=0.0)


def test_schedulers_use_the_schedule_and_shapes():
    ddpm = make_scheduler("ddpm")
    assert torch.allclose(ddpm.betas, cosine_interpolated_betas(1000))
    assert ddpm.timesteps.shape == (1000,) and ddpm.timesteps[0] == 999 and ddpm.timesteps[-1] == 0
    x0, eps = torch.zeros(3, 1, 8, 8), torch.ones(3, 1, 8, 8)
    t = torch.tensor([0, 500, 999])
    xt = ddpm.add_noise(x0, eps, t)
    assert xt.shape == x0.shape
    assert torch.allclose(xt[:, 0, 0, 0], (1 - ddpm.alphas_cumprod[t]).sqrt())
    for n in (10, 20, 50):
        ddim = make_scheduler("ddim", n)
        ts = ddim.timesteps
        assert ts.shape == (n,) and ts[0] == 999 and ts[-1] == 1000 // n - 1  # trailing spacing
        assert bool(((ts[:-1] - ts[1:]) == 1000 // n).all())
    assert make_scheduler("ddim", 30).timesteps.shape == (30,)
    with pytest.raises(ConfigError, match=r"DDIM steps must be in 1\.\.1000, got 0"):
        make_scheduler("ddim", 0)
    with pytest.raises(ConfigError, match="unknown sampler 'euler'"):
        make_scheduler("euler", 10)
    with pytest.raises(ConfigError, match="unknown noise schedule 'nope'"):
        make_scheduler("ddpm", schedule="nope")
    with pytest.raises(ConfigError, match="unknown prediction_type 'x1'"):
        make_scheduler("ddpm", prediction_type="x1")


def test_condition_channels_are_raw_and_clahe_in_minus1_1():
    x = 0.5 + 0.05 * torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    eq = clahe(x)
    assert eq.std() > 3 * x.std()  # CLAHE raises the local contrast of the conditioning radiograph
    c = make_condition(x, "clahe")
    assert c.shape == (2, 1, 64, 64) and torch.allclose(c, 2 * eq - 1)
    assert torch.allclose(make_condition(x, "raw"), 2 * x - 1)
    both = make_condition(x, "raw+clahe")
    assert both.shape == (2, 2, 64, 64)
    assert torch.allclose(both[:, :1], 2 * x - 1) and torch.allclose(both[:, 1:], 2 * eq - 1)
    # a model's own mode; use_clahe=False keeps the channel count but feeds the raw image
    net = build(**TINY, condition="raw+clahe")
    assert torch.equal(condition(net, x), both)
    assert torch.allclose(condition(net, x, use_clahe=False), (2 * x - 1).repeat(1, 2, 1, 1))
    with pytest.raises(ConfigError, match="unknown condition 'sharp'"):
        make_condition(x, "sharp")


def test_few_steps_lower_the_noise_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    net = _tiny()
    x, soft = _phantom(2, 32)
    cond, target = condition(net, x), 2 * soft - 1
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(target.shape, generator=g)
    t = torch.tensor([100, 600])
    opt = torch.optim.AdamW(net.unet.parameters(), lr=2e-3)
    losses = []
    for _ in range(6):
        loss = net.noise_loss(target, cond, noise=noise, timesteps=t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) and v > 0 for v in losses), losses
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_sampling_is_deterministic_with_a_seed(sampler, monkeypatch):
    if sampler == "ddpm":  # keep the test fast: a 5-step "DDPM" chain (T = 5)
        net = _tiny(num_train_timesteps=5)
    else:
        net = _tiny()
    net.eval()
    x, _ = _phantom(2, 32)
    opts = {"steps": 3, "sampler": sampler}
    a = predict(net, x, {**opts, "seed": 7})["soft_tissue"]
    torch.randn(10)  # global RNG state must not matter
    b = predict(net, x, {**opts, "seed": 7})["soft_tissue"]
    c = predict(net, x, {**opts, "seed": 8})["soft_tissue"]
    assert a.shape == x.shape and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_bad_size_and_sampler_raise():
    net = build(**TINY).eval()
    with pytest.raises(InputError, match=r"BS-Diff needs a size divisible by 16, got \(40, 40\)"):
        predict(net, torch.rand(1, 1, 40, 40), {"steps": 2})
    with pytest.raises(ConfigError, match="unknown sampler 'bogus'"):
        predict(net, torch.rand(1, 1, 32, 32), {"steps": 2, "sampler": "bogus"})
    with pytest.raises(ConfigError, match="must have the same length"):
        build(channels=(8, 8, 16), attention_levels=(False, True))
    with pytest.raises(ConfigError, match=r"widths \[12\] are not multiples of norm_num_groups=8"):
        build(**{**TINY, "channels": (8, 8, 16, 16, 12)})


@pytest.mark.parametrize("param", [{}, {"target": "residual", "prediction_type": "sample", "condition": "raw+clahe"}])
def test_checkpoint_round_trip_through_decomposer(tmp_path, param):
    from cxrdecomp.decomposer import Decomposer

    torch.manual_seed(0)
    # T = 10 keeps ᾱ near 1, so the untrained predictor's x0 estimates are not all clipped to ±1
    model_cfg = {**TINY, "num_train_timesteps": 10, **param}
    net = _tiny(num_train_timesteps=10, **param).eval()
    cfg = {"method": "bsdiff", "model": model_cfg, "input_size": 32, "dtype": "float16",
           "inference": {"steps": 3, "sampler": "ddim", "seed": 0, "enhance": True, "clahe": True}}
    folder = checkpoint.save(tmp_path / "ck", net, cfg, "# card\n")
    dec = Decomposer.from_pretrained(folder, device="cpu")
    assert dec.options["steps"] == 3 and dec.options["enhance"] is True
    assert (dec.model.target, dec.model.cond_mode) == (net.target, net.cond_mode)
    img = np.random.default_rng(0).uniform(0.2, 0.8, (70, 60)).astype(np.float32)
    out = dec(img)
    assert out.soft_tissue.shape == (70, 60) and out.bone.shape == (70, 60)
    # decomposition identity in the display domain: I = soft + bone (w_s = 1)
    assert torch.allclose(out.soft_tissue + out.bone, torch.from_numpy(img), atol=1e-6)
    # the loaded (float16-stored) model predicts like the original at model size
    x = torch.nn.functional.interpolate(torch.from_numpy(img)[None, None], size=(32, 32), mode="area")
    ref = predict(net.half().float(), x, dec.options)["soft_tissue"]
    got = dec.predict_model_size(torch.from_numpy(img)[None, None])["soft_tissue"]
    assert torch.allclose(ref, got, atol=1e-5)
    # steps is an option: a different number of steps gives a different sample, the same one repeats
    s2 = Decomposer.from_pretrained(folder, device="cpu", steps=2)(img).soft_tissue
    assert not torch.allclose(s2, out.soft_tissue)
    assert torch.equal(dec(img).soft_tissue, out.soft_tissue)
    # ablation switch: without the enhancer the output differs
    plain = Decomposer.from_pretrained(folder, device="cpu", enhance=False)(img).soft_tissue
    assert not torch.allclose(plain, out.soft_tissue)


def test_default_widths_fit_the_checkpoint_budget():
    net = build()
    n = sum(p.numel() for p in net.parameters())
    assert n * 2 / 1e6 <= 20.0  # float16 storage, both stages in one checkpoint


def _write_pairs(root, n=3, s=64):
    from PIL import Image

    for split in ("train", "val"):
        for k in ("cxr", "soft"):
            (root / split / k).mkdir(parents=True)
        for i in range(n):
            x, soft = _phantom(1, s, seed=i)
            Image.fromarray((x[0, 0].numpy() * 255).astype(np.uint8)).save(root / split / "cxr" / f"p{i}.png")
            Image.fromarray((soft[0, 0].numpy() * 255).astype(np.uint8)).save(root / split / "soft" / f"p{i}.png")


def test_augmentation_moves_every_image_of_an_item_alike():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 32, 32, generator=g)  # asymmetric: a flip is visible
    ds = BSDiffPairs(x, x.clone(), x.clone(), augment=True, rotate=10.0, gamma=0.2, condition="raw+clahe")
    torch.manual_seed(0)
    for i in range(6):
        it = ds[i % 2]
        # radiograph, target and stage-2 input get the same flip / rotation / gamma
        assert torch.allclose((it["soft"] + 1) / 2, it["cxr"], atol=1e-6) and torch.allclose((it["source"] + 1) / 2, it["cxr"], atol=1e-6)
        assert torch.allclose(it["cond"], make_condition(it["cxr"][None], "raw+clahe")[0])
        assert not torch.allclose(it["cxr"], x[i % 2])
    # only flips: each item is the image or its mirror image, and both occur
    flips = BSDiffPairs(x, x, augment=True, rotate=0.0, gamma=0.0)
    seen = set()
    for _ in range(20):
        c = flips[0]["cxr"]
        same, mirrored = torch.allclose(c, x[0], atol=1e-6), torch.allclose(c, x[0].flip(-1), atol=1e-6)
        assert same or mirrored
        seen.add(mirrored)
    assert seen == {False, True}
    # rotations repeat the edge pixels (no black corners)
    flat = torch.full((1, 1, 32, 32), 0.7)
    rot = BSDiffPairs(flat, flat, augment=True, rotate=30.0, gamma=0.0)[0]["cxr"]
    assert torch.allclose(rot, torch.full_like(rot, 0.7), atol=1e-6)
    assert len(BSDiffPairs(x, x, repeats=3)) == 6


def test_options_defaults_and_model_overrides():
    from cxrdecomp.methods.bsdiff import module

    o = Options()
    assert (o.stage, o.size, o.epochs, o.batch_size, o.lr, o.num_workers, str(o.out)) == (1, 256, 100, 2, 1e-4, 2, "runs/bsdiff")
    assert (o.d_lr, o.ema, o.gen_steps, o.val_steps, o.clahe, o.augment) == (5e-4, 0.995, 20, 10, True, True)
    assert module.model_overrides(o) == {}
    o = Options(channels="16, 32,48", attention_levels="0,0,1", enhancer_channels="32,64", norm_groups=8, res_blocks=2,
                prediction="sample", target="residual", condition="raw+clahe")
    assert module.model_overrides(o) == {
        "channels": [16, 32, 48], "attention_levels": [False, False, True], "enhancer_channels": [32, 64], "norm_num_groups": 8,
        "num_res_blocks": 2, "prediction_type": "sample", "target": "residual", "condition": "raw+clahe",
    }
    build(**module.model_overrides(o))  # the mapped keys are the builder's
    with pytest.raises(ConfigError, match="--attention-levels must be comma-separated integers"):
        module.model_overrides(Options(attention_levels="yes,no"))
    assert methods.train_options("bsdiff") is Options and methods.trainer("bsdiff") is module.train


def test_train_rejects_bad_options_before_training(tmp_path):
    from cxrdecomp.errors import DataNotFoundError
    from cxrdecomp.methods.bsdiff.module import train

    with pytest.raises(ConfigError, match="stage must be 1 or 2, got 3"):
        train(Options(stage=3, data=tmp_path))
    with pytest.raises(DataNotFoundError, match="must hold train/ and val/ folders"):
        train(Options(data=tmp_path / "nothing"))
    _write_pairs(tmp_path / "data", n=1, s=32)
    common = {"data": tmp_path / "data", "size": 32, "accelerator": "cpu", "progress": False, "num_workers": 0}
    with pytest.raises(ConfigError, match="size 40 must be divisible by 16"):
        train(Options(**{**common, "size": 40}, **TINY_OPTS))
    with pytest.raises(CheckpointError, match="stage 2 needs a trained stage-1 checkpoint"):
        train(Options(**common, stage=2, out=tmp_path / "run" / "stage2"))
    with pytest.raises(DataNotFoundError, match="VGG16 weights file .* not found"):
        train(Options(**common, stage=2, perceptual_weights=tmp_path / "vgg16.pth"))


TINY_OPTS = {"channels": "8,8,16,16,16", "attention_levels": "0,0,0,1,1", "norm_groups": 8, "enhancer_channels": "8,8", "res_blocks": 1}


@pytest.mark.slow
def test_train_both_stages_and_resume(tmp_path, capfd, monkeypatch):
    from cxrdecomp.decomposer import Decomposer
    from cxrdecomp.methods.bsdiff import module

    _write_pairs(tmp_path / "data")
    # 3 training pairs × 2 repeats, batch 2: 3 batches per epoch
    common = {"data": tmp_path / "data", "size": 64, "epochs": 1, "repeats": 2, "batch_size": 2, "num_workers": 0, "accelerator": "cpu",
              "progress": False}
    o1 = Options(**common, **TINY_OPTS, stage=1, out=tmp_path / "run" / "stage1", val_steps=2)
    f1 = module.train(o1)
    assert (tmp_path / "run" / "stage1" / "last.ckpt").is_file()
    _, cfg1 = methods.load(f1)
    assert cfg1["method"] == "bsdiff" and cfg1["stage"] == 1 and cfg1["inference"]["enhance"] is False
    assert {"val/bsr", "val/rmae", "val/psnr", "val/ssim", "val/loss"} <= set(cfg1["metrics"])
    assert cfg1["model"] == {"channels": [8, 8, 16, 16, 16], "attention_levels": [False, False, False, True, True], "norm_num_groups": 8,
                             "enhancer_channels": [8, 8], "num_res_blocks": 1}
    assert cfg1["training"]["options"]["stage"] == 1 and cfg1["training"]["global_step"] == 3

    # rerun with one more epoch: it resumes from last.ckpt and trains only the new epoch
    calls = []
    step = module.BSDiffStage1.training_step
    monkeypatch.setattr(module.BSDiffStage1, "training_step", lambda self, batch, i: calls.append(i) or step(self, batch, i))
    capfd.readouterr()
    f1 = module.train(o1.replace(epochs=2))
    assert "resuming from" in capfd.readouterr().err
    net1, cfg1b = methods.load(f1)
    assert len(calls) == 3 and cfg1b["training"]["global_step"] == 6
    assert cfg1b["training"]["elapsed_s"] >= cfg1["training"]["elapsed_s"]  # the time budget continues

    o2 = Options(**common, stage=2, out=tmp_path / "run" / "stage2", gen_steps=2)  # stage 1 from OUT/../stage1/model
    f2 = module.train(o2)
    assert "the perceptual loss term is OFF" in capfd.readouterr().err
    net2, cfg2 = methods.load(f2)
    assert cfg2["stage"] == 2 and cfg2["model"] == cfg1["model"] and cfg2["stage2"]["perceptual"] is False
    assert cfg2["stage2"]["gen_steps"] == 2 and "val/stage1_bsr" in cfg2["metrics"] and "val/bsr" in cfg2["metrics"]
    assert cfg2["training"]["global_step"] == 2 * 3  # manual optimisation: two optimiser steps per batch
    for k, v in net1.unet.state_dict().items():  # stage 2 leaves the stage-1 U-Net alone
        assert torch.equal(v, net2.unet.state_dict()[k]), k
    # the exported default uses the enhancer only if it did not lower validation BSR (Table 2 ablation)
    m = cfg2["metrics"]
    assert cfg2["inference"]["enhance"] is (m["val/bsr"] >= m["val/stage1_bsr"])
    card = (f2 / "MODEL_CARD.md").read_text()
    assert ("enhancer is applied" if cfg2["inference"]["enhance"] else "enhancer is NOT applied") in card
    assert "perceptual term: OFF" in card
    out = Decomposer.from_pretrained(f2, device="cpu", steps=2)(np.full((64, 64), 0.5, np.float32))
    assert out.soft_tissue.shape == (64, 64)
    # rerunning stage 2 resumes and reuses the cached stage-1 outputs
    module.train(o2)
    err = capfd.readouterr().err
    assert "resuming from" in err and "stage-1 DDIM" not in err


# ------------------------------------------------------------------------------------------------
# Regression tests for "stage-1 sampling returns pure noise": an ORACLE noise predictor
# must make every sampler return the known x0 exactly. The oracle reads x_t from input channel 0 and
# the clean target from input channel 1 (the conditioning channel), so a swapped concat order, a
# scheduler built with another β schedule than training, or wrong DDIM timestep spacing all fail here.
# ------------------------------------------------------------------------------------------------


class _Oracle(torch.nn.Module):
    """ε(x_t, t | x0) = (x_t − √ᾱ_t x0) / √(1 − ᾱ_t), with x0 taken from the conditioning channel."""

    def __init__(self, alphas_cumprod):
        super().__init__()
        self.acp = alphas_cumprod

    def forward(self, x, timesteps, context=None):
        assert x.shape[1] == 2, "noisy image and condition must be concatenated channel-wise"
        xt, x0 = x[:, :1], x[:, 1:]
        a = self.acp[timesteps.long().cpu()].view(-1, 1, 1, 1).to(x)
        return (xt - a.sqrt() * x0) / (1 - a).sqrt()


def _target(b=2, s=16, seed=3):
    return torch.rand(b, 1, s, s, generator=torch.Generator().manual_seed(seed)) * 1.8 - 0.9


@pytest.mark.parametrize("sampler,steps", [("ddim", 10), ("ddim", 20), ("ddim", 50), ("ddim", 30), ("ddim", 7), ("ddim", 1),
                                           pytest.param("ddpm", None, marks=pytest.mark.slow)])
def test_oracle_noise_predictor_makes_the_sampler_return_x0(sampler, steps):
    net = build(**TINY)
    x0 = _target()
    oracle = _Oracle(net.scheduler("ddpm").alphas_cumprod)  # the TRAINING schedule
    y = net.sample(x0, steps=steps or 10, sampler=sampler, seed=0, unet=oracle)
    assert y.shape == x0.shape
    tol = 1e-4 if sampler == "ddim" else 2e-3  # DDPM: 1000 stochastic steps, posterior-variance noise cancels only at t=0
    assert (y - x0).abs().max().item() < tol


def test_oracle_through_the_predictor_and_condition_mapping():
    """predict maps display [0,1] → [−1,1] for the condition and back for the output."""
    net = build(**TINY)
    x = (_target() + 1) / 2
    net.unet = _Oracle(net.scheduler("ddpm").alphas_cumprod)
    out = predict(net, x, {"steps": 10, "clahe": False, "enhance": False})["soft_tissue"]
    assert (out - x).abs().max().item() < 1e-4


def test_oracle_noise_predictor_has_zero_training_loss():
    """The training loss concatenates [noisy, condition] in the same order as the sampler."""
    net = build(**TINY)
    x0 = _target()
    net.unet = _Oracle(net.scheduler("ddpm").alphas_cumprod)
    for t in ([0, 999], [50, 500]):
        loss = net.noise_loss(x0, x0, timesteps=torch.tensor(t))
        assert loss.item() < 1e-8


def test_ema_warm_up_forgets_the_initial_weights():
    """A constant decay 0.995 keeps 0.995**n of the random init (16 % after 367 steps): the exported
    EMA U-Net of a short run was far worse than the raw one. With warm-up the init is forgotten."""
    assert ema_decay_at(0, 0.995) == pytest.approx(0.1)
    assert ema_decay_at(10_000, 0.995) == 0.995
    lin = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(lin.weight)
    ema = make_ema(lin, 0.995)
    ema.update_parameters(lin)  # first update copies (0)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    for _ in range(100):
        ema.update_parameters(lin)
    w = ema.module.weight.item()
    assert w > 0.99, w  # without warm-up: 1 − 0.995**100 ≈ 0.39


class _ResidualOracle(torch.nn.Module):
    """Knows the true residual target ``r`` and returns ε, x0 or v for it (``prediction_type``)."""

    def __init__(self, alphas_cumprod, r, kind):
        super().__init__()
        self.acp, self.r, self.kind = alphas_cumprod, r, kind

    def forward(self, x, timesteps, context=None):
        assert x.shape[1] == 3, "raw+clahe condition: noisy target + 2 condition channels"
        xt = x[:, :1]
        a = self.acp[timesteps.long().cpu()].view(-1, 1, 1, 1).to(x)
        eps = (xt - a.sqrt() * self.r) / (1 - a).sqrt()
        return {"epsilon": eps, "sample": self.r, "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * self.r}[self.kind]


@pytest.mark.parametrize("kind", ["epsilon", "sample", "v_prediction"])
def test_residual_target_oracle_round_trip(kind):
    """target='residual': x0 = scale·(S − I); an exact predictor of ε, x0 or v gives back S through
    the sampler, and has zero training loss."""
    net = build(**TINY, prediction_type=kind, target="residual", residual_scale=3.0, condition="raw+clahe")
    cxr, soft = _phantom(b=2, s=32)
    soft_m11 = 2 * soft - 1
    r = net.to_target(soft_m11, cxr)
    assert torch.allclose(r, 3.0 * (soft - cxr)) and torch.allclose(net.from_target(r, cxr), soft_m11, atol=1e-6)
    net.unet = _ResidualOracle(net.scheduler("ddpm").alphas_cumprod, r, kind)
    cond = condition(net, cxr)
    assert cond.shape == (2, 2, 32, 32)
    for steps in (1, 10):
        y = net.sample(cond, steps=steps, sampler="ddim", seed=0, cxr=cxr)
        assert (y - soft_m11).abs().max().item() < 1e-4
    for t in ([0, 999], [50, 500]):
        assert net.noise_loss(soft_m11, cond, timesteps=torch.tensor(t), cxr=cxr).item() < 1e-8
    with pytest.raises(ConfigError, match="needs the radiograph .cxr. to sample"):
        net.sample(cond, steps=2, cxr=None)
    with pytest.raises(ConfigError, match="needs the radiograph .cxr. for its loss"):
        net.noise_loss(soft_m11, cond)


@pytest.mark.parametrize("kw,msg", [({"prediction_type": "x1"}, "unknown prediction_type 'x1'"), ({"target": "bone"}, "unknown target 'bone'"),
                                    ({"condition": "sharp"}, "unknown condition 'sharp'")])
def test_unknown_parametrisation_options_raise(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        build(**TINY, **kw)


def test_untrained_residual_enhancer_is_the_identity():
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    assert torch.equal(Enhancer((8, 8), 2, 1, 8, residual=True)(x), x)
    assert not torch.allclose(Enhancer((8, 8), 2, 1, 8, residual=False)(x), x)


def test_cli_train_bsdiff_maps_its_flags_to_options(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from cxrdecomp.cli import app
    from cxrdecomp.methods.bsdiff import module

    seen = {}
    monkeypatch.setattr(module, "train", lambda o: seen.setdefault("o", o) and tmp_path / "model")
    r = CliRunner().invoke(app, ["train", "bsdiff", "--data", str(tmp_path), "-o", str(tmp_path / "run"), "--stage", "2", "--stage1",
                                 str(tmp_path / "s1"), "--channels", "16,32", "--attention-levels", "0,1", "--no-clahe", "--gen-steps", "5"])
    assert r.exit_code == 0, r.output
    o = seen["o"]
    assert isinstance(o, Options) and (o.stage, o.stage1, o.out, o.gen_steps, o.clahe) == (2, tmp_path / "s1", tmp_path / "run", 5, False)
    assert module.model_overrides(o) == {"channels": [16, 32], "attention_levels": [False, True]}
