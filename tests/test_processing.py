"""The CR/DX "for presentation" processing chain of the realistic simulation (cxrdecomp.simulate.processing)."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from cxrdecomp.errors import ConfigError, InputError
from cxrdecomp.simulate.processing import (
    ALLOWED_BITS,
    NONE,
    PRESENTATION,
    ProcessingParams,
    ProcessingRanges,
    apply_processing,
    draw_processing,
)
from cxrdecomp.simulate.render import display_window, to_display

ALL_ON = ProcessingParams(
    window=(0.01, 0.99), mce_gains=(0.8, 0.4), mce_sigmas=(0.01, 0.06), drc=0.5, drc_sigma=0.1,
    tone_center=0.45, tone_width=0.2, gamma=1.2, clahe_clip=0.01, clahe_tiles=4, bits=10, marker="R", marker_corner=3,
)


def _chest(seed: int, size: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    """A chest-like pair of line-integral images ``(total, soft)`` ``(1, 1, S, S)``: body, two lungs, ribs and spine."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    body = np.clip(1 - ((xx - 0.5) / 0.45) ** 2 - ((yy - 0.55) / 0.6) ** 2, 0, None) ** 0.5 * 3.0
    for cx in (0.3, 0.7):
        body -= 1.5 * np.clip(1 - ((xx - cx) / 0.15) ** 2 - ((yy - 0.5) / 0.3) ** 2, 0, None) ** 0.5
    soft = np.clip(body, 0, None) + 0.1 * gaussian_filter(rng.standard_normal((size, size)), 2)
    ribs = (np.sin(2 * np.pi * (yy * 7 + 0.3 * np.abs(xx - 0.5) + rng.uniform())) > 0.6) * (body > 0.5) * 0.4
    spine = (np.abs(xx - 0.5) < 0.04) * (body > 0) * 0.8
    bone = gaussian_filter(ribs + spine, 1.0)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]
    return t(np.clip(soft, 0, None) + bone), t(np.clip(soft, 0, None))


def _low_contrast(size: int, seed: int = 0) -> torch.Tensor:
    """``(1, 1, S, S)`` smooth image mostly in [0.35, 0.65], with one pixel at 0 and one at 1 (so the window (0, 1) is the identity)."""
    rng = np.random.default_rng(seed)
    img = gaussian_filter(rng.standard_normal((size, size)), size / 24) + np.linspace(-1, 1, size)[None, :] * 0.02
    img = (img - img.min()) / (img.max() - img.min())
    img = 0.35 + 0.3 * img
    img.flat[0], img.flat[-1] = 0.0, 1.0
    return torch.from_numpy(img.astype(np.float32))[None, None]


def _entropy(x: torch.Tensor, bins: int = 64) -> float:
    h = torch.histc(x.flatten(), bins=bins, min=0.0, max=1.0)
    p = h[h > 0] / h.sum()
    return float(-(p * p.log2()).sum())


# ------------------------------------------------------------------------------------------ one fixed function
def test_other_rows_do_not_change_a_row_and_the_reference_fixes_the_function():
    total, soft = _chest(0)
    third, _ = _chest(1)
    field = torch.zeros(96, 96, dtype=torch.bool)
    field[4:-4, 6:-6] = True
    for f in (None, field):
        rows = torch.cat([total, soft])
        before = rows.clone()
        pair = apply_processing(rows, ALL_ON, field=f)
        assert torch.equal(rows, before)  # the input is not modified in place
        more = apply_processing(torch.cat([total, third, soft, total]), ALL_ON, field=f)
        moved = apply_processing(torch.cat([third, soft, total]), ALL_ON, field=f, reference=2)
        assert (pair[1] - more[2]).abs().max() <= 1e-6
        assert (pair[1] - moved[1]).abs().max() <= 1e-6
        assert (pair[0] - moved[2]).abs().max() <= 1e-6
        # the soft row processed as its own reference: a different (adaptive) function
        alone = apply_processing(soft, ALL_ON, field=f)
        assert (pair[1] - alone[0]).abs().mean() > 0.01
    # the bone image is zero far from bone in the linear stages: with window + MCE + DRC only, a row with one
    # small bone disk and the same row without it agree where the disk is further away than the blurs reach
    _, soft = _chest(2)
    yy, xx = np.mgrid[0:96, 0:96]
    dist = np.hypot(yy - 25, xx - 25)
    disk = torch.from_numpy((dist < 5).astype(np.float32))[None, None]
    linear = ProcessingParams(window=(0.0, 1.0), mce_gains=(0.5,), mce_sigmas=(0.01,), drc=0.3, drc_sigma=0.04)
    out = apply_processing(torch.cat([soft + disk, soft]), linear)
    far = torch.from_numpy(dist > 45)
    assert far.sum() > 1000
    assert float((out[0, 0] - out[1, 0])[far].abs().max()) < 1e-4
    assert float((out[0, 0] - out[1, 0])[torch.from_numpy(dist < 4)].min()) > 0.05


