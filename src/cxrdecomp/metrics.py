"""Image-quality and bone-suppression metrics, computed one way and documented (docs/metrics.md).

Every function takes a prediction and a reference as

* ``(B, 1, H, W)`` (or ``(B, H, W)``) torch tensors / numpy arrays → returns a ``(B,)`` float64 tensor,
  one value per image, on the device of the inputs (a CUDA tensor is scored on the GPU: training
  validation and :mod:`cxrdecomp.evaluate` use these same functions), or
* ``(H, W)`` arrays / tensors → returns a Python ``float``.

Inputs are converted to float64 *before* any arithmetic, so integer images (uint8, uint16) never produce
wrapped-around differences (a known bug of some public scripts, e.g. the PSNR of BS-LDM's
``metrics.py``, which subtracts two uint8 arrays). Metrics that depend on the intensity scale (PSNR,
SSIM, MS-SSIM) take an explicit ``data_range``: 1.0 for the display domain ``[0, 1]`` used throughout
cxrdecomp, 255 for raw 8-bit values. Values are means over all pixels of each image (or over a mask where
one is accepted); a set of images is summarised by the mean of the per-image values.

Bone-suppression notation (display domain, air dark, bone bright): ``I`` the radiograph, ``S`` the true
soft-tissue (bone-suppressed) image, ``Ŝ`` the predicted one; the bone images are ``B = I − S`` and
``B̂ = I − Ŝ``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from cxrdecomp.errors import ConfigError, InputError
from cxrdecomp.io.arrays import as_image_batch

__all__ = [
    "mse",
    "rmse",
    "mae",
    "psnr",
    "ssim",
    "ms_ssim",
    "dice",
    "bsr",
    "bsr_bsldm",
    "bsr_tone_matched",
    "tone_match",
    "rmae",
    "MS_SSIM_WEIGHTS",
    "ms_ssim_min_size",
    "ms_ssim_window",
    "image_metrics",
    "suppression_metrics",
]

#: Wang, Simoncelli & Bovik 2003, "Multi-scale structural similarity for image quality assessment",
#: Asilomar Conf., §3.2 (exponents β_j = γ_j = α_5 of the five scales, finest first).
MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


# ----------------------------------------------------------------------------------------------
# input handling
# ----------------------------------------------------------------------------------------------


def _to_bchw(x, name: str) -> tuple[torch.Tensor, bool]:
    """``x`` as a float64 ``(B, 1, H, W)`` tensor (on its device) and whether it was a single ``(H, W)`` image."""
    # float64 before any subtraction: no uint8 wrap-around
    return as_image_batch(x, name, dtype=torch.float64)


def _pair(pred, target, *more, names=("pred", "target", "image", "mask")):
    ts = []
    single = None
    for v, n in zip((pred, target, *more), names):
        if v is None:
            ts.append(None)
            continue
        t, s = _to_bchw(v, n)
        single = s if single is None else single
        ts.append(t)
    dev = ts[1].device
    ts = [t if t is None or t.device == dev else t.to(dev) for t in ts]
    ref = ts[1].shape
    for t, n in zip(ts, names):
        if t is not None and t.shape != ref:
            raise InputError(f"{n} has shape {tuple(t.shape)} but target has {tuple(ref)}; resize one to the other first")
    return ts, single


def _out(v: torch.Tensor, single: bool):
    return float(v[0]) if single else v


def _mask(m: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    if m is None:
        return torch.ones_like(like)
    m = (m > 0.5).to(torch.float64)
    if (m.sum(dim=(1, 2, 3)) == 0).any():
        raise InputError("mask is empty for at least one image; nothing to average over")
    return m


def _masked_mean(v: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    return (v * m).sum(dim=(1, 2, 3)) / m.sum(dim=(1, 2, 3))


def _check_range(data_range) -> float:
    if data_range is None:
        raise ConfigError("data_range must be given explicitly: 1.0 for the display domain [0, 1], 255 for 8-bit values")
    dr = float(data_range)
    if not dr > 0 or not math.isfinite(dr):
        raise ConfigError(f"data_range must be a positive number, got {data_range!r}")
    return dr


# ----------------------------------------------------------------------------------------------
# pixel-wise errors
# ----------------------------------------------------------------------------------------------


def mse(pred, target, mask=None):
    """Mean squared error ``MSE = (1/N) Σ (x̂ − x)²`` per image (over ``mask`` when given).

    Any data range (units of the inputs, squared). Shapes: ``(B, 1, H, W)`` → ``(B,)``; ``(H, W)`` →
    float. ``mask`` (same shape, > 0.5 = inside) restricts the mean.

    Raises:
        InputError: shapes differ, empty image or mask.
    """
    (p, t, m), single = _pair(pred, target, mask, names=("pred", "target", "mask"))
    return _out(_masked_mean((p - t) ** 2, _mask(m, t)), single)


def rmse(pred, target, mask=None):
    """Root mean squared error ``RMSE = sqrt(MSE)`` per image, in the units of the inputs.

    Shapes and errors as :func:`mse`. (The bone-extraction paper reports RMSE on 8-bit values: use
    inputs in ``[0, 255]`` or multiply a display-domain result by 255 to compare.)
    """
    (p, t, m), single = _pair(pred, target, mask, names=("pred", "target", "mask"))
    return _out(torch.sqrt(_masked_mean((p - t) ** 2, _mask(m, t))), single)


def mae(pred, target, mask=None):
    """Mean absolute error ``MAE = (1/N) Σ |x̂ − x|`` per image, in the units of the inputs.

    Shapes and errors as :func:`mse`.
    """
    (p, t, m), single = _pair(pred, target, mask, names=("pred", "target", "mask"))
    return _out(_masked_mean((p - t).abs(), _mask(m, t)), single)


def psnr(pred, target, *, data_range, mask=None):
    """Peak signal-to-noise ratio ``PSNR = 10 log10(L² / MSE)`` in dB, per image.

    Args:
        pred, target: ``(B, 1, H, W)`` or ``(H, W)``, any dtype (converted to float64 first; never
            computed on integer differences).
        data_range: ``L``, the span of possible values: ``1.0`` in the display domain, ``255`` for 8-bit
            values. Required: a wrong ``L`` shifts PSNR by ``20 log10`` of the ratio.
        mask: optional, restricts the MSE.

    Returns ``inf`` for identical images. Matches ``skimage.metrics.peak_signal_noise_ratio`` with the
    same ``data_range``. Reference: e.g. Wang & Bovik 2009, "Mean squared error: love it or leave it?".

    Raises:
        ConfigError: missing or non-positive ``data_range``. InputError: shapes differ.
    """
    dr = _check_range(data_range)
    (p, t, m), single = _pair(pred, target, mask, names=("pred", "target", "mask"))
    e = _masked_mean((p - t) ** 2, _mask(m, t))
    v = 10.0 * torch.log10(dr * dr / e)  # inf for identical images
    return _out(v, single)


# ----------------------------------------------------------------------------------------------
# SSIM / MS-SSIM
# ----------------------------------------------------------------------------------------------


def _kernel_1d(win_size: int, sigma: float | None, device=None) -> torch.Tensor:
    if win_size < 1 or win_size % 2 == 0:
        raise ConfigError(f"win_size must be an odd positive integer, got {win_size}")
    if sigma is None:
        k = torch.ones(win_size, dtype=torch.float64, device=device)
    else:
        c = torch.arange(win_size, dtype=torch.float64, device=device) - win_size // 2
        k = torch.exp(-(c**2) / (2.0 * sigma * sigma))
    return k / k.sum()


def _filt(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Separable 'valid' filtering of ``(B, 1, H, W)`` with the 1-D kernel ``k`` (symmetric).

    Written as ``unfold`` + matrix-vector products, several times faster than float64 ``conv2d`` on CPU.
    """
    n = k.numel()
    x = x.unfold(-1, n, 1) @ k  # (B, 1, H, W - n + 1)
    return x.unfold(-2, n, 1) @ k  # (B, 1, H - n + 1, W - n + 1)


