"""Bone extraction U-Net (method 1: "Bone structures extraction and enhancement in chest
radiographs via CNN trained on synthetic data", §2.3–2.4).

Registered as ``bone_unet``. The network sees a zero-mean, unit-variance normalised radiograph and
outputs ``tanh`` values; the bone image in the display domain is ``bone_scale · output``.
"""

from __future__ import annotations

import torch

from cxrdecomp.models.blocks import UNet


def build_bone_unet(base: int = 32, depth: int = 4, dilate_from: int = 2, **_ignored) -> UNet:
    """The paper's U-Net: 1 channel in and out, ``base`` filters first, dilated deeper levels, tanh out."""
    return UNet(1, 1, base=base, depth=depth, dilate_from=dilate_from, out_activation="tanh")


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Zero-mean, unit-variance per image. Shape ``(B, 1, H, W)`` → same."""
    m = x.mean(dim=(-1, -2), keepdim=True)
    s = x.std(dim=(-1, -2), keepdim=True).clamp_min(1e-6)
    return (x - m) / s


def predict_bone(model, x: torch.Tensor, options: dict) -> dict[str, torch.Tensor]:
    """Bone image (display domain) of ``x`` ``(B, 1, S, S)`` in ``[0, 1]``: ``{"bone": (B, 1, S, S)}``."""
    scale = float(options.get("bone_scale", 1.0))
    return {"bone": scale * model(normalize(x))}