# ------------------------------------------------------------------------------------------ stage by stage
def test_window_only_is_the_clipped_linear_map_of_the_reference_quantiles():
    ramp = (torch.arange(64 * 64, dtype=torch.float32) * 1e-3).view(1, 1, 64, 64)  # 4096 values i/1000
    out = apply_processing(ramp, ProcessingParams(window=(0.1, 0.9)))
    # torch.quantile interpolates linearly: q of the values 0..4095 (×1e-3) is q·4095 (×1e-3)
    lo, hi = 0.1 * 4095e-3, 0.9 * 4095e-3
    flat = out.flatten()
    assert float(flat[2048]) == pytest.approx((2.048 - lo) / (hi - lo), abs=1e-5)  # = 0.500153
    assert float(flat[2048]) == pytest.approx(0.5001526, abs=1e-5)
    assert float(flat[0]) == 0.0 and float(flat[-1]) == 1.0
    assert torch.allclose(out, ((ramp - lo) / (hi - lo)).clamp(0, 1), atol=1e-5)
    # quantiles inside the field only (left half of the columns); other rows use the reference's window
    field = torch.zeros(64, 64, dtype=torch.bool)
    field[:, :32] = True
    out = apply_processing(torch.cat([ramp, 2 * ramp]), ProcessingParams(window=(0.1, 0.9)), field=field)
    lo, hi = np.quantile(ramp[0, 0][field].numpy().astype(np.float64), [0.1, 0.9])
    assert torch.allclose(out[0], ((ramp[0] - lo) / (hi - lo)).clamp(0, 1), atol=1e-5)
    assert torch.allclose(out[1], ((2 * ramp[0] - lo) / (hi - lo)).clamp(0, 1), atol=1e-5)
    # NONE is the package's plain linear display, clipped
    total, _ = _chest(3)
    assert torch.allclose(apply_processing(total, NONE), to_display(total, *display_window(total)).clamp(0, 1), atol=1e-6)


def _identity_ramp() -> torch.Tensor:
    """0, 1/4096, ..., 1 as a (1, 1, 17, 241) image: the window (0, 1) maps it to itself exactly."""
    return torch.linspace(0, 1, 4097).view(1, 1, 17, 241)


def test_tone_curve_maps_0_to_0_and_1_to_1_strictly_increasing_and_gamma():
    ramp = _identity_ramp()
    c, w = 0.3, 0.15
    out = apply_processing(ramp, ProcessingParams(window=(0.0, 1.0), tone_center=c, tone_width=w)).flatten()
    assert float(out[0]) == pytest.approx(0.0, abs=1e-6) and float(out[-1]) == pytest.approx(1.0, abs=1e-6)
    assert bool((out[1:] - out[:-1] > 0).all())
    s = lambda z: 1 / (1 + math.exp(-z))
    expected = (s((0.25 - c) / w) - s(-c / w)) / (s((1 - c) / w) - s(-c / w))
    assert float(out[1024]) == pytest.approx(expected, abs=2e-6)  # ramp value 0.25
    centred = apply_processing(ramp, ProcessingParams(window=(0.0, 1.0), tone_center=0.5, tone_width=0.2)).flatten()
    assert float(centred[2048]) == pytest.approx(0.5, abs=1e-6)  # symmetric curve: the centre is a fixed point
    squared = apply_processing(ramp, ProcessingParams(window=(0.0, 1.0), gamma=2.0)).flatten()
    assert float(squared[2048]) == pytest.approx(0.25, abs=1e-6)
    assert float(squared[1024]) == pytest.approx(0.0625, abs=1e-6)