def _ssim_cs(x, y, L, k, K1, K2, sample_covariance):
    """Per-image mean SSIM and mean contrast-structure term (Wang et al. 2004, Eq. 13 / Eq. 9·10)."""
    C1, C2 = (K1 * L) ** 2, (K2 * L) ** 2
    mx, my = _filt(x, k), _filt(y, k)
    sxx = _filt(x * x, k) - mx * mx
    syy = _filt(y * y, k) - my * my
    sxy = _filt(x * y, k) - mx * my
    if sample_covariance:
        n = k.numel() ** 2
        f = n / (n - 1.0)
        sxx, syy, sxy = sxx * f, syy * f, sxy * f
    cs_map = (2 * sxy + C2) / (sxx + syy + C2)
    ssim_map = (2 * mx * my + C1) / (mx * mx + my * my + C1) * cs_map
    return ssim_map.mean(dim=(1, 2, 3)), cs_map.mean(dim=(1, 2, 3))


def ssim(pred, target, *, data_range, gaussian: bool = True, win_size: int | None = None, sigma: float = 1.5,
         K1: float = 0.01, K2: float = 0.03, sample_covariance: bool | None = None):
    """Structural similarity (Wang, Bovik, Sheikh & Simoncelli 2004, IEEE TIP 13(4), Eq. 13), per image.

    ``SSIM(x, y) = mean over windows of (2µxµy + C1)(2σxy + C2) / ((µx² + µy² + C1)(σx² + σy² + C2))``,
    ``C1 = (K1·L)²``, ``C2 = (K2·L)²``, ``L = data_range``; the mean is taken over the windows lying fully
    inside the image (no padding), as scikit-image does.

    Two settings are in common use and give different numbers (0.9930 vs 0.9910 for the identity
    baseline on bse-jsrt/val):

    * ``gaussian=True`` (default): the paper's 11×11 Gaussian window, σ = 1.5, population covariance —
      ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
      use_sample_covariance=False)``, pytorch-msssim and MONAI's default;
    * ``gaussian=False``: a 7×7 uniform window with sample covariance — scikit-image's *default*
      ``structural_similarity(x, y, data_range=L)``, used by the BS-LDM / GL-LCM scripts and by the data
      README's baseline.

    Args:
        pred, target: ``(B, 1, H, W)`` or ``(H, W)``, at least ``win_size`` pixels on each side.
        data_range: ``L`` (1.0 display domain, 255 for 8-bit values). Required.
        win_size: odd window side; default 11 (Gaussian) or 7 (uniform).
        sample_covariance: default ``not gaussian`` (scikit-image's conventions).

    Returns ``(B,)`` float64 or a float for ``(H, W)`` inputs.

    Raises:
        ConfigError: bad ``data_range`` / ``win_size``. InputError: shapes differ or image < window.
    """
    L = _check_range(data_range)
    (p, t), single = _pair(pred, target)
    win = win_size or (11 if gaussian else 7)
    if sample_covariance is None:
        sample_covariance = not gaussian
    if min(t.shape[-2:]) < win:
        raise InputError(f"SSIM needs images of at least {win}x{win} pixels, got {tuple(t.shape[-2:])}")
    k = _kernel_1d(win, sigma if gaussian else None, t.device)
    s, _ = _ssim_cs(p, t, L, k, K1, K2, sample_covariance)
    return _out(s, single)


