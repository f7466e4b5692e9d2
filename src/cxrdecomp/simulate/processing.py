"""The "for presentation" image processing of a CR/DX system, applied to simulated radiographs.

Real chest radiographs are not shown as the log of the detector signal: the vendor's processing
windows it, boosts fine detail (multi-scale contrast equalisation), compresses the dynamic range,
applies a tone curve (LUT), sometimes CLAHE, quantises to the stored bit depth and carries a burned-in
lead marker (Prokop, Neitzel & Schaefer-Prokop, "Principles of image processing in digital chest
radiography", J. Thorac. Imaging 18:148–164, 2003). :func:`apply_processing` imitates that chain so
that simulated training images look processed like real ones.

**One fixed function for every row.** The chain is applied *identically* to several attenuation-domain
renderings of one sample — the radiograph, the same view without bone, ... — given as the rows of one
``(N, 1, H, W)`` batch. Every adaptive quantity (window quantiles, the mean of the range compression,
the CLAHE look-up tables) is fitted on one *reference* row and the resulting fixed function is applied
to all rows, so the soft-tissue target is "the same processing applied to the radiograph without bone"
and, in the display domain, ``bone = processed(radiograph) − processed(bone-free rendering)``. A row's
output depends only on its own input and on the reference row, never on the other rows.

Stages, in order (the input ``L`` is the attenuation domain, line integrals ``−ln I ≥ 0``; the output the
display domain ``[0, 1]``, air dark, bone bright):

1. **Window** (linear): ``d = (L − lo)/(hi − lo)`` with ``lo, hi`` the ``window`` quantiles of the
   reference row inside ``field`` (the exposed, non-collimated area), computed by
   :func:`cxrdecomp.simulate.render.display_window` (strided subsample above 65 536 pixels).
2. **Multi-scale contrast equalisation** (unsharp masking at several scales, linear; the idea of
   MUSICA, Vuylsteke & Schoeters, Proc. SPIE 2167:551, 1994): ``d ← d + Σ_k g_k (d − G_{σ_k} d)``,
   ``σ_k`` a fraction of the image width. Equivalently, band-pass levels ``(G_{σ_{k−1}} − G_{σ_k}) d``
   (σ sorted, ``G_{σ_0} = 1``) amplified by ``1 + Σ_{j≥k} g_j``. Approximation: a linear gain per
   level, not MUSICA's non-linear (compressive) amplification of each band-pass coefficient.
   Then **dynamic-range compression** (linear, DRC): ``d ← d − c (G_σ d − m)`` with ``m`` the mean of the
   reference row's ``d`` over ``field`` — a constant of the fixed function, so that the bone part of the
   image stays zero far from bone (with each row's own mean, the bone-free rendering would be shifted by
   ``c·mean(bone)`` everywhere, air included).
3. **Clip** to ``[0, 1]``; **tone curve** (the normalised sigmoid of the DICOM ``SIGMOID`` VOI LUT
   function, PS3.3 C.11.2.1.3.1) ``y = (s((d−c)/w) − s(−c/w)) / (s((1−c)/w) − s(−c/w))``, ``s`` the
   logistic function, strictly increasing with ``0 → 0`` and ``1 → 1`` (``w = 0`` switches it off);
   **gamma** ``y ← y^γ``.
4. **CLAHE** (Zuiderveld, "Contrast limited adaptive histogram equalization", Graphics Gems IV, 1994;
   conventions of ``skimage.exposure.equalize_adapthist``: ``clahe_tiles`` tiles of ``⌊H/tiles⌋ ×
   ⌊W/tiles⌋`` pixels per side, 256 bins, clip limit a fraction of the tile's pixels per bin). Per-tile
   histograms of the **reference** row are clipped, the excess spread uniformly over all bins, and their
   cumulative sums give one look-up table per tile. Every row is then mapped through the *reference's*
   tables: each pixel's value is looked up in the tables of the four tiles whose centres surround it
   (linear interpolation within a bin) and the four results are interpolated bilinearly in space (a
   convex combination of non-decreasing tables, so the mapping at any pixel is non-decreasing in the
   value). Approximations against scikit-image: the LUT is the piecewise-linear CDF (skimage: the step
   function of the 14-bit value's bin), the excess is redistributed by a few uniform passes that keep
   the total (skimage's integer redistribution sometimes adds more than was clipped, so its tables
   saturate early), tile centres are at ``(k−1)/2`` (skimage: ``⌊k/2⌋``), and neither the input nor the
   output is stretched to its own minimum and maximum (skimage stretches both per image, which would
   make the function depend on the row). The tiles' histograms cover the whole image, ``field`` or not.
5. **Quantise** to the stored bit depth: ``y ← round(y (2^b − 1))/(2^b − 1)``.
6. **Burned-in marker**: a lead letter (``"L"``, ``"R"``, ...; Pillow's built-in bitmap font scaled up
   with nearest-neighbour interpolation) set to 1.0 in a corner, at the same pixels in every row.

Gaussian blurs (stage 2) use reflect padding; a wide kernel is applied at reduced resolution (area
downsampling by ``f = ⌊σ/2⌋`` pixels, a Gaussian of σ' with ``f²σ'² + f²/4 = σ²`` — the box and the bilinear
upsampling add ``f²/12 + f²/6`` of variance —, bilinear upsampling), which keeps the cost independent of σ;
against an exact Gaussian the error is about 1 % of the high-pass signal ``d − G d`` inside the image and a
few % within σ of the border (reflection on the coarse grid). Everything is pure torch (any device, no Python
loop over pixels; on CPU the CLAHE look-up runs in cache-sized blocks of rows); kernel taps, CLAHE
interpolation weights and marker masks are cached.

Example:
    >>> rng = np.random.default_rng(0)
    >>> params = draw_processing(rng)
    >>> out = apply_processing(torch.stack([L_total, L_soft])[:, None], params, field=field)
    >>> x, soft = out[0:1], out[1:2]; bone = x - soft
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cxrdecomp.errors import ConfigError, InputError
from cxrdecomp.simulate.render import display_window

ALLOWED_BITS = (0, 8, 10, 12, 16)
"""Stored bit depths of :attr:`ProcessingParams.bits` (0 = no quantisation)."""

CLAHE_BINS = 256
"""Histogram bins of the CLAHE tiles (scikit-image's default ``nbins``)."""

MARKER_MARGIN = 0.03
"""Distance of the marker from the image edges, fraction of the smaller image side."""

_CLIP_PASSES = 6  # clip-and-redistribute passes of the CLAHE histograms (the excess left shrinks geometrically)
_BLUR_MIN_SIGMA = 2.0  # blurs with σ ≥ 2·this run at reduced resolution (σ' ∈ [2, 4) pixels there)
_CPU_BLOCK = 131072  # pixels per block of the CLAHE look-up on CPU (≈ 0.5 MB per float32 temporary)


# --------------------------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class ProcessingParams:
    """One processing chain (see the module docstring for each stage).

    Attributes:
        window: quantiles ``(q_lo, q_hi)`` of the reference row's line integrals (inside ``field``)
            mapped to 0 and 1; ``0 ≤ q_lo < q_hi ≤ 1``.
        mce_gains: gain ``g_k ≥ 0`` of each multi-scale contrast equalisation level (``()`` = off).
        mce_sigmas: Gaussian σ of each level, fraction of the image width (> 0; as many as gains).
        drc: dynamic-range compression strength ``c`` (0 = off; ``0 ≤ c ≤ 1``).
        drc_sigma: its Gaussian σ, fraction of the image width (> 0).
        tone_center: centre ``c`` of the sigmoid tone curve, display units (``0 ≤ c ≤ 1``).
        tone_width: its width ``w`` (0 = no tone curve; ≤ 5, beyond which the curve is a straight line).
        gamma: exponent γ > 0 applied after the tone curve.
        clahe_clip: CLAHE clip limit, fraction of a tile's pixels per bin (skimage convention: floored to
            whole pixels, at least one; ≥ 1 = no clipping, plain AHE; 0 = off).
        clahe_tiles: CLAHE tiles per image side (1 to 64).
        bits: stored bit depth, one of :data:`ALLOWED_BITS` (0 = no quantisation).
        marker: burned-in lead-marker text, e.g. ``"L"`` or ``"R"`` (``""`` = none; ≤ 8 printable ASCII).
        marker_corner: 0 top-left, 1 top-right, 2 bottom-left, 3 bottom-right.
        marker_size: glyph height, fraction of the image height (``0 < size ≤ 0.5``).

    Raises:
        ConfigError: a value outside the ranges above (raised on construction).
    """

    window: tuple[float, float] = (0.005, 0.995)
    mce_gains: tuple[float, ...] = ()
    mce_sigmas: tuple[float, ...] = ()
    drc: float = 0.0
    drc_sigma: float = 0.08
    tone_center: float = 0.5
    tone_width: float = 0.0
    gamma: float = 1.0
    clahe_clip: float = 0.0
    clahe_tiles: int = 8
    bits: int = 0
    marker: str = ""
    marker_corner: int = 0
    marker_size: float = 0.06

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        try:
            put("window", tuple(float(q) for q in self.window))
            put("mce_gains", tuple(float(g) for g in self.mce_gains))
            put("mce_sigmas", tuple(float(s) for s in self.mce_sigmas))
            for name in ("drc", "drc_sigma", "tone_center", "tone_width", "gamma", "clahe_clip", "marker_size"):
                put(name, float(getattr(self, name)))
            for name in ("clahe_tiles", "bits", "marker_corner"):
                value = getattr(self, name)
                if isinstance(value, float) and not value.is_integer():
                    raise ValueError(name)
                put(name, int(value))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"processing parameters must be numbers (tuples of numbers for window, mce_gains, mce_sigmas): {e}") from None
        if not isinstance(self.marker, str):
            raise ConfigError(f"marker must be a string such as 'L' or 'R' ('' = none), got {self.marker!r}")
        scalars = [self.drc, self.drc_sigma, self.tone_center, self.tone_width, self.gamma, self.clahe_clip, self.marker_size,
                   *self.window, *self.mce_gains, *self.mce_sigmas]
        if not all(math.isfinite(v) for v in scalars):
            raise ConfigError("processing parameters must be finite numbers")
        lo_hi = self.window
        if len(lo_hi) != 2 or not 0.0 <= lo_hi[0] < lo_hi[1] <= 1.0:
            raise ConfigError(f"window must be two quantiles 0 ≤ q_lo < q_hi ≤ 1, got {self.window}")
        if len(self.mce_gains) != len(self.mce_sigmas):
            raise ConfigError(f"mce_gains and mce_sigmas need one entry per level: got {len(self.mce_gains)} gains and "
                              f"{len(self.mce_sigmas)} sigmas")
        if any(g < 0 for g in self.mce_gains) or any(s <= 0 for s in self.mce_sigmas):
            raise ConfigError(f"mce_gains must be ≥ 0 and mce_sigmas > 0 (fractions of the width), got {self.mce_gains}, {self.mce_sigmas}")
        if not 0.0 <= self.drc <= 1.0 or self.drc_sigma <= 0:
            raise ConfigError(f"drc must lie in [0, 1] and drc_sigma be > 0, got drc={self.drc}, drc_sigma={self.drc_sigma}")
        if not 0.0 <= self.tone_center <= 1.0 or not 0.0 <= self.tone_width <= 5.0:
            raise ConfigError(f"tone_center must lie in [0, 1] and tone_width in [0, 5] (0 = off; wider is linear), "
                              f"got {self.tone_center}, {self.tone_width}")
        if self.gamma <= 0:
            raise ConfigError(f"gamma must be > 0, got {self.gamma}")
        if self.clahe_clip < 0 or not 1 <= self.clahe_tiles <= 64:
            raise ConfigError(f"clahe_clip must be ≥ 0 (0 = off) and clahe_tiles between 1 and 64, got {self.clahe_clip}, {self.clahe_tiles}")
        if self.bits not in ALLOWED_BITS:
            raise ConfigError(f"bits must be one of {ALLOWED_BITS} (0 = no quantisation), got {self.bits}")
        if len(self.marker) > 8 or not all(32 < ord(ch) < 127 for ch in self.marker):
            raise ConfigError(f"marker must be at most 8 printable ASCII characters without spaces, got {self.marker!r}")
        if self.marker_corner not in (0, 1, 2, 3):
            raise ConfigError(f"marker_corner must be 0 (top-left), 1 (top-right), 2 (bottom-left) or 3 (bottom-right), "
                              f"got {self.marker_corner}")
        if not 0.0 < self.marker_size <= 0.5:
            raise ConfigError(f"marker_size must lie in (0, 0.5] (fraction of the image height), got {self.marker_size}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict (tuples become lists); :meth:`from_dict` inverts it."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProcessingParams:
        """Rebuild from :meth:`to_dict` output; missing keys take the defaults.

        Raises:
            ConfigError: unknown keys or invalid values.
        """
        if not isinstance(d, dict):
            raise ConfigError(f"processing parameters must be a dict (ProcessingParams.to_dict()), got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown processing parameters {unknown}; known: {sorted(known)}")
        return cls(**d)


PRESENTATION = ProcessingParams(
    window=(0.005, 0.995), mce_gains=(0.6, 0.3), mce_sigmas=(0.01, 0.04), drc=0.4, drc_sigma=0.08,
    tone_center=0.5, tone_width=0.25, gamma=1.0, bits=12,
)
"""A fixed, typical chain for a single DRR: detail boost at two scales, moderate range compression, an
S-shaped tone curve and 12-bit storage; no CLAHE, no marker."""

NONE = ProcessingParams()
"""The linear window only (0.5 % and 99.5 % quantiles), clipped to [0, 1]: the package's plain "log" display
(:func:`cxrdecomp.simulate.render.display_window` + :func:`~cxrdecomp.simulate.render.to_display`)."""


@dataclass(frozen=True)
class ProcessingRanges:
    """Randomisation ranges of :func:`draw_processing` (``(low, high)`` pairs are uniform unless noted).

    Attributes:
        window_lo, window_hi: ranges of the low and high window quantiles.
        mce_p: probability of multi-scale contrast equalisation; ``mce_levels`` (min, max) levels,
            ``mce_gain`` gain range per level, ``mce_sigma`` σ range (fraction of width, log-uniform;
            the levels' σ are sorted fine to coarse).
        drc_p: probability of range compression; ``drc`` strength range, ``drc_sigma`` σ range
            (fraction of width).
        tone_p: probability of a sigmoid tone curve; ``tone_center`` and ``tone_width`` ranges.
        gamma: γ range (log-uniform).
        clahe_p: probability of CLAHE; ``clahe_clip`` clip-limit range, ``clahe_tiles`` choices.
        bits: choices of stored bit depth (uniform; 0 = none).
        marker_p: probability of a burned-in marker; ``marker_texts`` choices, ``marker_size`` range
            (fraction of height); the corner is uniform over the four.

    Raises:
        ConfigError: an empty or reversed range, a probability outside [0, 1], or values outside what
            :class:`ProcessingParams` accepts.
    """

    window_lo: tuple[float, float] = (0.0, 0.02)
    window_hi: tuple[float, float] = (0.995, 1.0)  # real films rarely clip the mediastinum and spine
    mce_p: float = 0.7
    mce_levels: tuple[int, int] = (1, 3)
    mce_gain: tuple[float, float] = (0.0, 1.5)
    mce_sigma: tuple[float, float] = (0.005, 0.1)
    drc_p: float = 0.6
    drc: tuple[float, float] = (0.0, 0.7)
    drc_sigma: tuple[float, float] = (0.04, 0.15)
    tone_p: float = 0.7
    tone_center: tuple[float, float] = (0.35, 0.65)
    tone_width: tuple[float, float] = (0.12, 0.4)
    gamma: tuple[float, float] = (0.7, 1.4)
    clahe_p: float = 0.3
    clahe_clip: tuple[float, float] = (0.005, 0.02)
    clahe_tiles: tuple[int, ...] = (6, 8, 10)
    bits: tuple[int, ...] = (0, 8, 10, 12, 16)
    marker_p: float = 0.5
    marker_texts: tuple[str, ...] = ("L", "R")
    marker_size: tuple[float, float] = (0.04, 0.08)

    def __post_init__(self) -> None:
        for name in ("mce_p", "drc_p", "tone_p", "clahe_p", "marker_p"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"ProcessingRanges.{name} is a probability and must lie in [0, 1], got {p}")
        pairs = ("window_lo", "window_hi", "mce_levels", "mce_gain", "mce_sigma", "drc", "drc_sigma", "tone_center",
                 "tone_width", "gamma", "clahe_clip", "marker_size")
        for name in pairs:
            r = getattr(self, name)
            if len(r) != 2 or not r[0] <= r[1]:
                raise ConfigError(f"ProcessingRanges.{name} must be a (low, high) pair with low ≤ high, got {r}")
        if self.window_lo[0] < 0 or self.window_hi[1] > 1 or self.window_lo[1] >= self.window_hi[0]:
            raise ConfigError(f"window quantile ranges must satisfy 0 ≤ window_lo < window_hi ≤ 1, got {self.window_lo}, {self.window_hi}")
        if self.mce_levels[0] < 1 or self.mce_gain[0] < 0 or self.mce_sigma[0] <= 0:
            raise ConfigError("ProcessingRanges needs mce_levels ≥ 1, mce_gain ≥ 0 and mce_sigma > 0")
        if self.drc[0] < 0 or self.drc[1] > 1 or self.drc_sigma[0] <= 0 or self.gamma[0] <= 0:
            raise ConfigError("ProcessingRanges needs drc within [0, 1], drc_sigma > 0 and gamma > 0")
        if self.tone_center[0] < 0 or self.tone_center[1] > 1 or self.tone_width[0] <= 0 or self.tone_width[1] > 5:
            raise ConfigError("ProcessingRanges needs tone_center within [0, 1] and tone_width within (0, 5]")
        if self.clahe_clip[0] <= 0 or not self.clahe_tiles or not all(1 <= t <= 64 for t in self.clahe_tiles):
            raise ConfigError("ProcessingRanges needs clahe_clip > 0 and at least one clahe_tiles choice, each between 1 and 64")
        if not self.bits or any(b not in ALLOWED_BITS for b in self.bits):
            raise ConfigError(f"ProcessingRanges.bits must be choices among {ALLOWED_BITS}, got {self.bits}")
        if not self.marker_texts or not 0 < self.marker_size[0] or self.marker_size[1] > 0.5:
            raise ConfigError("ProcessingRanges needs at least one marker text and marker_size within (0, 0.5]")
        for text in self.marker_texts:
            ProcessingParams(marker=text)  # raises ConfigError for an unusable text


def _log_uniform(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(math.exp(rng.uniform(math.log(lo_hi[0]), math.log(lo_hi[1]))))


def draw_processing(rng: np.random.Generator, ranges: ProcessingRanges | None = None) -> ProcessingParams:
    """Draw a random processing chain from ``ranges`` (default :class:`ProcessingRanges`).

    Every call consumes the same number of random numbers whatever stages are switched on, so a
    change of one probability does not reshuffle the other draws of a seeded stream.

    Args:
        rng: numpy generator (the only source of randomness: same seed → same parameters).
        ranges: randomisation ranges.

    Returns:
        A :class:`ProcessingParams`.

    Raises:
        ConfigError: ``rng`` is not a ``numpy.random.Generator``.
    """
    if not isinstance(rng, np.random.Generator):
        raise ConfigError(f"draw_processing needs a numpy.random.Generator (numpy.random.default_rng(seed)), got {type(rng).__name__}")
    r = ranges if ranges is not None else ProcessingRanges()
    u = rng.uniform
    window = (float(u(*r.window_lo)), float(u(*r.window_hi)))
    max_levels = r.mce_levels[1]
    mce_on = rng.random() < r.mce_p
    n_levels = int(rng.integers(r.mce_levels[0], max_levels + 1))
    gains = [float(u(*r.mce_gain)) for _ in range(max_levels)]
    sigmas = [_log_uniform(rng, r.mce_sigma) for _ in range(max_levels)]
    drc_on = rng.random() < r.drc_p
    drc, drc_sigma = float(u(*r.drc)), float(u(*r.drc_sigma))
    tone_on = rng.random() < r.tone_p
    tone_center, tone_width = float(u(*r.tone_center)), float(u(*r.tone_width))
    gamma = _log_uniform(rng, r.gamma)
    clahe_on = rng.random() < r.clahe_p
    clahe_clip = float(u(*r.clahe_clip))
    clahe_tiles = int(r.clahe_tiles[int(rng.integers(len(r.clahe_tiles)))])
    bits = int(r.bits[int(rng.integers(len(r.bits)))])
    marker_on = rng.random() < r.marker_p
    marker = str(r.marker_texts[int(rng.integers(len(r.marker_texts)))])
    corner = int(rng.integers(4))
    marker_size = float(u(*r.marker_size))
    return ProcessingParams(
        window=window,
        mce_gains=tuple(gains[:n_levels]) if mce_on else (),
        mce_sigmas=tuple(sorted(sigmas[:n_levels])) if mce_on else (),
        drc=drc if drc_on else 0.0,
        drc_sigma=drc_sigma,
        tone_center=tone_center,
        tone_width=tone_width if tone_on else 0.0,
        gamma=gamma,
        clahe_clip=clahe_clip if clahe_on else 0.0,
        clahe_tiles=clahe_tiles,
        bits=bits,
        marker=marker if marker_on else "",
        marker_corner=corner,
        marker_size=marker_size,
    )


# --------------------------------------------------------------------------------------------- blur
@lru_cache(maxsize=64)
def _gauss_taps(sigma: float) -> tuple[float, ...]:
    r = max(1, math.ceil(3.0 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return tuple(float(v) for v in k / k.sum())


def _blur_direct(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian as a sum of shifted copies: memory-bound, several times faster than a 1-channel
    ``conv2d`` on CPU (whose im2col buffer is (2r+1)× the image) and fine for the ≤ 25 taps used here."""
    taps = _gauss_taps(round(sigma, 6))
    r = (len(taps) - 1) // 2
    h, w = x.shape[-2:]
    mode = "reflect" if r < min(h, w) else "replicate"  # reflect padding needs the image wider than the radius
    xp = F.pad(x, (r, r, r, r), mode=mode)
    rows = xp[..., :, 0:w] * taps[0]
    for j in range(1, 2 * r + 1):
        rows.add_(xp[..., :, j:j + w], alpha=taps[j])
    out = rows[..., 0:h, :] * taps[0]
    for j in range(1, 2 * r + 1):
        out.add_(rows[..., j:j + h, :], alpha=taps[j])
    return out


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of ``(N, C, H, W)`` with σ in pixels (reflect padding); wide σ at reduced resolution
    (the one Gaussian blur of the simulation: processing, scatter and detector MTF). ``sigma ≤ 0`` returns ``x``."""
    if sigma <= 0:
        return x
    f = int(sigma // _BLUR_MIN_SIGMA)
    if f <= 1:
        return _blur_direct(x, sigma)
    h, w = x.shape[-2:]
    small = F.avg_pool2d(x, f, ceil_mode=True)  # area average of f × f blocks (partial blocks at the far edges)
    s = math.sqrt((sigma / f) ** 2 - 0.25)  # the box (f²/12) and the bilinear upsampling (f²/6) add f²/4 of variance
    up = F.interpolate(_blur_direct(small, s), scale_factor=f, mode="bilinear", align_corners=False)
    return up[..., :h, :w]


# --------------------------------------------------------------------------------------------- CLAHE
def _tile_size(h: int, w: int, tiles: int) -> tuple[int, int, int, int]:
    ky, kx = max(1, h // tiles), max(1, w // tiles)
    return ky, kx, math.ceil(h / ky), math.ceil(w / kx)


def _clahe_fit(ref: torch.Tensor, tiles: int, clip: float) -> torch.Tensor:
    """Per-tile CDF look-up tables ``(ny, nx, CLAHE_BINS + 1)`` (values at the bin edges) of one ``(H, W)`` image in [0, 1]."""
    h, w = ref.shape
    ky, kx, ny, nx = _tile_size(h, w, tiles)
    img = ref[None, None]
    if ny * ky > h or nx * kx > w:  # the last tiles reach past the border: reflect, as skimage does
        img = F.pad(img, (0, nx * kx - w, 0, ny * ky - h), mode="reflect")
    b = (img[0, 0] * CLAHE_BINS).to(torch.int64).clamp_(0, CLAHE_BINS - 1)
    b = b.view(ny, ky, nx, kx).permute(0, 2, 1, 3).reshape(ny * nx, ky * kx)
    b = b + torch.arange(ny * nx, device=b.device)[:, None] * CLAHE_BINS
    hist = torch.bincount(b.flatten(), minlength=ny * nx * CLAHE_BINS).view(ny * nx, CLAHE_BINS).to(torch.float32)
    hist = hist / (ky * kx)
    limit = max(math.floor(clip * ky * kx), 1) / (ky * kx)  # skimage: a whole number of pixels, at least one
    for _ in range(_CLIP_PASSES):
        excess = (hist - limit).clamp_min(0.0).sum(dim=1, keepdim=True)
        hist = hist.clamp_max(limit) + excess / CLAHE_BINS
    cdf = torch.cat([torch.zeros_like(hist[:, :1]), hist.cumsum(dim=1)], dim=1)
    cdf = cdf / cdf[:, -1:]
    return cdf.view(ny, nx, CLAHE_BINS + 1)


@lru_cache(maxsize=16)
def _clahe_geometry(h: int, w: int, tiles: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per pixel: table offsets ``(4, H, W)`` (float32, exact integers) of the 4 tiles whose centres surround it
    and their bilinear weights ``(4, H, W)``; beyond the outer tile centres the nearest tiles' tables are used."""
    ky, kx, ny, nx = _tile_size(h, w, tiles)

    def axis(n: int, k: int, nt: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        g = (torch.arange(n, dtype=torch.float64) - (k - 1) / 2) / k  # position in units of tiles from the first centre
        t0 = g.floor().clamp(0, nt - 1)
        t1 = (t0 + 1).clamp(max=nt - 1)
        return t0, t1, (g - t0).clamp(0, 1)

    y0, y1, wy = axis(h, ky, ny)
    x0, x1, wx = axis(w, kx, nx)
    offsets, weights = [], []
    for ty, wty in ((y0, 1 - wy), (y1, wy)):
        for tx, wtx in ((x0, 1 - wx), (x1, wx)):
            offsets.append((ty[:, None] * nx + tx[None, :]) * CLAHE_BINS)
            weights.append(wty[:, None] * wtx[None, :])
    return (torch.stack(offsets).to(device=device, dtype=torch.float32),
            torch.stack(weights).to(device=device, dtype=torch.float32))


def _clahe_apply(y: torch.Tensor, cdf: torch.Tensor, tiles: int, cpu: bool | None = None) -> torch.Tensor:
    """Map every row of ``(N, 1, H, W)`` values in [0, 1] through the fitted tables ``cdf`` (see :func:`_clahe_fit`).

    ``cpu`` (default: whether ``y`` is on the CPU) selects the CPU path (paired 8-byte look-ups in cache-sized
    blocks of rows) or the accelerator path (two look-ups, whole rows, no float64 view); both give the same values."""
    n, _, h, w = y.shape
    offsets, weights = _clahe_geometry(h, w, tiles, str(y.device))
    lut = cdf[..., :-1].reshape(-1)  # per bin: the value at its left edge ...
    rise = (cdf[..., 1:] - cdf[..., :-1]).reshape(-1)  # ... and the rise across it
    cpu = y.device.type == "cpu" if cpu is None else cpu
    if cpu:  # both fetched as one 8-byte entry per tile and pixel, in blocks of rows that stay in cache
        pairs = torch.stack([lut, rise], dim=-1).contiguous().view(torch.float64).reshape(-1)
    block = max(1, _CPU_BLOCK // w) if cpu else h
    out = torch.empty((n, 1, h, w), dtype=torch.float32, device=y.device)
    for i in range(n):
        for r0 in range(0, h, block):
            rows = slice(r0, r0 + block)
            u = y[i, 0, rows] * CLAHE_BINS
            bin_ = u.floor().clamp_(0, CLAHE_BINS - 1)
            frac = u - bin_  # in [0, 1] (1 only at the value 1.0)
            acc = None
            for c in range(4):  # the four surrounding tiles; float32 offsets are exact integers below 2**24
                idx = (offsets[c, rows] + bin_).view(-1).to(torch.int32)
                if cpu:
                    pair = pairs.index_select(0, idx).view(torch.float32).view(*u.shape, 2)
                    left, step = pair[..., 0], pair[..., 1]
                else:
                    left, step = lut.index_select(0, idx).view(u.shape), rise.index_select(0, idx).view(u.shape)
                v = torch.addcmul(left, frac, step).mul_(weights[c, rows])
                acc = v if acc is None else acc.add_(v)
            out[i, 0, rows] = acc
    return out


# --------------------------------------------------------------------------------------------- marker
@lru_cache(maxsize=32)
def _glyph(text: str) -> np.ndarray:
    """Bool bitmap of ``text`` in Pillow's built-in bitmap font, cropped to its ink."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default_imagefont()
    im = Image.new("L", (8 * len(text) + 8, 20))
    ImageDraw.Draw(im).text((2, 2), text, fill=255, font=font)
    box = im.getbbox()
    if box is None:
        raise ConfigError(f"marker {text!r} renders no pixels; use letters such as 'L' or 'R'")
    return np.asarray(im.crop(box)) > 0


@lru_cache(maxsize=32)
def _marker_mask(text: str, h: int, w: int, corner: int, size: float, device: str) -> torch.Tensor:
    """``(H, W)`` bool mask of the marker glyph placed in ``corner``."""
    from PIL import Image

    glyph = _glyph(text)
    gh = max(5, round(size * h))
    gw = max(1, round(glyph.shape[1] * gh / glyph.shape[0]))
    big = np.asarray(Image.fromarray(glyph.astype(np.uint8) * 255).resize((gw, gh), Image.Resampling.NEAREST)) > 0
    margin = round(MARKER_MARGIN * min(h, w))
    gh, gw = min(gh, h - margin), min(gw, w - margin)
    mask = np.zeros((h, w), dtype=bool)
    if gh > 0 and gw > 0:
        top = margin if corner in (0, 1) else h - margin - gh
        left = margin if corner in (0, 2) else w - margin - gw
        mask[top:top + gh, left:left + gw] = big[:gh, :gw]
    return torch.from_numpy(mask).to(device)


# --------------------------------------------------------------------------------------------- the chain
def _check_inputs(log_images: Any, params: Any, field: Any, reference: Any) -> tuple[torch.Tensor, torch.Tensor | None, int]:
    if not isinstance(params, ProcessingParams):
        raise ConfigError(f"params must be a ProcessingParams (e.g. draw_processing(rng) or PRESENTATION), got {type(params).__name__}")
    if not isinstance(log_images, torch.Tensor) or log_images.ndim != 4 or log_images.shape[1] != 1:
        shape = tuple(log_images.shape) if isinstance(log_images, torch.Tensor) else type(log_images).__name__
        raise InputError(f"processing needs a 4-D (N, 1, H, W) torch tensor of line integrals, got {shape}")
    n, _, h, w = log_images.shape
    if n < 1 or h < 2 or w < 2:
        raise InputError(f"processing needs at least one row of at least 2 × 2 pixels, got shape {tuple(log_images.shape)}")
    if not log_images.is_floating_point():
        raise InputError(f"line integrals must be a floating-point tensor, got {log_images.dtype}")
    x = log_images.to(torch.float32)
    if not math.isfinite(float(x.sum())) and not bool(torch.isfinite(x).all()):  # the sum: a cheap first test
        raise InputError("line integrals contain NaN or infinite values; check the projection (−ln I of a zero intensity?)")
    if isinstance(reference, bool) or not isinstance(reference, (int, np.integer)) or not 0 <= int(reference) < n:
        raise InputError(f"reference row {reference!r} out of range for a batch of {n} rows (0 ≤ reference < {n})")
    mask = None
    if field is not None:
        if not isinstance(field, torch.Tensor) or field.dtype != torch.bool:
            raise InputError(f"field must be a bool torch tensor (True = exposed area), got {getattr(field, 'dtype', type(field).__name__)}")
        if tuple(field.shape) not in ((h, w), (1, 1, h, w)):
            raise InputError(f"field must have shape ({h}, {w}) or (1, 1, {h}, {w}) to match the images, got {tuple(field.shape)}")
        mask = field.reshape(h, w).to(x.device)
        if int(mask.sum()) < 2:
            raise InputError("field selects fewer than 2 pixels: it must mark the exposed (non-collimated) area")
    return x, mask, int(reference)


def apply_processing(log_images: torch.Tensor, params: ProcessingParams, field: torch.Tensor | None = None,
                     reference: int = 0) -> torch.Tensor:
    """Process every row of a batch with one chain fitted on the reference row (see the module docstring).

    Args:
        log_images: ``(N, 1, H, W)`` attenuation domain (line integrals ``−ln I``), float; the rows are
            renderings of one sample (e.g. the radiograph and the same view without bone).
        params: the chain (:func:`draw_processing`, :data:`PRESENTATION`, :data:`NONE`).
        field: bool ``(H, W)`` or ``(1, 1, H, W)``, True in the exposed (non-collimated) area, where the
            window quantiles and the range-compression mean are taken; ``None`` = the whole image.
        reference: the row on which every adaptive quantity is fitted.

    Returns:
        ``(N, 1, H, W)`` display domain in ``[0, 1]`` (air dark, bone bright), float32, same device. Row
        ``i`` depends only on row ``i`` and the reference row.

    Raises:
        InputError: not a ``(N, 1, H, W)`` floating tensor, NaN/inf values, ``field`` not bool or of the
            wrong shape or (almost) empty, ``reference`` out of range.
        ConfigError: ``params`` is not a :class:`ProcessingParams`.

    Shape:
        Input ``(N, 1, H, W)`` → output ``(N, 1, H, W)``.
    """
    x, mask, ref = _check_inputs(log_images, params, field, reference)
    h, w = x.shape[-2:]
    p = params
    # 1. window (linear): quantiles of the reference row inside the field
    ref_vals = x[ref, 0][mask] if mask is not None else x[ref, 0]
    lo, hi = display_window(ref_vals.reshape(1, 1, 1, -1), *p.window)
    d = (x - lo).mul_(1.0 / (hi - lo))
    # 2. multi-scale contrast equalisation d + Σ g_k (d − G_k d) and range compression d − c (G d − m);
    #    linear, blur σ as fractions of the width
    levels = [(g, s) for g, s in zip(p.mce_gains, p.mce_sigmas) if g > 0]
    if levels:
        out = d * (1.0 + sum(g for g, _ in levels))
        for g, s in levels:
            out.add_(gaussian_blur(d, s * w), alpha=-g)
        d = out
    if p.drc > 0:
        m = (torch.where(mask, d[ref, 0], 0.0).sum() / mask.sum()) if mask is not None else d[ref].mean()
        d = d.add_(gaussian_blur(d, p.drc_sigma * w), alpha=-p.drc).add_(p.drc * m)
    # 3. clip, tone curve, gamma (pointwise)
    y = d.clamp_(0.0, 1.0)
    if p.tone_width > 0:
        c, tw = p.tone_center, p.tone_width
        s0, s1 = 0.5 * (1.0 + math.tanh(-c / (2 * tw))), 0.5 * (1.0 + math.tanh((1.0 - c) / (2 * tw)))  # s(z) = (1 + tanh(z/2))/2
        y = y.sub_(c).mul_(1.0 / tw).sigmoid_().sub_(s0).mul_(1.0 / (s1 - s0)).clamp_(0.0, 1.0)
    if p.gamma != 1.0:
        y = y.pow_(p.gamma)
    # 4. CLAHE fitted on the reference row, applied to all rows
    if p.clahe_clip > 0:
        y = _clahe_apply(y, _clahe_fit(y[ref, 0], p.clahe_tiles, p.clahe_clip), p.clahe_tiles).clamp_(0.0, 1.0)
    # 5. quantisation
    if p.bits:
        top = float(2**p.bits - 1)
        y = y.mul_(top).round_().div_(top).clamp_(0.0, 1.0)
    # 6. burned-in marker, the same pixels in every row
    if p.marker:
        y = y.masked_fill_(_marker_mask(p.marker, h, w, p.marker_corner, p.marker_size, str(y.device)), 1.0)
    return y.contiguous()


__all__ = [
    "ALLOWED_BITS", "CLAHE_BINS", "MARKER_MARGIN", "NONE", "PRESENTATION", "ProcessingParams", "ProcessingRanges",
    "apply_processing", "draw_processing",
]