def test_contrast_equalisation_and_range_compression_are_the_stated_linear_maps():
    rng = np.random.default_rng(3)
    img = 0.5 + 0.15 * gaussian_filter(rng.standard_normal((128, 128)), 3) / 0.05 * 0.2
    img = np.clip(img, 0.2, 0.8)
    img[0, 0], img[-1, -1] = 0.0, 1.0  # the window (0, 1) is the identity
    x = torch.from_numpy(img.astype(np.float32))[None, None]
    inner = (slice(24, -24), slice(24, -24))  # away from the border (reflection is approximated at coarse scales)
    g, s = 0.8, 0.02
    mce = apply_processing(x, ProcessingParams(window=(0.0, 1.0), mce_gains=(g,), mce_sigmas=(s,)))[0, 0].numpy()
    expected = img + g * (img - gaussian_filter(img, s * 128, mode="mirror"))
    assert np.abs(mce - np.clip(expected, 0, 1))[inner].max() < 2e-3
    c, s = 0.6, 0.1
    drc = apply_processing(x, ProcessingParams(window=(0.0, 1.0), drc=c, drc_sigma=s))[0, 0].numpy()
    expected = img - c * (gaussian_filter(img, s * 128, mode="mirror") - img.mean())
    assert np.abs(drc - np.clip(expected, 0, 1))[inner].max() < 2e-3
    assert np.std(gaussian_filter(drc, 12.8)[inner]) < 0.8 * np.std(gaussian_filter(img, 12.8)[inner])  # compressed


def test_quantisation_levels_and_error():
    total, _ = _chest(4)
    params = dataclasses.replace(PRESENTATION, bits=0)
    exact = apply_processing(total, params)
    for bits in (8, 10):
        q = apply_processing(total, dataclasses.replace(params, bits=bits))
        top = 2**bits - 1
        assert q.unique().numel() <= 2**bits
        assert ((q * top) - (q * top).round()).abs().max() < 1e-3  # on the grid k / (2^b − 1)
        assert (q - exact).abs().max() <= 0.5 / top + 1e-6
    assert apply_processing(total, dataclasses.replace(params, bits=8)).unique().numel() < exact.unique().numel()


# ------------------------------------------------------------------------------------------ CLAHE transfer
def test_clahe_mapping_is_monotone_in_the_value_at_every_pixel_and_spatially_adaptive():
    ref = _low_contrast(64)
    levels = torch.linspace(-0.1, 1.1, 49)  # a ramp of constant images, clipped to [0, 1] by stage 3
    rows = torch.cat([ref, levels.view(-1, 1, 1, 1).expand(-1, 1, 64, 64)])
    params = ProcessingParams(window=(0.0, 1.0), clahe_clip=0.02, clahe_tiles=4)
    out = apply_processing(rows, params)[1:, 0]
    assert bool((out[1:] - out[:-1] >= -1e-6).all())  # non-decreasing in the input value, pixel by pixel
    assert float(out[0].max()) == pytest.approx(0.0, abs=1e-6) and float(out[-1].min()) == pytest.approx(1.0, abs=1e-6)
    mid = out[24]  # the constant 0.5 image: mapped through different tiles' tables, no longer constant
    assert float(mid.max() - mid.min()) > 0.05
    # a smooth ramp through a reference whose tiles are identical (so are their tables): one mapping everywhere,
    # and the tile interpolation must neither break the ramp's order nor add structure across it
    patch = 0.3 + 0.4 * np.random.default_rng(2).random((16, 16))
    patch[0, 0], patch[-1, -1] = 0.0, 1.0
    periodic = torch.from_numpy(np.tile(patch, (4, 4)).astype(np.float32))[None, None]
    ramp = torch.linspace(0.2, 0.8, 64).view(1, 1, 1, 64).expand(1, 1, 64, 64)
    prof = apply_processing(torch.cat([periodic, ramp]), params)[1, 0]
    assert bool((prof[:, 1:] - prof[:, :-1] >= -1e-6).all()) and float(prof[:, -1].min() - prof[:, 0].max()) > 0.5
    assert float((prof - prof[:1]).abs().max()) < 1e-5


def test_clahe_cpu_and_accelerator_look_up_paths_agree():
    from cxrdecomp.simulate.processing import _clahe_apply, _clahe_fit

    y = torch.rand(2, 1, 300, 1100)  # CPU blocks of 119 rows: a partial last block
    cdf = _clahe_fit(y[0, 0], 6, 0.01)
    assert torch.equal(_clahe_apply(y, cdf, 6, cpu=True), _clahe_apply(y, cdf, 6, cpu=False))


