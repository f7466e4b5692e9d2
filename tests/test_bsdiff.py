"""BS-Diff (issue 7): noise schedule, schedulers, loss decrease, seeded sampling, checkpoint round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxrdecomp import checkpoint
from cxrdecomp.errors import ConfigError, InputError
from cxrdecomp.models import bsdiff
from cxrdecomp.methods.bsdiff.network import BETA_END, BETA_START, build_bsdiff, cosine_interpolated_betas, make_scheduler, predict_bsdiff

TINY = dict(channels=(8, 8, 16, 16, 16), norm_num_groups=8, enhancer_channels=(8, 8), enhancer_latent_channels=2, enhancer_res_blocks=1)


@pytest.fixture(autouse=True)
def _threads():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _tiny(**kw):
    """Tiny BS-Diff whose U-Net output layer is randomised (MONAI zero-initialises it, which makes an
    untrained sampler return sign(noise) whatever the number of steps)."""
    net = build_bsdiff(**{**TINY, **kw})
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
    with pytest.raises(ConfigError):
        cosine_interpolated_betas(1)


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
    with pytest.raises(ConfigError):
        make_scheduler("ddim", 0)
    with pytest.raises(ConfigError):
        make_scheduler("euler", 10)
    with pytest.raises(ConfigError):
        make_scheduler("ddpm", schedule="nope")


def test_clahe_range_and_local_contrast():
    x = 0.5 + 0.05 * torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    y = bsdiff.clahe(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert 0 <= y.min() and y.max() <= 1
    assert y.std() > 3 * x.std()


def test_few_steps_lower_the_noise_loss_on_a_fixed_batch():
    torch.manual_seed(0)
    net = _tiny()
    x, soft = _phantom(2, 32)
    cond, target = net.condition(x), 2 * soft - 1
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
    assert losses[0] == pytest.approx(losses[0])  # finite
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
    a = predict_bsdiff(net, x, {**opts, "seed": 7})["soft_tissue"]
    torch.randn(10)  # global RNG state must not matter
    b = predict_bsdiff(net, x, {**opts, "seed": 7})["soft_tissue"]
    c = predict_bsdiff(net, x, {**opts, "seed": 8})["soft_tissue"]
    assert a.shape == x.shape and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_bad_size_and_sampler_raise():
    net = build_bsdiff(**TINY).eval()
    with pytest.raises(InputError):
        predict_bsdiff(net, torch.rand(1, 1, 40, 40), {"steps": 2})
    with pytest.raises(ConfigError):
        predict_bsdiff(net, torch.rand(1, 1, 32, 32), {"steps": 2, "sampler": "bogus"})
    with pytest.raises(ConfigError):
        build_bsdiff(channels=(8, 8, 16), attention_levels=(False, True))


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
    ref = predict_bsdiff(net.half().float(), x, dec.options)["soft_tissue"]
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
    net = build_bsdiff()
    n = sum(p.numel() for p in net.parameters())
    assert n * 2 / 1e6 <= 20.0  # float16 storage, both stages in one checkpoint


def test_ms_ssim_loss_small_images():
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    assert bsdiff.ms_ssim_loss(x, x).item() == pytest.approx(0.0, abs=1e-5)
    assert bsdiff.ms_ssim_loss(x, 1 - x).item() > 0.1
    with pytest.raises(ConfigError):
        bsdiff.ms_ssim_loss(x[..., :32, :32], x[..., :32, :32])


def _write_pairs(root, n=3, s=64):
    from PIL import Image

    for split in ("train", "val"):
        for k in ("cxr", "soft"):
            (root / split / k).mkdir(parents=True)
        for i in range(n):
            x, soft = _phantom(1, s, seed=i)
            Image.fromarray((x[0, 0].numpy() * 255).astype(np.uint8)).save(root / split / "cxr" / f"p{i}.png")
            Image.fromarray((soft[0, 0].numpy() * 255).astype(np.uint8)).save(root / split / "soft" / f"p{i}.png")


def test_train_both_stages_smoke_and_resume(tmp_path):
    from cxrdecomp.decomposer import Decomposer

    _write_pairs(tmp_path / "data")
    common = {"data": tmp_path / "data", "size": 64, "epochs": 1, "batch_size": 2, "num_workers": 0, "accelerator": "cpu",
              "progress": False, "model": dict(TINY)}
    f1 = bsdiff.train_bsdiff({**common, "stage": 1, "out": tmp_path / "run" / "stage1", "val_steps": 2})
    assert (tmp_path / "run" / "stage1" / "last.ckpt").is_file()
    _, cfg1 = checkpoint.load(f1)
    assert cfg1["method"] == "bsdiff" and cfg1["inference"]["enhance"] is False and "val/bsr" in cfg1["metrics"]
    f2 = bsdiff.train_bsdiff({**common, "stage": 2, "out": tmp_path / "run" / "stage2", "gen_steps": 2, "model": {}})
    _, cfg2 = checkpoint.load(f2)
    assert cfg2["stage2"]["perceptual"] is False and "val/stage1_bsr" in cfg2["metrics"]
    # the exported default uses the enhancer only if it did not lower validation BSR (Table 2 ablation)
    m = cfg2["metrics"]
    assert cfg2["inference"]["enhance"] is (m["val/bsr"] >= m["val/stage1_bsr"])
    assert ("enhancer is applied" if cfg2["inference"]["enhance"] else "enhancer is NOT applied") in (f2 / "MODEL_CARD.md").read_text()
    assert "perceptual term: OFF" in (f2 / "MODEL_CARD.md").read_text()
    out = Decomposer.from_pretrained(f2, device="cpu", steps=2)(np.full((64, 64), 0.5, np.float32))
    assert out.soft_tissue.shape == (64, 64)
    with pytest.raises(ConfigError):
        bsdiff.train_bsdiff({**common, "bogus": 1})


# ------------------------------------------------------------------------------------------------
# Regression tests for "stage-1 sampling returns pure noise" (issue 7): an ORACLE noise predictor
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


@pytest.mark.parametrize("sampler,steps", [("ddim", 10), ("ddim", 20), ("ddim", 50), ("ddim", 30), ("ddim", 7), ("ddim", 1), ("ddpm", None)])
def test_oracle_noise_predictor_makes_the_sampler_return_x0(sampler, steps):
    net = build_bsdiff(**TINY)
    x0 = _target()
    oracle = _Oracle(net.scheduler("ddpm").alphas_cumprod)  # the TRAINING schedule
    y = net.sample(x0, steps=steps or 10, sampler=sampler, seed=0, unet=oracle)
    assert y.shape == x0.shape
    tol = 1e-4 if sampler == "ddim" else 2e-3  # DDPM: 1000 stochastic steps, posterior-variance noise cancels only at t=0
    assert (y - x0).abs().max().item() < tol


def test_oracle_through_the_predictor_and_condition_mapping():
    """predict_bsdiff maps display [0,1] → [−1,1] for the condition and back for the output."""
    net = build_bsdiff(**TINY)
    x = (_target() + 1) / 2
    net.unet = _Oracle(net.scheduler("ddpm").alphas_cumprod)
    out = predict_bsdiff(net, x, {"steps": 10, "clahe": False, "enhance": False})["soft_tissue"]
    assert (out - x).abs().max().item() < 1e-4


def test_oracle_noise_predictor_has_zero_training_loss():
    """The training loss concatenates [noisy, condition] in the same order as the sampler."""
    net = build_bsdiff(**TINY)
    x0 = _target()
    net.unet = _Oracle(net.scheduler("ddpm").alphas_cumprod)
    for t in ([0, 999], [50, 500]):
        loss = net.noise_loss(x0, x0, timesteps=torch.tensor(t))
        assert loss.item() < 1e-8


def test_ema_warm_up_forgets_the_initial_weights():
    """A constant decay 0.995 keeps 0.995**n of the random init (16 % after 367 steps): the exported
    EMA U-Net of a short run was far worse than the raw one. With warm-up the init is forgotten."""
    assert bsdiff.ema_decay_at(0, 0.995) == pytest.approx(0.1)
    assert bsdiff.ema_decay_at(10_000, 0.995) == 0.995
    lin = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(lin.weight)
    ema = bsdiff._ema(lin, 0.995)
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
    net = build_bsdiff(**TINY, prediction_type=kind, target="residual", residual_scale=3.0, condition="raw+clahe")
    cxr, soft = _phantom(b=2, s=32)
    soft_m11 = 2 * soft - 1
    r = net.to_target(soft_m11, cxr)
    assert torch.allclose(r, 3.0 * (soft - cxr)) and torch.allclose(net.from_target(r, cxr), soft_m11, atol=1e-6)
    net.unet = _ResidualOracle(net.scheduler("ddpm").alphas_cumprod, r, kind)
    cond = net.condition(cxr)
    assert cond.shape == (2, 2, 32, 32)
    for steps in (1, 10):
        y = net.sample(cond, steps=steps, sampler="ddim", seed=0, cxr=cxr)
        assert (y - soft_m11).abs().max().item() < 1e-4
    for t in ([0, 999], [50, 500]):
        assert net.noise_loss(soft_m11, cond, timesteps=torch.tensor(t), cxr=cxr).item() < 1e-8
    with pytest.raises(ConfigError):
        net.sample(cond, steps=2, cxr=None)
    with pytest.raises(ConfigError):
        net.noise_loss(soft_m11, cond)


def test_unknown_parametrisation_options_raise():
    for kw in ({"prediction_type": "x1"}, {"target": "bone"}, {"condition": "sharp"}):
        with pytest.raises(ConfigError):
            build_bsdiff(**TINY, **kw)


def test_untrained_residual_enhancer_is_the_identity():
    from cxrdecomp.methods.bsdiff.network import Enhancer

    x = torch.rand(2, 1, 32, 32) * 2 - 1
    assert torch.equal(Enhancer((8, 8), 2, 1, 8, residual=True)(x), x)
    assert not torch.allclose(Enhancer((8, 8), 2, 1, 8, residual=False)(x), x)
