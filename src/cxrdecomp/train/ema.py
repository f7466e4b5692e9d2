"""Exponential moving average of a network's weights (diffusion models, GAN generators)."""

from __future__ import annotations

import torch
from torch import nn


def ema_decay_at(n_averaged: int, decay: float) -> float:
    """EMA decay after ``n_averaged`` updates, with warm-up: ``min(decay, (1 + n) / (10 + n))``.

    Without the warm-up a constant decay keeps ``decay**n`` of the *random initial* weights in the
    average (0.995**367 ≈ 16 % after a 367-step CPU run), which made the exported EMA U-Net of a short run
    far worse than the raw one (noise MSE 0.17 vs 0.03) — the same warm-up as diffusers' ``EMAModel``.
    """
    n = int(n_averaged)
    return min(float(decay), (1.0 + n) / (10.0 + n))


def make_ema(module: nn.Module, decay: float) -> torch.optim.swa_utils.AveragedModel:
    """An ``AveragedModel`` of ``module`` (buffers included) updated with :func:`ema_decay_at`.

    Call ``ema.update_parameters(module)`` after each optimiser step; ``ema.module`` is the average.
    """
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