def test_clahe_flattens_the_histogram_of_the_reference():
    ref = _low_contrast(128, seed=1)
    grid = torch.linspace(0, 1, 101)
    ks = lambda x: float(((x.flatten()[:, None] <= grid).float().mean(0) - grid).abs().max())
    out = {c: apply_processing(ref, ProcessingParams(window=(0.0, 1.0), clahe_clip=c, clahe_tiles=8)) for c in (0.01, 0.02, 0.05)}
    assert _entropy(out[0.02]) > _entropy(ref) + 1.0
    assert ks(out[0.02]) < 0.6 * ks(ref)  # closer to the uniform CDF
    # a higher clip limit equalises more (0.01 × 256 pixels per tile still allows 2 pixels per bin)
    assert _entropy(ref) < _entropy(out[0.01]) < _entropy(out[0.02]) < _entropy(out[0.05])


def test_clahe_on_the_reference_agrees_with_scikit_image():
    skimage_exposure = pytest.importorskip("skimage.exposure")
    total, _ = _chest(5, size=256)
    img = total[0, 0].numpy().astype(np.float64)
    img = (img - img.min()) / (img.max() - img.min())  # exact 0 and 1: the window (0, 1) is the identity
    x = torch.from_numpy(img.astype(np.float32))[None, None]
    ours = apply_processing(x, ProcessingParams(window=(0.0, 1.0), clahe_clip=0.01, clahe_tiles=8))[0, 0].numpy()
    theirs = skimage_exposure.equalize_adapthist(img, clip_limit=0.01, kernel_size=256 // 8)
    # Not exact, by design: skimage looks values up in the step function of the 14-bit value's bin (we interpolate
    # the CDF within a bin), redistributes the clipped excess in whole pixels (sometimes more than was clipped, so its
    # tables saturate early), centres tiles at ⌊k/2⌋ instead of (k − 1)/2 and stretches its output to the image's own
    # min/max (which would make the function depend on the row, so we do not).
    assert np.abs(ours - theirs).mean() < 0.05
    assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] > 0.98


# ------------------------------------------------------------------------------------------ marker
def test_marker_pixels_are_identical_across_rows_and_cancel_in_the_difference():
    total, soft = _chest(6)
    rows = torch.cat([total, soft])
    base = dataclasses.replace(ALL_ON, marker="")
    plain = apply_processing(rows, base)
    for corner in range(4):
        marked = apply_processing(rows, dataclasses.replace(base, marker="L", marker_corner=corner))
        changed = (marked != plain).any(dim=0)[0]
        assert changed.sum() > 15
        assert bool((marked[:, 0][:, changed] == 1.0).all())
        assert float((marked[0, 0] - marked[1, 0])[changed].abs().max()) == 0.0
        ys, xs = torch.nonzero(changed, as_tuple=True)
        top, left = corner in (0, 1), corner in (0, 2)
        assert (ys.max() < 48) if top else (ys.min() >= 48)
        assert (xs.max() < 48) if left else (xs.min() >= 48)
        assert torch.equal(marked[:, :, ~changed], plain[:, :, ~changed])


# ------------------------------------------------------------------------------------------ randomisation
def _within(params: ProcessingParams, r: ProcessingRanges) -> None:
    assert r.window_lo[0] <= params.window[0] <= r.window_lo[1] and r.window_hi[0] <= params.window[1] <= r.window_hi[1]
    if params.mce_gains:
        assert r.mce_levels[0] <= len(params.mce_gains) <= r.mce_levels[1]
        assert all(r.mce_gain[0] <= g <= r.mce_gain[1] for g in params.mce_gains)
        assert all(r.mce_sigma[0] <= s <= r.mce_sigma[1] for s in params.mce_sigmas)
        assert list(params.mce_sigmas) == sorted(params.mce_sigmas)
    assert params.drc == 0 or r.drc[0] <= params.drc <= r.drc[1]
    assert r.drc_sigma[0] <= params.drc_sigma <= r.drc_sigma[1]
    assert r.tone_center[0] <= params.tone_center <= r.tone_center[1]
    assert params.tone_width == 0 or r.tone_width[0] <= params.tone_width <= r.tone_width[1]
    assert r.gamma[0] <= params.gamma <= r.gamma[1]
    assert params.clahe_clip == 0 or r.clahe_clip[0] <= params.clahe_clip <= r.clahe_clip[1]
    assert params.clahe_tiles in r.clahe_tiles and params.bits in r.bits
    assert params.marker == "" or params.marker in r.marker_texts
    assert params.marker_corner in (0, 1, 2, 3) and r.marker_size[0] <= params.marker_size <= r.marker_size[1]


