"""BS-Diff networks: the stage-1 conditional noise predictor and the stage-2 enhancer, in one module.

Chen et al., "BS-Diff: Effective Bone Suppression Using Conditional Diffusion Models from Chest X-Ray
Images", ISBI 2024 (arXiv:2311.15328).

* **Stage 1** (§2.2): a DDPM (Ho et al. 2020) whose noise predictor ε_θ(x_t, t, I) is a U-Net taking the
  noisy soft-tissue image x_t concatenated channel-wise with the (CLAHE-processed) radiograph I;
  five resolution levels, 3 residual blocks per level, self-attention in the last (deepest) four
  levels; T = 1000; β from 0.0015 to 0.0205 along a cosine curve
  (:func:`cxrdecomp.methods.bsdiff.diffusion.cosine_interpolated_betas`); loss
  ``‖ε − ε_θ(√ᾱ_t S + √(1−ᾱ_t) ε, t, I)‖²`` (paper Eq. 3, DDPM Eq. 14).
* **Stage 2** (§2.3–2.4): an autoencoder (MONAI ``AutoencoderKL`` used deterministically) mapping the
  smooth diffusion output to a sharp soft-tissue image (trained in :mod:`cxrdecomp.methods.bsdiff.module`).
* **Beyond the paper**: DDIM sampling (Song et al. 2021, Eq. 12, η = 0) with 10–50 steps instead of 1000
  DDPM steps.

Both stages live in one :class:`BSDiff` module (one checkpoint folder). Inside the network images are in
``[−1, 1]`` (``2·display − 1``, paper §3.2); the conditioning channels are made by
:func:`cxrdecomp.methods.bsdiff.predict.make_condition`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cxrdecomp.errors import ConfigError
from cxrdecomp.methods.bsdiff.diffusion import (
    BETA_END,
    BETA_START,
    DEFAULT_STEPS,
    NUM_TRAIN_TIMESTEPS,
    PREDICTION_TYPES,
    SCHEDULE,
    make_scheduler,
)

TARGETS = ("soft", "residual")
CONDITIONS = ("clahe", "raw", "raw+clahe")


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
            channels, see :func:`cxrdecomp.methods.bsdiff.predict.make_condition`) and 1 output (ε, x0 or
            v: ``prediction_type``).
        enhancer: :class:`Enhancer`.
        diffusion: ``{"num_train_timesteps", "schedule", "beta_start", "beta_end", "prediction_type"}``.
        target: ``"soft"`` or ``"residual"``; residual_scale: the factor of the residual target.
        condition: :func:`cxrdecomp.methods.bsdiff.predict.make_condition` mode (stored as ``cond_mode``).
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

    def noise_loss(self, soft: torch.Tensor, cond: torch.Tensor, noise: torch.Tensor | None = None, timesteps: torch.Tensor | None = None, inferer=None,
                   cxr: torch.Tensor | None = None, unet: nn.Module | None = None) -> torch.Tensor:
        """Diffusion training loss: MSE between the network output and its target (BS-Diff Eq. 3 for ε).

        The target is the noise ε (``prediction_type="epsilon"``, the paper), the clean x0 (``"sample"``)
        or the velocity ``v = √ᾱ_t ε − √(1−ᾱ_t) x0`` (``"v_prediction"``).

        Args:
            soft: target soft tissue ``(B, 1, S, S)`` in ``[−1, 1]``.
            cond: conditioning ``(B, C, S, S)`` in ``[−1, 1]`` (:func:`cxrdecomp.methods.bsdiff.predict.condition`).
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
            cond: ``(B, C, S, S)`` conditioning (:func:`cxrdecomp.methods.bsdiff.predict.condition`); ``S`` divisible by ``2**4``.
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


def build(
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
    radiograph); see :class:`BSDiff` and :func:`cxrdecomp.methods.bsdiff.predict.make_condition` for the
    small-budget alternatives.

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
