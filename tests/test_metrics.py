"""cxrdecomp.metrics: hand-computed values on tiny arrays, cross-checks against scikit-image,
pytorch-msssim and MONAI, error paths, and the identity baseline of the data README on bse-jsrt/val."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cxrdecomp import metrics as M
from cxrdecomp.errors import ConfigError, InputError


@pytest.fixture
def noisy_pair():
    rng = np.random.default_rng(0)
    a = rng.random((70, 64))
    b = np.clip(a + 0.1 * rng.standard_normal(a.shape), 0, 1)
    return a, b


def test_pixel_errors_hand_computed():
    p = np.array([[0.0, 1.0], [2.0, 3.0]])
    t = np.zeros((2, 2))
    assert M.mse(p, t) == pytest.approx(3.5)
    assert M.mae(p, t) == pytest.approx(1.5)
    assert M.rmse(p, t) == pytest.approx(math.sqrt(3.5))
    assert M.psnr(p, t, data_range=3.0) == pytest.approx(10 * math.log10(9 / 3.5))
    mask = np.array([[1, 1], [0, 0]])
    assert M.mse(p, t, mask) == pytest.approx(0.5)


def test_uint8_differences_do_not_wrap():
    a = np.array([[10]], dtype=np.uint8)
    b = np.array([[20]], dtype=np.uint8)
    assert M.mse(a, b) == pytest.approx(100.0)  # not (10 - 20) mod 256 = 246 -> 60516
    assert M.psnr(a, b, data_range=255) == pytest.approx(10 * math.log10(255**2 / 100))


def test_psnr_needs_explicit_data_range(noisy_pair):
    a, b = noisy_pair
    with pytest.raises(TypeError):
        M.psnr(a, b)  # keyword-only, no default
    with pytest.raises(ConfigError):
        M.psnr(a, b, data_range=None)
    with pytest.raises(ConfigError):
        M.ssim(a, b, data_range=0)
    assert M.psnr(a, a, data_range=1) == math.inf


def test_batch_returns_per_image_tensor(noisy_pair):
    a, b = noisy_pair
    x = torch.tensor(np.stack([a, b]))[:, None]
    y = torch.tensor(np.stack([b, b]))[:, None]
    v = M.psnr(x, y, data_range=1.0)
    assert isinstance(v, torch.Tensor) and v.shape == (2,)
    assert v[0] == pytest.approx(M.psnr(a, b, data_range=1.0))
    assert v[1] == math.inf
    assert isinstance(M.mse(a, b), float)


def test_shape_mismatch_is_an_input_error():
    with pytest.raises(InputError, match="shape"):
        M.mse(np.zeros((4, 4)), np.zeros((4, 5)))


def test_psnr_and_ssim_match_scikit_image(noisy_pair):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a, b = noisy_pair
    assert M.psnr(a, b, data_range=1) == pytest.approx(peak_signal_noise_ratio(b, a, data_range=1), rel=1e-12)
    ref_g = structural_similarity(b, a, data_range=1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert M.ssim(a, b, data_range=1) == pytest.approx(ref_g, abs=1e-10)
    assert M.ssim(a, b, data_range=1, gaussian=False) == pytest.approx(structural_similarity(b, a, data_range=1), abs=1e-10)
    a8, b8 = (a * 255).round().astype(np.uint8), (b * 255).round().astype(np.uint8)
    assert M.ssim(a8, b8, data_range=255, gaussian=False) == pytest.approx(
        structural_similarity(b8, a8, data_range=255), abs=1e-10
    )
    assert M.ssim(a, a, data_range=1) == pytest.approx(1.0)


def test_ms_ssim_matches_pytorch_msssim_and_monai():
    import pytorch_msssim
    from monai.metrics import MultiScaleSSIMMetric

    rng = np.random.default_rng(1)
    a = rng.random((176, 192))
    b = np.clip(a + 0.05 * rng.standard_normal(a.shape), 0, 1)
    ta, tb = torch.tensor(a)[None, None], torch.tensor(b)[None, None]
    ours = M.ms_ssim(a, b, data_range=1.0)
    assert ours == pytest.approx(pytorch_msssim.ms_ssim(ta, tb, data_range=1.0).item(), abs=1e-5)
    monai = MultiScaleSSIMMetric(spatial_dims=2, data_range=1.0)(tb.float(), ta.float()).item()
    assert ours == pytest.approx(monai, abs=1e-4)
    assert M.ms_ssim(a, a, data_range=1.0) == pytest.approx(1.0)


def test_ms_ssim_small_images_are_refused_clearly():
    a = np.random.default_rng(2).random((64, 64))
    assert M.ms_ssim_min_size() == 161
    with pytest.raises(InputError, match="161"):
        M.ms_ssim(a, a, data_range=1.0)
    assert M.ms_ssim(a, a, data_range=1.0, weights=M.MS_SSIM_WEIGHTS[:3]) == pytest.approx(1.0)


def test_dice_hand_computed():
    a = np.array([[1, 1], [0, 0]])
    b = np.array([[1, 0], [0, 0]])
    assert M.dice(a, b) == pytest.approx(2 / 3)
    assert M.dice(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0
    assert M.dice(a.astype(bool), a.astype(bool)) == 1.0


def test_bsr_identity_zero_truth_one_and_hand_value():
    rng = np.random.default_rng(3)
    soft = rng.random((32, 32)) * 0.5
    image = soft + rng.random((32, 32)) * 0.3
    assert M.bsr(image, soft, image) == pytest.approx(0.0)
    assert M.bsr(soft, soft, image) == pytest.approx(1.0)
    # I = 1, S = 0, S^ = 0.5 on two pixels: 1 - (0.25 + 0.25) / (1 + 1) = 0.75
    assert M.bsr(np.full((1, 2), 0.5), np.zeros((1, 2)), np.ones((1, 2))) == pytest.approx(0.75)
    # inside a mask only the masked pixels count
    p = np.array([[0.5, 1.0]])
    assert M.bsr(p, np.zeros((1, 2)), np.ones((1, 2)), mask=np.array([[1, 0]])) == pytest.approx(0.75)
    # nothing to suppress -> NaN
    assert math.isnan(M.bsr(soft, soft, soft))


def _bsldm_reference(cxr, gt, bs):
    """Transcription of cal_BSR in diaoquesang/BS-LDM BS-LDM/metrics.py (images already /255, no resize)."""
    bone = cxr - gt
    bs = bs + np.average(gt - bs)
    bias = gt - bs
    bias[bias < 0] = 0
    return 1 - np.sum(bias**2) / np.sum(bone**2)


def test_bsr_bsldm_matches_the_published_code_and_differs_from_bsr():
    rng = np.random.default_rng(4)
    gt = rng.integers(0, 200, (40, 40)).astype(np.float64) / 255
    cxr = np.clip(gt + rng.integers(0, 50, (40, 40)) / 255, 0, 1)
    pred = np.clip(gt + rng.normal(0, 0.05, gt.shape) + 0.02, 0, 1)
    assert M.bsr_bsldm(pred, gt, cxr) == pytest.approx(_bsldm_reference(cxr, gt, pred), rel=1e-12)
    # a constant offset is forgiven entirely, unlike in BSR
    assert M.bsr_bsldm(gt + 0.1, gt, cxr) == pytest.approx(1.0)
    assert M.bsr(gt + 0.1, gt, cxr) < 1.0
    # identity does not score 0 under this definition
    assert M.bsr_bsldm(cxr, gt, cxr) > M.bsr(cxr, gt, cxr) == pytest.approx(0.0)


def test_rmae_hand_computed():
    b = np.array([[0.0, 1.0]])
    bh = np.array([[0.5, 1.0]])
    assert M.rmae(bh, b) == pytest.approx(0.25)  # mean |diff| 0.25 / span 1
    assert M.rmae(bh, b, data_range=2.0) == pytest.approx(0.125)
    assert M.rmae(b, b) == 0.0


@pytest.mark.data
def test_identity_baseline_of_the_data_readme():
    """README: returning the radiograph scores PSNR 38.44 dB, SSIM 0.9910 on bse-jsrt/val (8-bit, 1024²).

    Per-image PSNR averaged over the 12 pairs; SSIM with scikit-image's default (7x7 uniform) window.
    data_range = 1 on images /255 is the same as data_range = 255 on the 8-bit values."""
    from PIL import Image

    from cxrdecomp.data.pairs import default_bse_jsrt, list_pairs

    root = default_bse_jsrt() / "val"
    if not root.is_dir():
        pytest.skip(f"bse-jsrt data not found at {root} (set CXRDECOMP_BSE_JSRT)")
    psnr, psnr255, ssim7 = [], [], []
    for c, s in list_pairs(root):
        i8, s8 = np.asarray(Image.open(c)), np.asarray(Image.open(s))
        assert i8.dtype == np.uint8 and i8.shape == (1024, 1024)
        psnr.append(M.psnr(i8 / 255.0, s8 / 255.0, data_range=1.0))
        psnr255.append(M.psnr(i8, s8, data_range=255))
        ssim7.append(M.ssim(i8 / 255.0, s8 / 255.0, data_range=1.0, gaussian=False))
    assert len(psnr) == 12
    assert round(float(np.mean(psnr)), 2) == 38.44
    assert np.mean(psnr255) == pytest.approx(np.mean(psnr), rel=1e-12)
    assert round(float(np.mean(ssim7)), 4) == 0.9910


def test_tone_matched_bsr():
    g = torch.Generator().manual_seed(0)
    s = torch.rand(2, 1, 32, 32, generator=g)  # the truth
    bone = torch.zeros_like(s)
    bone[..., 8:12, :] = 0.3
    i = s + bone  # the radiograph
    x = 2.0 * s + 3.0
    assert torch.allclose(M.tone_match(x, s), s, atol=1e-6)  # a linear tone is undone exactly
    assert torch.allclose(M.tone_match(torch.full_like(s, 4.0), s), s.mean(dim=(1, 2, 3), keepdim=True).expand_as(s))
    identity = M.bsr_tone_matched(i, s, i)
    assert identity.abs().max() < 1e-9
    perfect_other_tone = 0.5 * s + 0.1  # right anatomy, other tone: raw BSR punishes it, tone-matched does not
    assert (M.bsr(perfect_other_tone, s, i) < 0).all()
    assert (M.bsr_tone_matched(perfect_other_tone, s, i) - 1).abs().max() < 1e-9
    half = s + 0.5 * bone
    tm = M.bsr_tone_matched(half, s, i)
    assert ((tm > 0.5) & (tm < 0.9)).all()  # half the bone left: between identity and perfect
    assert isinstance(M.bsr_tone_matched(half[0, 0], s[0, 0], i[0, 0]), float)