def ms_ssim_min_size(win_size: int = 11, scales: int = 5) -> int:
    """Smallest image side MS-SSIM accepts: ``(win_size − 1)·2^(scales−1) + 1`` (161 for 11 px, 5 scales).

    At the coarsest scale the image must still be larger than the window; this is the bound that
    pytorch-msssim enforces too.
    """
    return (win_size - 1) * 2 ** (scales - 1) + 1


def ms_ssim_window(size: int, scales: int = 5) -> int:
    """Largest odd Gaussian window ≤ 11 with which ``scales``-scale MS-SSIM runs on ``size``-pixel images
    (11 from 161 px for 5 scales; smaller for the small images of quick training runs and tests). Report a
    value computed with a smaller window as such: it is not comparable with the standard 11-px MS-SSIM.

    Raises:
        InputError: ``size`` too small even for a 3-px window (≤ 32 px for 5 scales).
    """
    w = 11
    while w > 3 and size < ms_ssim_min_size(w, scales):
        w -= 2
    if size < ms_ssim_min_size(w, scales):
        raise InputError(f"images of {size} px are too small for {scales}-scale MS-SSIM (need at least {ms_ssim_min_size(3, scales)} px)")
    return w


def ms_ssim(pred, target, *, data_range, weights: Sequence[float] = MS_SSIM_WEIGHTS, win_size: int = 11,
            sigma: float = 1.5, K1: float = 0.01, K2: float = 0.03):
    """Multi-scale SSIM (Wang, Simoncelli & Bovik 2003, Eq. 7), per image.

    ``MS-SSIM = Π_{j=1..M} cs_j^{w_j} · l_M^{w_M}``: the contrast-structure term ``cs_j`` at each of ``M``
    scales (2×2 average pooling between scales) and the luminance term only at the coarsest, with the
    paper's weights ``(0.0448, 0.2856, 0.3001, 0.2363, 0.1333)``; each scale uses an 11×11 Gaussian
    window (σ = 1.5). Negative terms are clamped to 0 before the power (as pytorch-msssim does) so the
    result is real. Matches ``pytorch_msssim.ms_ssim(..., data_range=L)``.

    Args:
        pred, target: ``(B, 1, H, W)`` or ``(H, W)``; the smaller side must be at least
            :func:`ms_ssim_min_size` = 161 px for the default 11-px window and 5 scales. For smaller
            images pass fewer ``weights`` (e.g. ``MS_SSIM_WEIGHTS[:3]``, renormalised by the caller if
            wanted; ≥ 41 px) and say so when reporting — the value is then not comparable with 5-scale
            MS-SSIM.
        data_range: ``L`` (1.0 display domain, 255 for 8-bit values). Required.

    Raises:
        InputError: image smaller than the minimum (the message gives it), shapes differ.
        ConfigError: bad ``data_range``.
    """
    L = _check_range(data_range)
    (p, t), single = _pair(pred, target)
    w = torch.as_tensor(list(weights), dtype=torch.float64, device=t.device)
    need = ms_ssim_min_size(win_size, len(w))
    if min(t.shape[-2:]) < need:
        raise InputError(
            f"MS-SSIM with {len(w)} scales and a {win_size}-px window needs images of at least {need} px per "
            f"side, got {tuple(t.shape[-2:])}; use larger images or fewer scales (weights=MS_SSIM_WEIGHTS[:k])"
        )
    k = _kernel_1d(win_size, sigma, t.device)
    terms = []
    for j in range(len(w)):
        s, cs = _ssim_cs(p, t, L, k, K1, K2, False)
        if j < len(w) - 1:
            terms.append(torch.relu(cs))
            pad = (p.shape[-2] % 2, p.shape[-1] % 2)
            p = F.avg_pool2d(p, kernel_size=2, padding=pad)
            t = F.avg_pool2d(t, kernel_size=2, padding=pad)
        else:
            terms.append(torch.relu(s))
    v = torch.prod(torch.stack(terms, 0) ** w[:, None], dim=0)
    return _out(v, single)


