"""BS-Diff: bone suppression with a conditional diffusion model and an enhancement autoencoder.

Chen et al., "BS-Diff: Effective Bone Suppression Using Conditional Diffusion Models from Chest
X-Ray Images", ISBI 2024 (arXiv:2311.15328). Registered as ``bsdiff``.

* **Stage 1** (§2.2): a DDPM (Ho et al. 2020) whose noise predictor ε_θ(x_t, t, I) is a U-Net taking the
  noisy soft-tissue image x_t concatenated channel-wise with the (CLAHE-processed) radiograph I;
  five resolution levels, 3 residual blocks per level, self-attention in the last (deepest) four
  levels; T = 1000; β from 0.0015 to 0.0205 along a cosine curve (:func:`cosine_interpolated_betas`);
  loss ``‖ε − ε_θ(√ᾱ_t S + √(1−ᾱ_t) ε, t, I)‖²`` (paper Eq. 3, DDPM Eq. 14).
* **Stage 2** (§2.3–2.4): an autoencoder (MONAI ``AutoencoderKL`` used deterministically) mapping the
  smooth diffusion output to a sharp soft-tissue image, trained separately with
  ``L = 1.0·MAE + 1.0·(1 − MS-SSIM) + 0.001·perceptual(VGG16) + 0.01·adversarial`` (paper Eq. 5) against a
  MONAI ``PatchDiscriminator`` (pix2pixHD-style, least-squares GAN).
* **Beyond the paper**: DDIM sampling (Song et al. 2021, Eq. 12, η = 0) with 10–50 steps instead of 1000
  DDPM steps; ``benchmarks/bsdiff_steps.py`` measures quality and time against the number of steps.

Both stages live in one :class:`BSDiff` module (one checkpoint folder). All images handed to the
public functions are in the display domain ``[0, 1]``; internally the network works on ``2·x − 1``
(``[−1, 1]``, paper §3.2).

Generic parts come from MONAI (``DiffusionModelUNet``, ``DDPMScheduler``, ``DDIMScheduler``,
``DiffusionInferer``, ``AutoencoderKL``, ``PatchDiscriminator``, ``PatchAdversarialLoss``); this module
holds the BS-Diff specific wiring, the noise schedule, the predictor and the two training stages.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, NoiseSchedules

from cxrdecomp.errors import CheckpointError, ConfigError

BETA_START = 0.0015
BETA_END = 0.0205
NUM_TRAIN_TIMESTEPS = 1000
SCHEDULE = "bsdiff_cosine_beta"
DEFAULT_STEPS = 20
PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
TARGETS = ("soft", "residual")
CONDITIONS = ("clahe", "raw", "raw+clahe")


# ------------------------------------------------------------------------------------------------
# Noise schedule
# ------------------------------------------------------------------------------------------------


def cosine_interpolated_betas(num_train_timesteps: int, beta_start: float = BETA_START, beta_end: float = BETA_END) -> torch.Tensor:
    """β_t going from ``beta_start`` to ``beta_end`` over T steps along a half cosine.

    ``β_i = β_start + (β_end − β_start) · (1 − cos(π i / (T − 1))) / 2``, ``i = 0 … T−1``.

    BS-Diff §3.2 states "β from 0.0015 to 0.0205 ... cosine schedule". The authors' code passes these
    numbers to diffusers' ``squaredcos_cap_v2`` schedule, which ignores them (that is the
    Nichol & Dhariwal ᾱ-cosine, available here as ``schedule="cosine"``). This function is the reading
    that honours both statements: the β range is kept exactly, and the interpolation between its ends is
    a cosine ease (flat at both ends). Its mean β equals the linear schedule's, so
    ``ᾱ_T ≈ exp(−T·(β_start+β_end)/2) ≈ 2·10⁻⁵`` (x_T is pure noise), but it adds noise more gently in
    the first steps, where fine detail (rib edges) is decided.

    Returns:
        ``(T,)`` float32 tensor, increasing, ``β_0 = beta_start`` and ``β_{T−1} = beta_end``.

    Raises:
        ConfigError: ``num_train_timesteps < 2`` or a β outside ``(0, 1)``.
    """
    if num_train_timesteps < 2:
        raise ConfigError(f"num_train_timesteps must be ≥ 2, got {num_train_timesteps}")
    if not (0 < beta_start < 1 and 0 < beta_end < 1):
        raise ConfigError(f"β must lie in (0, 1); got {beta_start} .. {beta_end}")
    i = torch.arange(num_train_timesteps, dtype=torch.float64)
    w = (1 - torch.cos(math.pi * i / (num_train_timesteps - 1))) / 2
    return (beta_start + (beta_end - beta_start) * w).to(torch.float32)


# registered in MONAI's store of noise schedules so that its schedulers build it by name
NoiseSchedules.add(SCHEDULE, "BS-Diff: beta_start..beta_end along a half cosine", cosine_interpolated_betas)


def make_scheduler(
    sampler: str = "ddpm",
    steps: int | None = None,
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS,
    schedule: str = SCHEDULE,
    beta_start: float = BETA_START,
    beta_end: float = BETA_END,
    prediction_type: str = "epsilon",
    device: torch.device | str | None = None,
):
    """A MONAI scheduler for training (``"ddpm"``) or sampling (``"ddpm"`` with all T steps, ``"ddim"``).

    For DDIM with ``steps`` dividing T the timesteps are "trailing" (``T−1, T−1−T/n, …, T/n−1``), so that
    the last step lands exactly on ᾱ = 1 and the stride equals the one MONAI's ``DDIMScheduler.step``
    assumes (``T // steps``); otherwise MONAI's default rounded ``linspace`` is used.

    Args:
        sampler: ``"ddpm"`` (ancestral, always all T steps: MONAI's DDPM step is only exact with stride 1)
            or ``"ddim"`` (deterministic, η = 0).
        steps: DDIM steps ``1 … T`` (ignored for DDPM).
        schedule: a name in ``monai.networks.schedulers.NoiseSchedules`` (``"bsdiff_cosine_beta"``,
            ``"linear_beta"``, ``"scaled_linear_beta"``, ``"cosine"``).
        prediction_type: what the network predicts: ``"epsilon"`` (the paper), ``"sample"`` (x0) or
            ``"v_prediction"`` (Salimans & Ho 2022).

    Raises:
        ConfigError: unknown sampler or schedule, steps outside ``1 … T``.
    """
    if prediction_type not in PREDICTION_TYPES:
        raise ConfigError(f"unknown prediction_type {prediction_type!r}; use one of {PREDICTION_TYPES}")
    kw: dict[str, Any] = {"num_train_timesteps": num_train_timesteps, "schedule": schedule, "prediction_type": prediction_type}
    if schedule != "cosine":
        kw.update(beta_start=beta_start, beta_end=beta_end)
    if schedule not in NoiseSchedules.components:
        raise ConfigError(f"unknown noise schedule {schedule!r}; known: {sorted(NoiseSchedules.components)}")
    sampler = str(sampler).lower()
    if sampler == "ddpm":
        sch = DDPMScheduler(**kw, clip_sample=True)
        sch.set_timesteps(num_train_timesteps, device=device)
        return sch
    if sampler == "ddim":
        n = int(steps if steps is not None else DEFAULT_STEPS)
        if not 1 <= n <= num_train_timesteps:
            raise ConfigError(f"DDIM steps must be in 1..{num_train_timesteps}, got {n}")
        offset = num_train_timesteps // n - 1 if num_train_timesteps % n == 0 else 0
        sch = DDIMScheduler(**kw, clip_sample=True, set_alpha_to_one=True, steps_offset=offset)
        sch.set_timesteps(n, device=device)
        return sch
    raise ConfigError(f"unknown sampler {sampler!r}; use 'ddim' (fast, 10–50 steps) or 'ddpm' (1000 steps, as in the paper)")


# ------------------------------------------------------------------------------------------------
# Preprocessing
# ------------------------------------------------------------------------------------------------


def clahe(x: torch.Tensor, clip_limit: float = 0.01, kernel_size: int | None = None) -> torch.Tensor:
    """Contrast-limited adaptive histogram equalisation (scikit-image ``equalize_adapthist``) per image.

    BS-Diff §3.2 applies CLAHE to the radiographs; here it is applied to the *conditioning* radiograph
    only, so that the predicted soft-tissue image stays in the input's intensity scale (and
    ``bone = x − soft_tissue`` is meaningful).

    Args:
        x: ``(B, 1, H, W)`` or ``(H, W)`` display domain ``[0, 1]`` (values outside are clipped).
        clip_limit: scikit-image clip limit (fraction, default 0.01).
        kernel_size: tile size in pixels; scikit-image's default (1/8 of each side) when ``None``.

    Returns:
        Same shape, dtype and device, display domain ``[0, 1]``.
    """
    from skimage.exposure import equalize_adapthist

    a = x.detach().to("cpu", torch.float64).clamp(0, 1).numpy()
    flat = a.reshape(-1, *a.shape[-2:])
    out = np.stack([equalize_adapthist(im, kernel_size=kernel_size, clip_limit=clip_limit) for im in flat])
    return torch.from_numpy(out.reshape(a.shape)).to(device=x.device, dtype=x.dtype)


def make_condition(x: torch.Tensor, mode: str = "clahe") -> torch.Tensor:
    """Conditioning channels of display-domain radiographs ``x`` ``(B, 1, S, S)`` in ``[0, 1]``.

    ``mode``: ``"clahe"`` (the paper: CLAHE(x)), ``"raw"`` (x) or ``"raw+clahe"`` (both, 2 channels; the
    network then sees the intensity scale it must reproduce and the equalised detail). Each channel is
    mapped to ``[−1, 1]``.

    Returns:
        ``(B, C, S, S)`` with ``C = 2`` for ``"raw+clahe"``, else 1.

    Raises:
        ConfigError: unknown mode.
    """
    if mode not in CONDITIONS:
        raise ConfigError(f"unknown condition {mode!r}; use one of {CONDITIONS}")
    x = x.clamp(0, 1)
    parts = ([x] if "raw" in mode else []) + ([clahe(x)] if "clahe" in mode else [])
    return torch.cat([2 * p - 1 for p in parts], 1)


def condition_of(x: torch.Tensor, mode: str = "clahe", use_clahe: bool = True) -> torch.Tensor:
    """:func:`make_condition`, or with ``use_clahe=False`` the raw image in every channel of ``mode``."""
    if use_clahe:
        return make_condition(x, mode)
    return make_condition(x, "raw").repeat(1, 2 if mode == "raw+clahe" else 1, 1, 1)


# ------------------------------------------------------------------------------------------------
# Networks
# ------------------------------------------------------------------------------------------------


class Enhancer(nn.Module):
    """Stage-2 enhancement autoencoder (BS-Diff §2.3), MONAI ``AutoencoderKL`` run deterministically.

    The encoder's mean ``z_μ`` is decoded (no latent sampling, no KL term: the paper's loss has none).
    With ``residual=True`` (default, a deviation for small models) the decoder predicts a correction
    added to the input; its output layer starts at zero, so the untrained enhancer is the identity.

    Shape: ``(B, 1, H, W)`` → ``(B, 1, H, W)``, both in ``[−1, 1]`` (``2·display − 1``);
    ``H`` and ``W`` divisible by ``2**(len(channels) − 1)``.
    """

    def __init__(self, channels: Sequence[int] = (32, 64, 64), latent_channels: int = 8, num_res_blocks: int = 2, norm_num_groups: int = 16, residual: bool = True):
        super().__init__()
        from monai.networks.nets import AutoencoderKL

        self.residual = residual
        self.ae = AutoencoderKL(
            spatial_dims=2,
            in_channels=1,
            out_channels=1,
            channels=tuple(channels),
            latent_channels=latent_channels,
            num_res_blocks=num_res_blocks,
            norm_num_groups=norm_num_groups,
            attention_levels=(False,) * len(channels),
            use_flash_attention=True,
        )
        # the log-σ head is unused in deterministic mode: freeze it so DDP sees no unused trainable tensor
        self.ae.quant_conv_log_sigma.requires_grad_(False)
        if residual:
            # zero-initialised output layer: the untrained residual enhancer is exactly the identity, so
            # training starts from the stage-1 output instead of first undoing a random correction
            # (measured: with MONAI's random init, val BSR fell from 0.764 to 0.62 and had only regained
            # 0.715 after 400 steps)
            last = self.ae.decoder.blocks[-1].conv
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ae.encoder(x)
        z = self.ae.quant_conv_mu(h)
        y = self.ae.decode(z)
        return x + y if self.residual else y


class BSDiff(nn.Module):
    """Both BS-Diff stages in one module: ``unet`` (stage 1 noise predictor) and ``enhancer`` (stage 2).

    What the diffusion runs on (``target``): ``"soft"`` — the soft-tissue image ``S`` in ``[−1, 1]``
    (the paper) — or ``"residual"`` — ``x0 = residual_scale · (S − I)`` in the display domain, i.e. the
    negated bone image, which is near zero almost everywhere, so that a briefly trained model stays close
    to the identity instead of sampling noise (a small-budget option, not the paper's).

    Args:
        unet: MONAI ``DiffusionModelUNet`` with ``1 + C`` input channels (noisy target, ``C`` condition
            channels, see :func:`make_condition`) and 1 output (ε, x0 or v: ``prediction_type``).
        enhancer: :class:`Enhancer`.
        diffusion: ``{"num_train_timesteps", "schedule", "beta_start", "beta_end", "prediction_type"}``.
        target: ``"soft"`` or ``"residual"``; residual_scale: the factor of the residual target.
        condition: :func:`make_condition` mode.
    """

    def __init__(self, unet: nn.Module, enhancer: nn.Module, diffusion: dict[str, Any], target: str = "soft", residual_scale: float = 3.0,
                 condition: str = "clahe"):
        super().__init__()
        if target not in TARGETS:
            raise ConfigError(f"unknown target {target!r}; use one of {TARGETS}")
        self.unet = unet
        self.enhancer = enhancer
        self.diffusion = {"prediction_type": "epsilon", **diffusion}
        self.num_train_timesteps = int(diffusion["num_train_timesteps"])
        self.divisor = 2 ** (len(unet.block_out_channels) - 1)
        self.target, self.residual_scale, self.cond_mode = target, float(residual_scale), condition

    def to_target(self, soft: torch.Tensor, cxr: torch.Tensor | None) -> torch.Tensor:
        """Diffusion target x0 of soft tissue ``soft`` (``[−1, 1]``) given the display-domain radiograph ``cxr``."""
        if self.target == "soft":
            return soft
        return self.residual_scale * ((soft + 1) / 2 - cxr)

    def from_target(self, x0: torch.Tensor, cxr: torch.Tensor | None) -> torch.Tensor:
        """Inverse of :meth:`to_target`: soft tissue in ``[−1, 1]``."""
        if self.target == "soft":
            return x0
        return (2 * (cxr + x0 / self.residual_scale) - 1).clamp(-1, 1)

    def scheduler(self, sampler: str = "ddpm", steps: int | None = None, device=None):
        """The MONAI scheduler of this model's noise schedule (see :func:`make_scheduler`)."""
        return make_scheduler(sampler, steps, device=device, **self.diffusion)

    def condition(self, x: torch.Tensor, use_clahe: bool = True) -> torch.Tensor:
        """Conditioning input of display-domain radiographs ``(B, 1, S, S)``: :func:`make_condition` with this
        model's mode (``use_clahe=False`` replaces CLAHE by the raw image, keeping the channel count)."""
        return condition_of(x, self.cond_mode, use_clahe)

    def noise_loss(self, soft: torch.Tensor, cond: torch.Tensor, noise: torch.Tensor | None = None, timesteps: torch.Tensor | None = None, inferer=None,
                   cxr: torch.Tensor | None = None, unet: nn.Module | None = None) -> torch.Tensor:
        """Diffusion training loss: MSE between the network output and its target (BS-Diff Eq. 3 for ε).

        The target is the noise ε (``prediction_type="epsilon"``, the paper), the clean x0 (``"sample"``)
        or the velocity ``v = √ᾱ_t ε − √(1−ᾱ_t) x0`` (``"v_prediction"``).

        Args:
            soft: target soft tissue ``(B, 1, S, S)`` in ``[−1, 1]``.
            cond: conditioning ``(B, C, S, S)`` in ``[−1, 1]`` (see :meth:`condition`).
            noise, timesteps: drawn here (standard normal, uniform in ``0 … T−1``) when ``None``.
            inferer: a MONAI ``DiffusionInferer`` (built from this model's DDPM schedule when ``None``).
            cxr: display-domain radiograph ``(B, 1, S, S)``; needed for ``target="residual"``.
            unet: network to evaluate instead of ``self.unet`` (e.g. EMA weights).

        Returns:
            Scalar loss.

        Raises:
            ConfigError: ``target="residual"`` without ``cxr``.
        """
        from monai.inferers import DiffusionInferer

        if self.target == "residual" and cxr is None:
            raise ConfigError("a residual-target BS-Diff needs the radiograph (cxr) for its loss")
        x0 = self.to_target(soft, cxr)
        if inferer is None:
            inferer = DiffusionInferer(self.scheduler("ddpm"))
        if noise is None:
            noise = torch.randn_like(x0)
        if timesteps is None:
            timesteps = torch.randint(0, self.num_train_timesteps, (x0.shape[0],), device=x0.device)
        pred = inferer(inputs=x0, diffusion_model=unet if unet is not None else self.unet, noise=noise, timesteps=timesteps, condition=cond, mode="concat")
        kind = self.diffusion["prediction_type"]
        if kind == "epsilon":
            ref = noise
        elif kind == "sample":
            ref = x0
        else:
            ref = inferer.scheduler.get_velocity(x0, noise, timesteps)
        return F.mse_loss(pred.float(), ref.float())

    @torch.no_grad()
    def sample(
        self,
        cond: torch.Tensor,
        steps: int = DEFAULT_STEPS,
        sampler: str = "ddim",
        seed: int | None = 0,
        amp: bool = True,
        progress: bool = False,
        unet: nn.Module | None = None,
        cxr: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Reverse diffusion from pure noise to a soft-tissue image given the radiograph.

        DDPM (paper, Ho et al. Eq. 11, all T steps) or DDIM (Song et al. Eq. 12, η = 0, ``steps`` steps),
        run by MONAI's ``DiffusionInferer.sample`` in ``concat`` mode.

        Args:
            cond: ``(B, C, S, S)`` conditioning (:meth:`condition`); ``S`` divisible by ``2**4``.
            steps: DDIM steps (``1 … T``); DDPM always uses T.
            sampler: ``"ddim"`` or ``"ddpm"``.
            seed: seeds the initial noise and DDPM's per-step noise (``None``: global RNG state).
                The same seed gives the same output on the same device.
            amp: bfloat16 autocast on CUDA (≈10× faster attention); ignored on CPU.
            progress: show MONAI's tqdm bar.
            unet: noise predictor to use instead of ``self.unet`` (e.g. EMA weights).
            cxr: the display-domain radiograph ``(B, 1, S, S)``; needed for ``target="residual"``.

        Returns:
            ``(B, 1, S, S)`` predicted soft tissue in ``[−1, 1]``.

        Raises:
            InputError: spatial size not divisible by the U-Net's downsampling factor.
            ConfigError: unknown sampler or steps out of range; residual target without ``cxr``.
        """
        from monai.inferers import DiffusionInferer

        from cxrdecomp.errors import InputError

        if cond.shape[-1] % self.divisor or cond.shape[-2] % self.divisor:
            raise InputError(f"BS-Diff needs a size divisible by {self.divisor}, got {tuple(cond.shape[-2:])}")
        if self.target == "residual" and cxr is None:
            raise ConfigError("a residual-target BS-Diff needs the radiograph (cxr) to sample")
        unet = unet if unet is not None else self.unet
        device = cond.device
        sch = self.scheduler(sampler, steps, device=None)
        gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        noise = torch.randn((cond.shape[0], 1, *cond.shape[2:]), generator=gen, dtype=torch.float32).to(device)
        use_amp = amp and device.type == "cuda"

        def eps(x, timesteps, context=None):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=use_amp):
                return unet(x, timesteps=timesteps.to(device)).float()

        inferer = DiffusionInferer(sch)
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(int(seed))
            out = inferer.sample(input_noise=noise, diffusion_model=eps, scheduler=sch, conditioning=cond.float(), mode="concat", verbose=progress)
        return self.from_target(out.clamp(-1, 1), cxr).clamp(-1, 1)

    def enhance(self, x: torch.Tensor, amp: bool = True) -> torch.Tensor:
        """Stage 2 on a stage-1 output ``(B, 1, S, S)`` in ``[−1, 1]`` → ``[−1, 1]``."""
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and x.device.type == "cuda"):
            return self.enhancer(x).float().clamp(-1, 1)


def _head_channels(channels: Sequence[int], head: int = 32) -> list[int]:
    return [c if c % head else head for c in channels]


def build_bsdiff(
    channels: Sequence[int] = (32, 48, 64, 96, 128),
    attention_levels: Sequence[bool] = (False, True, True, True, True),
    num_res_blocks: int = 3,
    norm_num_groups: int = 16,
    enhancer_channels: Sequence[int] = (32, 64, 64),
    enhancer_latent_channels: int = 8,
    enhancer_res_blocks: int = 2,
    enhancer_residual: bool = True,
    num_train_timesteps: int = NUM_TRAIN_TIMESTEPS,
    schedule: str = SCHEDULE,
    beta_start: float = BETA_START,
    beta_end: float = BETA_END,
    prediction_type: str = "epsilon",
    target: str = "soft",
    residual_scale: float = 3.0,
    condition: str = "clahe",
    **_ignored,
) -> BSDiff:
    """Build an untrained :class:`BSDiff` (both stages) from its ``config.json["model"]`` arguments.

    Defaults (≈ 9.1 M parameters, ≈ 18 MB in float16) are the paper's architecture at reduced width:
    the paper's U-Net has channels (64, 128, 256, 512, 768) and its autoencoder (128, 256, 384) — together
    > 400 M parameters — which would not fit a committable 20 MB checkpoint.

    ``prediction_type``, ``target`` and ``condition`` default to the paper (ε, soft tissue, CLAHE
    radiograph); see :class:`BSDiff` and :func:`make_condition` for the small-budget alternatives.

    Raises:
        ConfigError: inconsistent lengths, widths not divisible by ``norm_num_groups``, unknown options.
    """
    from monai.networks.nets import DiffusionModelUNet

    if condition not in CONDITIONS:
        raise ConfigError(f"unknown condition {condition!r}; use one of {CONDITIONS}")
    if prediction_type not in PREDICTION_TYPES:
        raise ConfigError(f"unknown prediction_type {prediction_type!r}; use one of {PREDICTION_TYPES}")

    channels, attention_levels = tuple(int(c) for c in channels), tuple(bool(a) for a in attention_levels)
    if len(channels) != len(attention_levels):
        raise ConfigError(f"channels {channels} and attention_levels {attention_levels} must have the same length")
    bad = [c for c in (*channels, *enhancer_channels) if c % norm_num_groups]
    if bad:
        raise ConfigError(f"widths {bad} are not multiples of norm_num_groups={norm_num_groups}")
    unet = DiffusionModelUNet(
        spatial_dims=2,
        in_channels=1 + (2 if condition == "raw+clahe" else 1),
        out_channels=1,
        channels=channels,
        attention_levels=attention_levels,
        num_res_blocks=num_res_blocks,
        num_head_channels=_head_channels(channels),
        norm_num_groups=norm_num_groups,
        use_flash_attention=True,
    )
    enhancer = Enhancer(enhancer_channels, enhancer_latent_channels, enhancer_res_blocks, norm_num_groups, enhancer_residual)
    diffusion = {"num_train_timesteps": num_train_timesteps, "schedule": schedule, "beta_start": beta_start, "beta_end": beta_end,
                 "prediction_type": prediction_type}
    return BSDiff(unet, enhancer, diffusion, target=target, residual_scale=residual_scale, condition=condition)


def predict_bsdiff(model: BSDiff, x: torch.Tensor, options: dict) -> dict[str, torch.Tensor]:
    """Soft-tissue image of radiographs ``x`` ``(B, 1, S, S)`` (display domain ``[0, 1]``, model size).

    Options (``config["inference"]`` overridden by the caller): ``steps`` (DDIM steps, default 20),
    ``sampler`` (``"ddim"`` | ``"ddpm"``; DDPM always runs all 1000 steps), ``seed`` (default 0:
    deterministic), ``enhance`` (apply stage 2; ``True`` in checkpoints where it was trained), ``clahe``
    (default ``True``, as in training), ``amp`` (bfloat16 on CUDA, default ``True``), ``progress``.

    Returns:
        ``{"soft_tissue": (B, 1, S, S)}`` display domain ``[0, 1]``; the Decomposer derives
        ``bone = x − soft_tissue``.
    """
    cond = model.condition(x, use_clahe=bool(options.get("clahe", True)))
    seed = options.get("seed", 0)
    y = model.sample(
        cond,
        steps=int(options.get("steps", DEFAULT_STEPS)),
        sampler=str(options.get("sampler", "ddim")),
        seed=None if seed is None else int(seed),
        amp=bool(options.get("amp", True)),
        progress=bool(options.get("progress", False)),
        cxr=x.clamp(0, 1).float(),
    )
    if options.get("enhance", False):
        y = model.enhance(y, amp=bool(options.get("amp", True)))
    return {"soft_tissue": ((y + 1) / 2).clamp(0, 1).to(x.dtype)}


# ------------------------------------------------------------------------------------------------
# Metrics (display domain) — the same definitions as data/README.md
# ------------------------------------------------------------------------------------------------


def image_metrics(pred: torch.Tensor, target: torch.Tensor, image: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image PSNR (dB, data range 1), SSIM (Gaussian 11×11 window) and BSR.

    ``BSR = 1 − Σ(Ŝ − S)² / Σ(I − S)²`` (identity = 0, perfect = 1). All inputs ``(B, 1, H, W)`` in the
    display domain ``[0, 1]``. Returns ``(B,)`` tensors.
    """
    from pytorch_msssim import ssim

    pred, target, image = pred.float(), target.float(), image.float()
    mse = ((pred - target) ** 2).flatten(1).mean(1)
    psnr = 10 * torch.log10(1.0 / mse.clamp_min(1e-12))
    win = min(11, (min(pred.shape[-2:]) // 2) * 2 - 1)
    s = ssim(pred, target, data_range=1.0, size_average=False, win_size=win)
    den = ((image - target) ** 2).flatten(1).sum(1).clamp_min(1e-12)
    bsr = 1 - ((pred - target) ** 2).flatten(1).sum(1) / den
    return {"psnr": psnr, "ssim": s, "bsr": bsr}


def ms_ssim_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``1 − MS-SSIM`` of display-domain images ``(B, 1, H, W)`` in ``[0, 1]`` (5 scales, Wang et al. 2003).

    The Gaussian window shrinks from 11 for images smaller than 161 pixels (pytorch-msssim needs
    ``side > (win − 1)·16``).
    """
    from pytorch_msssim import ms_ssim

    side = min(x.shape[-2:])
    win = 11
    while win > 3 and side <= (win - 1) * 16:
        win -= 2
    if side <= (win - 1) * 16:
        raise ConfigError(f"MS-SSIM needs images larger than {(win - 1) * 16} pixels, got {side}")
    return 1 - ms_ssim(x.float(), y.float(), data_range=1.0, win_size=win)


# ------------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------------


class BSDiffPairs(torch.utils.data.Dataset):
    """Training/validation items for both stages, with BS-Diff's augmentation (§3.2).

    Args:
        cxr, soft: ``(N, 1, S, S)`` display domain ``[0, 1]``.
        source: stage-2 input (stage-1 outputs) ``(N, 1, S, S)`` display domain, or ``None`` for stage 1.
        augment: random horizontal flip, rotation by ``±rotate`` degrees and gamma contrast change
            ``γ = exp(U(−gamma, gamma))`` — the same transform for every image of an item.
        use_clahe: CLAHE on the conditioning radiograph.
        condition: :func:`make_condition` mode of the model.
        repeats: the dataset is ``repeats`` passes over the pairs (longer epochs, fewer checkpoints).

    Items: ``{"cond", "soft"[, "source"]}`` in ``[−1, 1]`` and ``"cxr"`` in the display domain, each ``(1, S, S)``.
    """

    def __init__(self, cxr, soft, source=None, augment: bool = False, use_clahe: bool = True, repeats: int = 1, rotate: float = 10.0, gamma: float = 0.2,
                 condition: str = "clahe"):
        self.cxr, self.soft, self.source, self.cond_mode = cxr, soft, source, condition
        self.augment, self.use_clahe, self.repeats = augment, use_clahe, max(1, int(repeats))
        self.rotate, self.gamma = rotate, gamma

    def __len__(self) -> int:
        return len(self.cxr) * self.repeats

    def _augment(self, stack: torch.Tensor) -> torch.Tensor:
        if torch.rand(()) < 0.5:
            stack = stack.flip(-1)
        if self.rotate:
            a = math.radians(float(torch.empty(()).uniform_(-self.rotate, self.rotate)))
            theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]])[None]
            grid = F.affine_grid(theta, (1, *stack.shape), align_corners=False)
            stack = F.grid_sample(stack[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0]
        if self.gamma:
            g = math.exp(float(torch.empty(()).uniform_(-self.gamma, self.gamma)))
            stack = stack.clamp(0, 1) ** g
        return stack

    def __getitem__(self, i: int) -> dict:
        i = i % len(self.cxr)
        parts = [self.cxr[i], self.soft[i]] + ([self.source[i]] if self.source is not None else [])
        stack = torch.cat(parts, 0).float()
        if self.augment:
            stack = self._augment(stack)
        stack = stack.clamp(0, 1)
        cxr = stack[0:1]
        item = {"cxr": cxr, "cond": condition_of(cxr[None], self.cond_mode, self.use_clahe)[0], "soft": 2 * stack[1:2] - 1}
        if self.source is not None:
            item["source"] = 2 * stack[2:3] - 1
        return item


# ------------------------------------------------------------------------------------------------
# Training (Lightning): stage 1, stage 2, and the command's function
# ------------------------------------------------------------------------------------------------


def ema_decay_at(n_averaged: int, decay: float) -> float:
    """EMA decay after ``n_averaged`` updates, with warm-up: ``min(decay, (1 + n) / (10 + n))``.

    Without the warm-up a constant decay keeps ``decay**n`` of the *random initial* weights in the
    average (0.995**367 ≈ 16 % after a 367-step CPU run), which made the exported EMA U-Net of a short run
    far worse than the raw one (noise MSE 0.17 vs 0.03) — the same warm-up as diffusers' ``EMAModel``.
    """
    n = int(n_averaged)
    return min(float(decay), (1.0 + n) / (10.0 + n))


def _ema(module: nn.Module, decay: float):
    from torch.optim.swa_utils import AveragedModel

    @torch.no_grad()
    def multi_avg_fn(ema_params, current_params, num_averaged):
        w = 1.0 - ema_decay_at(int(num_averaged), decay)
        if not len(ema_params):
            return
        if torch.is_floating_point(ema_params[0]) or torch.is_complex(ema_params[0]):
            torch._foreach_lerp_(ema_params, current_params, w)
        else:  # integer buffers: copy
            for pe, pm in zip(ema_params, current_params):
                pe.copy_(pm)

    ema = AveragedModel(module, multi_avg_fn=multi_avg_fn, use_buffers=True)
    ema.requires_grad_(False)
    return ema


def _warmup_cosine(progress_fn, warmup: float = 0.02, floor: float = 0.05):
    """LR factor: linear warm-up over the first ``warmup`` of training, then cosine down to ``floor``."""

    def f(step: int) -> float:
        p = progress_fn(step)
        if p < warmup:
            return max(p / warmup, 1e-3)
        q = min(1.0, (p - warmup) / max(1e-8, 1 - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * q))

    return f


def _base_module():
    from cxrdecomp.train import MethodModule

    class _Timed(MethodModule):
        """A MethodModule with an optional wall-clock budget (``max_minutes``) that also drives the LR
        schedule: training progress is ``max(step / total_steps, elapsed / budget)``; the run stops at 1.
        Elapsed time is stored in the Lightning checkpoint, so a resumed run continues the budget."""

        max_minutes: float | None = None

        def _init_timer(self):
            self._elapsed_before = 0.0
            self._t0: float | None = None

        def elapsed(self) -> float:
            return self._elapsed_before + (time.monotonic() - self._t0 if self._t0 is not None else 0.0)

        def progress(self, step: int | None = None) -> float:
            total = max(1, int(self.trainer.estimated_stepping_batches)) if self._trainer is not None else 1
            step = self.global_step if step is None else step
            p = step / total
            if self.max_minutes:
                p = max(p, self.elapsed() / (60 * self.max_minutes))
            return p

        def on_train_start(self):
            self._t0 = time.monotonic()

        def on_train_batch_start(self, batch, batch_idx):
            if self.max_minutes and self.elapsed() >= 60 * self.max_minutes:
                if not self.trainer.should_stop:
                    print(f"bsdiff: time budget of {self.max_minutes} min reached at step {self.global_step}; stopping", file=sys.stderr)
                self.trainer.should_stop = True
                return -1
            return None

        def on_save_checkpoint(self, checkpoint):
            checkpoint["bsdiff_elapsed_s"] = self.elapsed()

        def on_load_checkpoint(self, checkpoint):
            self._elapsed_before = float(checkpoint.get("bsdiff_elapsed_s", 0.0))

    return _Timed


def _val_metrics_log(module, pred01, batch, prefix="val"):
    m = image_metrics(pred01, (batch["soft"] + 1) / 2, batch["cxr"])
    bs = pred01.shape[0]
    for k, v in m.items():
        module.log(f"{prefix}/{k}", v.mean(), sync_dist=True, batch_size=bs, prog_bar=(k == "bsr"))
    return m


def make_stage1_module(model_config: dict, *, input_size: int = 256, lr: float = 1e-4, ema_decay: float = 0.995, val_steps: int = 10, use_clahe: bool = True, max_minutes: float | None = None, weight_decay: float = 1e-2):
    """LightningModule of stage 1 (conditional DDPM): AdamW, warm-up + cosine LR, EMA of the U-Net.

    Validation logs ``val/loss`` (noise MSE, fixed noise) and, sampling with ``val_steps`` DDIM steps
    from the EMA U-Net, ``val/psnr``, ``val/ssim``, ``val/bsr`` (display domain, model size).
    The exported checkpoint holds the EMA weights; its stage-2 enhancer is untrained (``enhance=False``).
    """
    from monai.inferers import DiffusionInferer

    Base = _base_module()

    class BSDiffStage1(Base):
        method = "bsdiff"
        card_summary = (
            "BS-Diff stage 1 (conditional DDPM, Chen et al. ISBI 2024) trained on radiograph / soft-tissue pairs. "
            "Enhancer (stage 2) not trained in this checkpoint."
        )

        def __init__(self):
            super().__init__()
            self._init_timer()
            self.model_config = dict(model_config)
            self.input_size = input_size
            self.inference_defaults = {"steps": DEFAULT_STEPS, "sampler": "ddim", "seed": 0, "enhance": False, "clahe": use_clahe}
            self.net = build_bsdiff(**self.model_config)
            self.net.enhancer.requires_grad_(False)
            self.ema = _ema(self.net.unet, ema_decay)
            self.inferer = DiffusionInferer(self.net.scheduler("ddpm"))
            self.lr, self.wd, self.val_steps, self.max_minutes = lr, weight_decay, val_steps, max_minutes

        def export_config(self, metrics, training):
            cfg = super().export_config(metrics, training)
            cfg["dtype"] = "float16"
            cfg["stage"] = 1
            return cfg

        def training_step(self, batch, batch_idx):
            loss = self.net.noise_loss(batch["soft"], batch["cond"], inferer=self.inferer, cxr=batch["cxr"])
            self.log("train/loss", loss, prog_bar=True, batch_size=batch["soft"].shape[0])
            self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=batch["soft"].shape[0])
            return loss

        def on_train_batch_end(self, outputs, batch, batch_idx):
            self.ema.update_parameters(self.net.unet)

        def validation_step(self, batch, batch_idx):
            soft, cond = batch["soft"], batch["cond"]
            gen = torch.Generator().manual_seed(1000 + batch_idx)
            noise = torch.randn(soft.shape, generator=gen).to(soft)
            t = torch.randint(0, self.net.num_train_timesteps, (soft.shape[0],), generator=gen).to(soft.device)
            loss = self.net.noise_loss(soft, cond, noise=noise, timesteps=t, inferer=self.inferer, cxr=batch["cxr"], unet=self.ema.module)
            self.log("val/loss", loss, sync_dist=True, batch_size=soft.shape[0])
            if self.val_steps:
                y = self.net.sample(cond, steps=self.val_steps, sampler="ddim", seed=batch_idx, unet=self.ema.module, cxr=batch["cxr"])
                _val_metrics_log(self, (y + 1) / 2, batch)

        def configure_optimizers(self):
            opt = torch.optim.AdamW(self.net.unet.parameters(), lr=self.lr, weight_decay=self.wd)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, _warmup_cosine(lambda s: self.progress(s)))
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

        def on_fit_end(self):
            if self.ema.n_averaged.item() > 0:
                self.net.unet.load_state_dict(self.ema.module.state_dict())

    return BSDiffStage1()


def make_stage2_module(net: BSDiff, model_config: dict, *, input_size: int = 256, lr: float = 1e-4, d_lr: float = 5e-4, ema_decay: float = 0.995,
                       weights: dict[str, float] | None = None, perceptual: nn.Module | None = None, use_clahe: bool = True,
                       max_minutes: float | None = None, stage1_info: dict | None = None):
    """LightningModule of stage 2 (enhancement autoencoder), manual optimisation of generator and critic.

    Generator loss (BS-Diff Eq. 5): ``λ_mae·|Ŝ−S|₁ + λ_ms-ssim·(1 − MS-SSIM) + λ_perc·L_VGG + λ_adv·L_adv``
    with λ = 1, 1, 0.001, 0.01 by default; ``perceptual=None`` switches the VGG16 term off. The
    discriminator is MONAI's ``PatchDiscriminator`` with the least-squares GAN loss (pix2pixHD).
    Validation logs ``val/psnr``, ``val/ssim``, ``val/bsr`` of the enhanced output and
    ``val/stage1_*`` of its input (the paper's Table 2 ablation).
    """
    from monai.losses import PatchAdversarialLoss
    from monai.networks.nets import PatchDiscriminator

    lam = {"mae": 1.0, "ms_ssim": 1.0, "perceptual": 0.001, "adversarial": 0.01, **(weights or {})}
    Base = _base_module()

    class BSDiffStage2(Base):
        method = "bsdiff"
        card_summary = (
            "BS-Diff (Chen et al. ISBI 2024): stage 1 conditional DDPM + stage 2 enhancement autoencoder, trained on "
            "radiograph / soft-tissue pairs. Sampling: DDIM (default 20 steps) or DDPM (1000 steps)."
        )

        def __init__(self):
            super().__init__()
            self._init_timer()
            self.automatic_optimization = False
            self.model_config = dict(model_config)
            self.input_size = input_size
            self.inference_defaults = {"steps": DEFAULT_STEPS, "sampler": "ddim", "seed": 0, "enhance": True, "clahe": use_clahe}
            self.net = net.train()
            self.net.unet.requires_grad_(False)
            self.ema = _ema(self.net.enhancer, ema_decay)
            self.disc = PatchDiscriminator(spatial_dims=2, channels=32, in_channels=1, out_channels=1, num_layers_d=3, norm="BATCH")
            self.adv = PatchAdversarialLoss(criterion="least_squares")
            self.perceptual = perceptual
            self.lr, self.d_lr, self.max_minutes = lr, d_lr, max_minutes
            self.stage1_info = stage1_info or {}

        def _enhancer_helps(self, metrics) -> bool:
            # the exported default applies the enhancer only where it did not lower validation BSR (Table 2)
            b, b1 = metrics.get("val/bsr"), metrics.get("val/stage1_bsr")
            return b is None or b1 is None or float(b) >= float(b1)

        def export_config(self, metrics, training):
            cfg = super().export_config(metrics, training)
            cfg["dtype"] = "float16"
            cfg["stage"] = 2
            cfg["stage2"] = {"weights": lam, "perceptual": self.perceptual is not None, **self.stage1_info}
            cfg["inference"] = {**cfg["inference"], "enhance": self._enhancer_helps(metrics)}
            return cfg

        def model_card(self, metrics, training, n_params, size_mb):
            card = super().model_card(metrics, training, n_params, size_mb)
            s1 = {k: v for k, v in metrics.items() if "stage1_" in k}
            extra = ["## Stage 2 losses", "", f"- λ: {lam}", f"- VGG16 perceptual term: {'on' if self.perceptual is not None else 'OFF (no weights file given)'}",
                     f"- Stage-1 checkpoint: {self.stage1_info.get('stage1_checkpoint', '')}; stage-2 inputs made with DDIM-{self.stage1_info.get('gen_steps', '')}",
                     "", "## Ablation (paper Table 2): validation without the enhancer", ""]
            extra += [f"- {k.replace('stage1_', '')} without enhancer: {v:.4g}" for k, v in sorted(s1.items())] or ["- (not measured)"]
            extra += ["", "Default: " + ("the enhancer is applied (`enhance: true`): it did not lower validation BSR." if self._enhancer_helps(metrics) else
                                         "the enhancer is NOT applied (`enhance: false`): it lowered validation BSR; `enhance=True` turns it on.")]
            return card + "\n".join(extra) + "\n"

        def training_step(self, batch, batch_idx):
            opt_g, opt_d = self.optimizers()
            src, soft = batch["source"], batch["soft"]
            bs = src.shape[0]
            out = self.net.enhancer(src)
            out01, soft01 = (out.clamp(-1, 1) + 1) / 2, (soft + 1) / 2
            l_mae = F.l1_loss(out01, soft01)
            l_ms = ms_ssim_loss(out01, soft01)
            loss_g = lam["mae"] * l_mae + lam["ms_ssim"] * l_ms
            if self.perceptual is not None and lam["perceptual"]:
                l_p = self.perceptual(out01, soft01)
                loss_g = loss_g + lam["perceptual"] * l_p
                self.log("train/perceptual", l_p, batch_size=bs)
            l_adv = self.adv(self.disc(out.contiguous())[-1], target_is_real=True, for_discriminator=False)
            loss_g = loss_g + lam["adversarial"] * l_adv
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(loss_g)
            opt_g.step()

            d_fake = self.adv(self.disc(out.detach().contiguous())[-1], target_is_real=False, for_discriminator=True)
            d_real = self.adv(self.disc(soft.contiguous())[-1], target_is_real=True, for_discriminator=True)
            loss_d = lam["adversarial"] * 0.5 * (d_fake + d_real)
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(loss_d)
            opt_d.step()
            for s in self.lr_schedulers():
                s.step()
            self.ema.update_parameters(self.net.enhancer)
            self.log_dict({"train/loss": loss_g, "train/mae": l_mae, "train/ms_ssim": l_ms, "train/adv_g": l_adv, "train/d": loss_d}, prog_bar=False, batch_size=bs)
            self.log("train/loss_g", loss_g, prog_bar=True, batch_size=bs)

        def validation_step(self, batch, batch_idx):
            src = batch["source"]
            out = self.ema.module(src).clamp(-1, 1)
            m = _val_metrics_log(self, (out + 1) / 2, batch)
            s1 = image_metrics((src + 1) / 2, (batch["soft"] + 1) / 2, batch["cxr"])
            for k, v in s1.items():
                self.log(f"val/stage1_{k}", v.mean(), sync_dist=True, batch_size=src.shape[0])
            self.log("val/loss", F.l1_loss((out + 1) / 2, (batch["soft"] + 1) / 2), sync_dist=True, batch_size=src.shape[0])
            return m

        def configure_optimizers(self):
            params = [p for p in self.net.enhancer.parameters() if p.requires_grad]
            opt_g = torch.optim.AdamW(params, lr=self.lr)
            opt_d = torch.optim.AdamW(self.disc.parameters(), lr=self.d_lr)
            # manual optimisation: the step count is the number of training batches (both schedulers per batch)
            f = _warmup_cosine(lambda s: self.progress(s))
            return [opt_g, opt_d], [torch.optim.lr_scheduler.LambdaLR(opt_g, f), torch.optim.lr_scheduler.LambdaLR(opt_d, f)]

        def progress(self, step=None):
            # with two optimizers Lightning's global_step counts both; use the scheduler's own count
            return super().progress(step if step is not None else self.global_step // 2)

        def on_fit_end(self):
            if self.ema.n_averaged.item() > 0:
                self.net.enhancer.load_state_dict(self.ema.module.state_dict())

    return BSDiffStage2()


def _load_perceptual(path):
    """VGG16 perceptual loss from ``cxrdecomp.nn.losses`` reading a torchvision-format state dict at ``path``.

    Returns ``None`` (and says so on stderr) when ``path`` is ``None``.

    Raises:
        ConfigError: ``path`` given but the file or the loss implementation is missing.
    """
    if path is None:
        print("bsdiff: no VGG16 weights given (--perceptual-weights): the perceptual loss term is OFF", file=sys.stderr)
        return None
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"VGG16 weights file {p} not found; give a torchvision-format vgg16 state dict (.pth/.safetensors)")
    try:
        from cxrdecomp.nn import losses
    except ImportError as e:  # pragma: no cover - depends on merge order
        raise ConfigError("the perceptual loss needs cxrdecomp.nn.losses (VGG16 perceptual loss), which is not installed") from e
    for name in ("VGG16PerceptualLoss", "PerceptualLoss", "VGGPerceptualLoss"):
        cls = getattr(losses, name, None)
        if cls is not None:
            return cls(p)
    raise ConfigError("cxrdecomp.nn.losses has no VGG16 perceptual loss class (expected VGG16PerceptualLoss(weights_path))")


TRAIN_DEFAULTS: dict[str, Any] = {
    "stage": 1,
    "data": None,  # folder with train/ and val/ (each cxr/ + soft/); default: cxrdecomp.data.pairs.default_bse_jsrt()
    "out": "runs/bsdiff",
    "size": 256,
    "epochs": 100,
    "repeats": 1,
    "batch_size": 2,
    "lr": 1e-4,
    "d_lr": 5e-4,
    "ema": 0.995,
    "max_minutes": None,
    "num_workers": 2,
    "val_steps": 10,
    "val_every": 1,
    "gen_steps": DEFAULT_STEPS,
    "stage1": None,  # stage 2: stage-1 checkpoint folder (default OUT/../stage1/model)
    "perceptual_weights": None,
    "clahe": True,
    "augment": True,
    "seed": 0,
    "accelerator": "auto",
    "devices": 1,
    "precision": None,
    "model": {},  # build_bsdiff overrides (channels, attention_levels, enhancer_channels, ...)
    "limit_pairs": None,  # use only the first N pairs of each split (smoke tests)
    "progress": True,
}


def _load_split(root: Path, split: str, size: int, limit: int | None):
    from cxrdecomp.data.pairs import PairedImages

    folder = root / split
    ds = PairedImages(folder, size=size)
    cxr, soft = ds.cxr, ds.soft
    if limit:
        cxr, soft = cxr[:limit], soft[:limit]
    return cxr, soft, [p[0].stem for p in ds.pairs][: len(cxr)]


def _stage1_outputs(net: BSDiff, cxr: torch.Tensor, steps: int, use_clahe: bool, device: torch.device, batch: int = 16) -> torch.Tensor:
    """Stage-1 DDIM outputs (display domain) of ``cxr`` ``(N, 1, S, S)``, seeded per image index."""
    net = net.to(device).eval()
    outs = []
    for i in range(0, len(cxr), batch):
        x = cxr[i : i + batch].to(device)
        y = net.sample(net.condition(x, use_clahe), steps=steps, sampler="ddim", seed=i, cxr=x)
        outs.append(((y + 1) / 2).float().cpu())
    return torch.cat(outs)


def train_bsdiff(options: dict[str, Any]) -> Path:
    """Train one BS-Diff stage on paired folders and export ``OUT/model`` (see :data:`TRAIN_DEFAULTS`).

    Stage 1 trains the conditional DDPM; stage 2 loads a stage-1 checkpoint (``options["stage1"]``),
    computes its DDIM outputs for every pair once (cached in ``OUT/stage1_outputs.pt``), then trains the
    enhancer on (stage-1 output → soft tissue). Both write checkpoints/logs and resume through
    :func:`cxrdecomp.train.fit`. ``max_minutes`` bounds the wall time of a run (LR schedule included).

    Returns:
        The exported checkpoint folder ``OUT/model``.

    Raises:
        DataNotFoundError: data folder missing; ConfigError: bad options; CheckpointError: bad stage-1 folder.
    """
    import lightning as L

    from cxrdecomp import checkpoint
    from cxrdecomp.data.pairs import default_bse_jsrt
    from cxrdecomp.errors import DataNotFoundError
    from cxrdecomp.io.atomic import atomic_path
    from cxrdecomp.train import fit

    o = {**TRAIN_DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    unknown = set(options) - set(TRAIN_DEFAULTS)
    if unknown:
        raise ConfigError(f"unknown bsdiff training options {sorted(unknown)}")
    stage = int(o["stage"])
    if stage not in (1, 2):
        raise ConfigError(f"stage must be 1 or 2, got {stage}")
    root = Path(o["data"]) if o["data"] else default_bse_jsrt()
    if not (root / "train").is_dir() or not (root / "val").is_dir():
        raise DataNotFoundError(f"{root} must hold train/ and val/ folders of cxr/ + soft/ pairs (e.g. bse-jsrt); pass --data")
    size, out = int(o["size"]), Path(o["out"])
    L.seed_everything(int(o["seed"]), workers=True, verbose=False)
    tr_cxr, tr_soft, _ = _load_split(root, "train", size, o["limit_pairs"])
    va_cxr, va_soft, _ = _load_split(root, "val", size, o["limit_pairs"])
    data_desc = f"{root} (train {len(tr_cxr)} pairs, val {len(va_cxr)} pairs) at {size}², CLAHE={o['clahe']}, augment={o['augment']}"
    cuda = torch.cuda.is_available() and o["accelerator"] in ("auto", "gpu", "cuda")
    precision = o["precision"] or ("bf16-mixed" if cuda else "32-true")
    trainer_kw = dict(max_epochs=int(o["epochs"]), accelerator=o["accelerator"], devices=o["devices"], precision=precision,
                      progress=bool(o["progress"]), val_every=int(o["val_every"]), log_every=10)

    if stage == 1:
        model_config = {**o["model"]}
        net_probe = build_bsdiff(**model_config)
        if size % net_probe.divisor:
            raise ConfigError(f"size {size} must be divisible by {net_probe.divisor}")
        module = make_stage1_module(model_config, input_size=size, lr=float(o["lr"]), ema_decay=float(o["ema"]), val_steps=int(o["val_steps"]),
                                    use_clahe=bool(o["clahe"]), max_minutes=o["max_minutes"])
        cmode = str(model_config.get("condition", "clahe"))
        train_ds = BSDiffPairs(tr_cxr, tr_soft, augment=bool(o["augment"]), use_clahe=bool(o["clahe"]), repeats=int(o["repeats"]), condition=cmode)
        val_ds = BSDiffPairs(va_cxr, va_soft, use_clahe=bool(o["clahe"]), condition=cmode)
    else:
        s1 = Path(o["stage1"]) if o["stage1"] else out.parent / "stage1" / "model"
        try:
            net, cfg1 = checkpoint.load(s1)
        except CheckpointError as e:
            raise CheckpointError(f"stage 2 needs a trained stage-1 checkpoint (--stage1): {e}") from e
        if cfg1.get("method") != "bsdiff":
            raise CheckpointError(f"{s1} is a {cfg1.get('method')!r} checkpoint, not bsdiff")
        if int(cfg1.get("input_size", size)) != size:
            raise ConfigError(f"stage-1 checkpoint runs at {cfg1.get('input_size')}², but --size is {size}")
        model_config = {**cfg1.get("model", {}), **o["model"]}
        if o["model"]:  # enhancer overrides: rebuild, keep the stage-1 U-Net
            new = build_bsdiff(**model_config)
            new.unet.load_state_dict(net.unet.state_dict())
            net = new
        net = net.float()
        gen_steps = int(o["gen_steps"])
        use_clahe = bool(cfg1.get("inference", {}).get("clahe", o["clahe"]))
        cache = out / "stage1_outputs.pt"
        key = {"stage1": str(s1.resolve()), "steps": gen_steps, "size": size, "n": (len(tr_cxr), len(va_cxr))}
        cached = torch.load(cache, weights_only=False) if cache.is_file() else None
        if cached is None or cached.get("key") != key:
            dev = torch.device("cuda" if cuda else "cpu")
            print(f"bsdiff: stage-1 DDIM-{gen_steps} outputs for {len(tr_cxr) + len(va_cxr)} images ...", file=sys.stderr)
            t0 = time.time()
            cached = {"key": key, "train": _stage1_outputs(net, tr_cxr, gen_steps, use_clahe, dev),
                      "val": _stage1_outputs(net, va_cxr, gen_steps, use_clahe, dev)}
            out.mkdir(parents=True, exist_ok=True)
            with atomic_path(cache) as tmp:
                torch.save(cached, tmp)
            print(f"bsdiff: done in {time.time() - t0:.1f} s", file=sys.stderr)
        net = net.cpu()
        perceptual = _load_perceptual(o["perceptual_weights"])
        info = {"stage1_checkpoint": str(s1), "stage1_metrics": cfg1.get("metrics", {}), "stage1_training": cfg1.get("training", {}), "gen_steps": gen_steps}
        module = make_stage2_module(net, model_config, input_size=size, lr=float(o["lr"]), d_lr=float(o["d_lr"]), ema_decay=float(o["ema"]),
                                    perceptual=perceptual, use_clahe=use_clahe, max_minutes=o["max_minutes"], stage1_info=info)
        cmode = str(model_config.get("condition", "clahe"))
        train_ds = BSDiffPairs(tr_cxr, tr_soft, cached["train"], augment=bool(o["augment"]), use_clahe=use_clahe, repeats=int(o["repeats"]), condition=cmode)
        val_ds = BSDiffPairs(va_cxr, va_soft, cached["val"], use_clahe=use_clahe, condition=cmode)

    nw = int(o["num_workers"])
    dl_kw = dict(num_workers=nw, persistent_workers=nw > 0, pin_memory=cuda)
    train_loader = torch.utils.data.DataLoader(train_ds, batch_size=int(o["batch_size"]), shuffle=True, drop_last=len(train_ds) > int(o["batch_size"]), **dl_kw)
    val_loader = torch.utils.data.DataLoader(val_ds, batch_size=max(int(o["batch_size"]), 4), shuffle=False, **dl_kw)
    return fit(module, train_loader, val_loader, out, data_description=data_desc + f"; stage {stage}", **trainer_kw)