def test_draw_processing_is_reproducible_and_within_the_ranges():
    assert draw_processing(np.random.default_rng(7)) == draw_processing(np.random.default_rng(7))
    assert draw_processing(np.random.default_rng(7)) != draw_processing(np.random.default_rng(8))
    ranges = ProcessingRanges()
    rng = np.random.default_rng(0)
    draws = [draw_processing(rng, ranges) for _ in range(400)]
    for p in draws:
        _within(p, ranges)
    for on in (lambda p: bool(p.mce_gains), lambda p: p.drc > 0, lambda p: p.tone_width > 0, lambda p: p.clahe_clip > 0,
               lambda p: p.bits > 0, lambda p: bool(p.marker)):
        share = sum(map(on, draws)) / len(draws)
        assert 0.1 < share < 0.95  # every optional stage is drawn both on and off
    assert {p.marker for p in draws} == {"", "L", "R"} and {p.marker_corner for p in draws} == {0, 1, 2, 3}
    narrow = ProcessingRanges(mce_p=1.0, mce_levels=(2, 2), gamma=(1.0, 1.0), clahe_p=0.0, bits=(12,), marker_p=1.0, marker_texts=("R",))
    for p in (draw_processing(rng, narrow) for _ in range(20)):
        _within(p, narrow)
        assert len(p.mce_gains) == 2 and p.gamma == 1.0 and p.clahe_clip == 0 and p.bits == 12 and p.marker == "R"
    p = draws[0]
    assert ProcessingParams.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_presentation_and_drawn_chains_give_display_images():
    total, soft = _chest(8)
    rows = torch.cat([total, soft]).double()
    for params in (PRESENTATION, *(draw_processing(np.random.default_rng(s)) for s in range(6))):
        out = apply_processing(rows, params)
        assert out.shape == rows.shape and out.dtype == torch.float32 and out.device == rows.device
        assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        assert float(out[0].mean()) > 0.05  # not a blank image


# ------------------------------------------------------------------------------------------ errors
def test_bad_inputs_raise_actionable_errors():
    x = torch.rand(2, 1, 16, 16)
    with pytest.raises(InputError, match=r"4-D \(N, 1, H, W\)"):
        apply_processing(torch.rand(16, 16), NONE)
    with pytest.raises(InputError, match=r"4-D \(N, 1, H, W\)"):
        apply_processing(torch.rand(2, 3, 16, 16), NONE)
    with pytest.raises(InputError, match=r"field must have shape \(16, 16\) or \(1, 1, 16, 16\)"):
        apply_processing(x, NONE, field=torch.ones(8, 8, dtype=torch.bool))
    with pytest.raises(InputError, match="field must be a bool"):
        apply_processing(x, NONE, field=torch.ones(16, 16))
    with pytest.raises(InputError, match="fewer than 2 pixels"):
        apply_processing(x, NONE, field=torch.zeros(16, 16, dtype=torch.bool))
    with pytest.raises(InputError, match=r"reference row 2 out of range for a batch of 2 rows"):
        apply_processing(x, NONE, reference=2)
    with pytest.raises(InputError, match="reference row -1 out of range"):
        apply_processing(x, NONE, reference=-1)
    with pytest.raises(InputError, match="NaN or infinite"):
        apply_processing(torch.full((1, 1, 4, 4), float("nan")), NONE)
    with pytest.raises(ConfigError, match=r"params must be a ProcessingParams"):
        apply_processing(x, {"bits": 8})
    with pytest.raises(ConfigError, match=r"bits must be one of \(0, 8, 10, 12, 16\)"):
        ProcessingParams(bits=7)
    assert ALLOWED_BITS == (0, 8, 10, 12, 16)
    with pytest.raises(ConfigError, match="one entry per level"):
        ProcessingParams(mce_gains=(1.0,), mce_sigmas=())
    with pytest.raises(ConfigError, match="window must be two quantiles"):
        ProcessingParams(window=(0.9, 0.1))
    with pytest.raises(ConfigError, match="marker_corner must be 0"):
        ProcessingParams(marker_corner=4)
    with pytest.raises(ConfigError, match=r"unknown processing parameters \['clahe'\]"):
        ProcessingParams.from_dict({"clahe": 0.01})
    with pytest.raises(ConfigError, match="probability"):
        ProcessingRanges(clahe_p=1.5)
    with pytest.raises(ConfigError, match="bits must be choices"):
        ProcessingRanges(bits=(0, 14))
    with pytest.raises(ConfigError, match="numpy.random.Generator"):
        draw_processing(0)