# ----------------------------------------------------------------------------------------------
# segmentation
# ----------------------------------------------------------------------------------------------


def dice(pred, target, threshold: float = 0.5):
    """Dice coefficient ``2|A ∩ B| / (|A| + |B|)`` of binary masks, per image.

    Inputs are binarised as ``> threshold`` (booleans as is). Two empty masks score 1.
    Shapes: ``(B, 1, H, W)`` → ``(B,)``, ``(H, W)`` → float. Reference: Dice 1945, Ecology 26(3).
    """
    (p, t), single = _pair(pred, target)
    a, b = (p > threshold).to(torch.float64), (t > threshold).to(torch.float64)
    inter = (a * b).sum(dim=(1, 2, 3))
    tot = a.sum(dim=(1, 2, 3)) + b.sum(dim=(1, 2, 3))
    v = torch.where(tot > 0, 2 * inter / tot.clamp_min(1e-300), torch.ones_like(tot))
    return _out(v, single)


# ----------------------------------------------------------------------------------------------
# bone suppression
# ----------------------------------------------------------------------------------------------


def bsr(pred_soft, true_soft, image, mask=None):
    """Bone suppression ratio (Yang et al. 2017, "Cascade of multi-scale convolutional neural networks
    for bone suppression of chest radiographs in gradient domain", Med. Image Anal. 35, §4.2):

    ``BSR = 1 − Σ (Ŝ − S)² / Σ (I − S)²``

    summed over the image, or over ``mask`` (e.g. the lung fields) when given. Returning the radiograph
    unchanged (``Ŝ = I``) scores 0, a perfect prediction 1; a BSR of 0.9 is +10 dB over identity. Any
    data range (the ratio is scale-free), but all three images must share it.

    Args:
        pred_soft: ``Ŝ``, predicted soft-tissue image. true_soft: ``S``. image: ``I``, the radiograph.
            Each ``(B, 1, H, W)`` or ``(H, W)``, same shape.
        mask: optional, same shape, > 0.5 inside.

    Returns ``(B,)`` (float for 2-D inputs); NaN where ``Σ(I − S)² = 0`` (nothing to suppress).

    Raises:
        InputError: shapes differ, empty mask.
    """
    (p, t, i, m), single = _pair(pred_soft, true_soft, image, mask)
    mm = _mask(m, t)
    num = (((p - t) ** 2) * mm).sum(dim=(1, 2, 3))
    den = (((i - t) ** 2) * mm).sum(dim=(1, 2, 3))
    v = torch.where(den > 0, 1.0 - num / den.clamp_min(1e-300), torch.full_like(den, float("nan")))
    return _out(v, single)


