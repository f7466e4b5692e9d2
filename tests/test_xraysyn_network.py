"""XraySyn networks and losses (``cxrdecomp.methods.xraysyn``): parameter counts of the paper's and the small
configurations, shapes and the material composite of the 3DPN, the per-image 1×1 filter, the zero-initialised
2DRN residual, LSGAN values, the 3DPN loss at the ground truth, and a one-sample overfit of a tiny 3DPN."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cxrdecomp.errors import InputError
from cxrdecomp.methods.xraysyn.losses import (
    lsgan_d_loss,
    lsgan_g_loss,
    prior_loss,
    refine_loss,
    xray_loss,
)
from cxrdecomp.methods.xraysyn.network import (
    RDN,
    FilterGenerator,
    PatchDiscriminator,
    PriorNet3D,
    RefineNet2D,
    apply_filter,
    build_discriminator,
    build_prior,
    build_refine,
    count_parameters,
)

torch.set_num_threads(1)


def _near(n: int, expected: float, rel: float) -> bool:
    return abs(n - expected) <= rel * expected


# --- parameter counts (meta device: nothing allocated) ------------------------------------------


def test_full_parameter_counts_match_paper():
    """Paper / authors' code: 3DPN 111.0 M, RDN 22.1 M, M 100.7 M. Reproduced exactly by the layouts:
    3DPN 111,012,579, RDN 22,122,242, M 100,665,600 (2DRN = RDN + M = 122,787,842); PatchGAN 2,762,689."""
    with torch.device("meta"):
        prior = build_prior(**PriorNet3D.full_config())
        refine = build_refine(**RefineNet2D.full_config())
        disc = build_discriminator(**PatchDiscriminator.full_config())
    assert _near(count_parameters(prior), 111.0e6, 0.01)
    assert _near(count_parameters(refine.rdn), 22.1e6, 0.01)
    assert _near(count_parameters(refine.generator), 100.7e6, 0.01)
    assert count_parameters(prior) == 111_012_579
    assert count_parameters(refine.rdn) == 22_122_242
    assert count_parameters(refine.generator) == 100_665_600
    assert count_parameters(refine) == 122_787_842
    assert count_parameters(disc) == 2_762_689


def test_small_parameter_counts():
    """Small configurations (targets 1.8 M / 1.6 M / 1.6 M within 10 %): 3DPN-S 1,760,467, RDN-S 1,672,322
    (4.5 % above 1.6 M), M-S 1,609,920."""
    with torch.device("meta"):
        prior = build_prior(**PriorNet3D.small_config())
        refine = build_refine(**RefineNet2D.small_config())
    assert _near(count_parameters(prior), 1.8e6, 0.10)
    assert _near(count_parameters(refine.rdn), 1.6e6, 0.10)
    assert _near(count_parameters(refine.generator), 1.6e6, 0.10)
    assert (count_parameters(prior), count_parameters(refine.rdn), count_parameters(refine.generator)) == (1_760_467, 1_672_322, 1_609_920)


def test_learned_fusion_adds_one_1x1_conv():
    with torch.device("meta"):
        dyn, learned = RDN(features=32, growth=32, n_blocks=2, n_layers=2), RDN(features=32, growth=32, n_blocks=2, n_layers=2, dynamic=False)
    assert count_parameters(learned) - count_parameters(dyn) == 32 * 32 + 32


# --- 3DPN ------------------------------------------------------------------------------------------


def test_prior_small_shapes_and_composite():
    torch.manual_seed(0)
    net = build_prior(**PriorNet3D.small_config())
    with torch.no_grad():
        out = net(torch.rand(1, 1, 64, 64, 64))
    assert set(out) == {"mask_logit", "mask", "bone", "tissue", "volume"}
    for v in out.values():
        assert v.shape == (1, 1, 64, 64, 64)
    m = out["mask"]
    torch.testing.assert_close(m, torch.sigmoid(out["mask_logit"]))
    torch.testing.assert_close(out["volume"], m * out["bone"] + (1 - m) * out["tissue"])
    assert (out["bone"] >= -1000).all() and (out["bone"] <= 4000).all()
    assert out["bone"].std() > 0 and not torch.allclose(out["bone"], out["tissue"])


@pytest.mark.parametrize("shape", [(1, 1, 60, 60, 60), (1, 1, 64, 64), (1, 2, 64, 64, 64), (1, 1, 64, 64, 48)])
def test_prior_wrong_shape_raises(shape):
    net = PriorNet3D(**PriorNet3D.small_config())
    with pytest.raises(InputError, match="3DPN"):
        net(torch.zeros(shape))


def test_tiny_prior_overfits_one_sample():
    """16³ phantom (air / tissue 40 HU / bone 1000 HU), base 4, 2 levels: 200 Adam steps, L1 < 10 % of the first."""
    torch.manual_seed(0)
    s = 16
    z, y, x = torch.meshgrid(*(torch.linspace(-1, 1, s),) * 3, indexing="ij")
    body = ((x**2 + y**2 + z**2) < 0.81).float()
    bone = (((x - 0.3) ** 2 + y**2 + z**2) < 0.12).float()
    vol = (-1000 + 1040 * body + 960 * bone)[None, None]
    vin = (vol + 1000) / 2000 + 0.05 * torch.randn_like(vol)
    net = PriorNet3D(base=4, levels=2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(200):
        loss = (net(vin)["volume"] - vol).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]


# --- per-image filter, RDN, 2DRN --------------------------------------------------------------------


def test_generated_filter_equals_conv2d_per_image():
    torch.manual_seed(0)
    gen = FilterGenerator(1, (16, 32, 64, 64, 128, 128, 128), 32, 32)
    with torch.no_grad():
        w = gen(torch.rand(2, 1, 64, 64))
    assert w.shape == (2, 32, 32)
    assert (w[0] - w[1]).abs().max() > 1e-6  # one filter per image
    x = torch.randn(2, 32, 8, 8)
    out = apply_filter(x, w)
    for b in range(2):
        torch.testing.assert_close(out[b : b + 1], F.conv2d(x[b : b + 1], w[b, :, :, None, None]), atol=1e-5, rtol=1e-5)
    with pytest.raises(InputError):
        apply_filter(x, w[:, :, :16])


def test_rdn_uses_the_given_filter_and_requires_it():
    torch.manual_seed(0)
    rdn = RDN(features=8, growth=8, n_blocks=2, n_layers=2)
    x, w = torch.randn(1, 2, 8, 8), torch.randn(1, 8, 8)
    with torch.no_grad():
        y = rdn(x, w)
        assert y.shape == (1, 2, 16, 16)
        assert (rdn(x, 2 * w) - y).abs().max() > 1e-4
    with pytest.raises(InputError, match="filter"):
        rdn(x)
    with pytest.raises(InputError, match="filter"):
        RDN(features=8, growth=8, n_blocks=2, n_layers=2, dynamic=False)(x, w)


def test_refine_starts_at_upsampled_input_and_zero_init_is_trainable():
    torch.manual_seed(0)
    net = RefineNet2D(features=8, growth=8, n_blocks=2, n_layers=2, generator_channels=(8, 8, 8, 8, 8, 8, 8))
    t_ct, image = torch.rand(2, 2, 16, 16) * 5, torch.rand(2, 1, 32, 32)
    up = F.interpolate(t_ct, scale_factor=2, mode="bilinear", align_corners=False)
    out = net(t_ct, image)
    assert out.shape == (2, 2, 32, 32)
    torch.testing.assert_close(out, up, atol=1e-6, rtol=0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss = (out - torch.rand_like(out)).abs().mean()
    loss.backward()
    opt.step()
    with torch.no_grad():
        assert (net(t_ct, image) - up).abs().max() > 1e-6
    with pytest.raises(InputError, match="t_CT"):
        net(torch.rand(2, 1, 16, 16), image)
    with pytest.raises(InputError, match="batch"):
        net(t_ct, image[:1])


def test_discriminator_patch_shape_and_too_small_input():
    torch.manual_seed(0)
    d = PatchDiscriminator(filters=8)
    with torch.no_grad():
        assert d(torch.rand(1, 1, 64, 64)).shape == (1, 1, 6, 6)
    with pytest.raises(InputError, match="at least 24"):
        d(torch.rand(1, 1, 16, 16))


# --- losses ----------------------------------------------------------------------------------------


def test_lsgan_values_and_gradients():
    ones, zeros, half = torch.ones(2, 1, 6, 6), torch.zeros(2, 1, 6, 6), torch.full((2, 1, 6, 6), 0.5)
    assert lsgan_d_loss(ones, zeros).item() == 0.0
    assert lsgan_d_loss(half, half).item() == pytest.approx(0.25)
    assert lsgan_g_loss(half).item() == pytest.approx(0.125)
    assert lsgan_g_loss(ones).item() == 0.0
    real, fake, fake_g = (half.clone().requires_grad_() for _ in range(3))
    lsgan_d_loss(real, fake).backward()
    lsgan_g_loss(fake_g).backward()
    n = real.numel()
    torch.testing.assert_close(real.grad, torch.full_like(real, -0.5 / n))  # d/dD ½·mean (D − 1)²
    torch.testing.assert_close(fake.grad, torch.full_like(fake, 0.5 / n))  # d/dD ½·mean D²
    torch.testing.assert_close(fake_g.grad, torch.full_like(fake, -0.5 / n))


def test_prior_loss_zero_at_ground_truth_positive_when_perturbed():
    torch.manual_seed(0)
    mask = (torch.rand(1, 1, 8, 8, 8) > 0.5).float()
    vol = -1000 + 2000 * torch.rand(1, 1, 8, 8, 8)
    target = {"volume": vol, "mask": mask}
    pred = {"volume": vol.clone(), "mask_logit": 20.0 * (2 * mask - 1)}
    i_in, t_gt = torch.rand(1, 1, 16, 16), {"bone": torch.rand(1, 1, 16, 16), "tissue": torch.rand(1, 1, 16, 16)}
    terms = [xray_loss(i_in.clone(), i_in, {k: v.clone() for k, v in t_gt.items()}, t_gt) for _ in range(2)]
    loss, parts = prior_loss(pred, target, xray_terms=terms)
    assert parts["ct"].item() == 0.0 and parts["xray"].item() == 0.0
    assert 0.0 < parts["mask"].item() < 1e-6
    assert loss.item() < 1e-6
    bad, _ = prior_loss({**pred, "volume": vol + 50.0}, target)
    assert bad.item() == pytest.approx(50.0 / 5000.0, rel=1e-4)
    bad_xray = xray_loss(i_in + 0.1, i_in, {"bone": t_gt["bone"], "tissue": t_gt["tissue"] + 0.2}, t_gt)
    assert bad_xray.item() == pytest.approx(0.3, rel=1e-4)
    with pytest.raises(InputError, match="tissue"):
        xray_loss(i_in, i_in, {"bone": t_gt["bone"]}, t_gt)
    with pytest.raises(InputError, match="volume"):
        prior_loss({**pred, "volume": vol[..., :4]}, target)


def test_refine_loss_terms():
    i = torch.rand(1, 1, 32, 32)
    d_fake = torch.full((1, 1, 6, 6), 0.5)
    loss, parts = refine_loss(i + 0.1, i, d_fake)
    assert loss.item() == pytest.approx(0.1 + 0.02 * 0.125, rel=1e-4)
    assert set(parts) == {"l1", "adv"}
    bone_t = torch.rand(1, 1, 16, 16)
    bone_r = F.interpolate(bone_t, scale_factor=2, mode="nearest") + 1.0  # avg-pools back to bone_t + 1
    loss2, parts2 = refine_loss(i, i, d_fake, bone_r, bone_t)
    assert parts2["bone"].item() == pytest.approx(1.0, rel=1e-5)
    assert loss2.item() == pytest.approx(0.02 * 0.125 + 0.005, rel=1e-4)
    with pytest.raises(ValueError):
        refine_loss(i, i, d_fake, bone_r)
    with pytest.raises(InputError):
        refine_loss(i, i, d_fake, bone_r[..., :30, :30], bone_t)