def tone_match(x, target, mask=None):
    """``a·x + b`` with ``(a, b)`` the least-squares fit of ``x`` onto ``target`` per image (over ``mask`` if given).

    Shapes ``(B, 1, H, W)`` or ``(H, W)``; returns the same shape as ``x``. A constant ``x`` gets ``a = 0`` (its
    best constant, the target's mean).
    """
    (xx, tt, m), single = _pair(x, target, mask, names=("x", "target", "mask"))
    dtype = x.dtype if isinstance(x, torch.Tensor) else xx.dtype
    xx, tt = xx.double(), tt.double()
    mm = _mask(m, tt)
    n = mm.sum(dim=(1, 2, 3), keepdim=True).clamp_min(1)
    mx = (xx * mm).sum(dim=(1, 2, 3), keepdim=True) / n
    mt = (tt * mm).sum(dim=(1, 2, 3), keepdim=True) / n
    var = (((xx - mx) ** 2) * mm).sum(dim=(1, 2, 3), keepdim=True)
    cov = ((xx - mx) * (tt - mt) * mm).sum(dim=(1, 2, 3), keepdim=True)
    a = torch.where(var > 0, cov / var.clamp_min(1e-300), torch.zeros_like(var))
    out = (a * (xx - mx) + mt).to(dtype)
    return out[0, 0] if single else out


def bsr_tone_matched(pred_soft, true_soft, image, mask=None):
    """Tone-matched bone suppression ratio: :func:`bsr` after a per-image linear tone fit onto the truth of both
    the prediction and the identity,

    ``BSR_tm = 1 − Σ (T_p(Ŝ) − S)² / Σ (T_i(I) − S)²``, ``T(x) = a·x + b`` least squares (:func:`tone_match`).

    For truths processed differently from their radiographs (dual-energy soft-tissue images with their own tone:
    ``../shared/data/des-dev``), raw BSR mostly measures tone; this one measures what is left: identity 0, perfect 1
    (up to tone). Shapes and errors as :func:`bsr`; the fits use ``mask`` too when given.
    """
    (p, t, i, m), single = _pair(pred_soft, true_soft, image, mask)
    return _out(bsr(tone_match(p, t, m), t, tone_match(i, t, m), m), single)


def bsr_bsldm(pred_soft, true_soft, image, mask=None):
    """The "BSR" computed by the BS-LDM and GL-LCM code — *not* the BSR of Yang et al. (see :func:`bsr`).

    ``r = S − (Ŝ + mean(S − Ŝ))``  (the prediction is first shifted so its mean matches the truth),
    ``BSR_bsldm = 1 − Σ max(r, 0)² / Σ (I − S)²``  (only positive residuals count).

    Reproduces ``cal_BSR`` of github.com/diaoquesang/BS-LDM, file BS-LDM/metrics.py (commit 3a96220),
    identical in github.com/diaoquesang/GL-LCM codes/metrics.py: images divided by 255, ``bs +=
    np.average(gt − bs)``, ``bias = gt − bs; bias[bias < 0] = 0``, ``1 − Σbias² / Σbone²`` with ``bone =
    cxr − gt``. (Their script first resizes everything to 1024², which cxrdecomp leaves to the caller:
    :mod:`cxrdecomp.evaluate` works at the truth's resolution.) Because a global offset and all
    negative residuals are forgiven, this value is higher than :func:`bsr` for the same images, and the
    identity prediction does not score 0. Report it under this name only, to compare with those papers.

    Shapes, ``mask`` (restricts both the mean shift and the sums) and errors as :func:`bsr`.
    """
    (p, t, i, m), single = _pair(pred_soft, true_soft, image, mask)
    mm = _mask(m, t)
    shift = _masked_mean(t - p, mm).view(-1, 1, 1, 1)
    r = (t - (p + shift)).clamp_min(0.0)
    num = ((r**2) * mm).sum(dim=(1, 2, 3))
    den = (((i - t) ** 2) * mm).sum(dim=(1, 2, 3))
    v = torch.where(den > 0, 1.0 - num / den.clamp_min(1e-300), torch.full_like(den, float("nan")))
    return _out(v, single)


def rmae(pred_bone, true_bone, mask=None, *, data_range=None):
    """Relative mean absolute error of the bone image (Yang et al. 2017, §4.2; also reported by the
    disentanglement-autoencoder paper):

    ``RMAE = (1/N) Σ |B̂ − B| / (max B − min B)``

    i.e. the MAE of the bone image relative to the intensity span of the true bone image of that
    radiograph. With ``data_range`` given, the span is that fixed value instead (``RMAE = MAE / L``);
    use this to compare with numbers normalised by the image's full range. Neither paper's code is
    public; the normalisation by the true bone image's span follows the text of Yang et al. and is the
    cxrdecomp default. Scale-free.

    Args:
        pred_bone: ``B̂ = I − Ŝ``. true_bone: ``B = I − S``. ``(B, 1, H, W)`` or ``(H, W)``.
        mask: optional, restricts the mean (the span is still taken over the whole true bone image).

    Returns ``(B,)`` (float for 2-D inputs); NaN where the true bone image is constant.
    """
    (p, t, m), single = _pair(pred_bone, true_bone, mask, names=("pred_bone", "true_bone", "mask"))
    e = _masked_mean((p - t).abs(), _mask(m, t))
    if data_range is not None:
        span = torch.full_like(e, _check_range(data_range))
    else:
        span = t.amax(dim=(1, 2, 3)) - t.amin(dim=(1, 2, 3))
    v = torch.where(span > 0, e / span.clamp_min(1e-300), torch.full_like(e, float("nan")))
    return _out(v, single)


# ----------------------------------------------------------------------------------------------
# sets of metrics for training validation (the functions above, on the device of the inputs)
# ----------------------------------------------------------------------------------------------


def _ssim_window(side: int) -> int:
    return min(11, side if side % 2 else side - 1)


def image_metrics(pred, target, *, data_range: float = 1.0, with_ms_ssim: bool = True) -> dict[str, torch.Tensor]:
    """Per-image ``rmse``, ``psnr`` (dB), ``ssim`` (Gaussian window, 11 px or the image side if smaller) and
    ``ms_ssim`` (window from :func:`ms_ssim_window`; NaN for images under 33 px) of ``(B, 1, H, W)`` images.

    Returns ``{name: (B,) float64}`` on the inputs' device.
    """
    (p, t), _ = _pair(pred, target)
    side = min(t.shape[-2:])
    out = {"rmse": rmse(p, t), "psnr": psnr(p, t, data_range=data_range), "ssim": ssim(p, t, data_range=data_range, win_size=_ssim_window(side))}
    if with_ms_ssim:
        try:
            out["ms_ssim"] = ms_ssim(p, t, data_range=data_range, win_size=ms_ssim_window(side))
        except InputError:
            out["ms_ssim"] = torch.full((t.shape[0],), float("nan"), dtype=torch.float64, device=t.device)
    return out


def suppression_metrics(pred_soft, true_soft, image, *, data_range: float = 1.0) -> dict[str, torch.Tensor]:
    """Per-image ``bsr``, ``rmae`` (of the bone image ``I − Ŝ``), ``psnr`` and ``ssim`` of predicted
    soft-tissue images ``(B, 1, H, W)``, display domain; SSIM window as :func:`image_metrics`.

    Returns ``{name: (B,) float64}`` on the inputs' device.
    """
    (p, t, i), _ = _pair(pred_soft, true_soft, image)
    side = min(t.shape[-2:])
    return {
        "bsr": bsr(p, t, i),
        "rmae": rmae(i - p, i - t),
        "psnr": psnr(p, t, data_range=data_range),
        "ssim": ssim(p, t, data_range=data_range, win_size=_ssim_window(side)),
    }
