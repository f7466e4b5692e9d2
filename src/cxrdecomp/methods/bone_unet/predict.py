"""Bone extraction U-Net (method 1: "Bone structures extraction and enhancement in chest
radiographs via CNN trained on synthetic data", Gozes & Greenspan, ISBI 2019, §2.3–2.4).

Registered as ``bone_unet`` (bundled checkpoint ``bone``). Training pairs are defined in the display domain
(:mod:`cxrdecomp.data.simulated`): input ``x ∈ [0, 1]`` (air dark, bone bright) and bone image ``b`` with
``x ≈ soft + b``. The network sees the zero-mean, unit-variance normalised radiograph and its ``tanh``
output ``o`` is the bone image in units of the input's standard deviation::

    bone = bone_scale · std(x) · o          (display domain, same size as x)

so the prediction is equivariant to affine intensity changes of the input (``x → a·x + c`` gives
``bone → a·bone``): the window/LUT of a real radiograph does not change what is called bone.
``bone_scale`` (``config["inference"]["bone_scale"]``, default :data:`BONE_SCALE`) keeps the targets
inside tanh's range.
"""

from __future__ import annotations

import torch

BONE_SCALE = 2.5
"""Default ``bone_scale``: training targets ``b / (std(x)·bone_scale)`` stay within about ±0.7."""


def image_std(x: torch.Tensor) -> torch.Tensor:
    """Per-image standard deviation ``(B, 1, 1, 1)`` of ``(B, 1, H, W)`` (floored at 1e-6)."""
    return x.std(dim=(-1, -2), keepdim=True).clamp_min(1e-6)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Zero-mean, unit-variance per image (paper §2.3). Shape ``(B, 1, H, W)`` → same."""
    m = x.mean(dim=(-1, -2), keepdim=True)
    return (x - m) / image_std(x)


def bone_to_target(bone: torch.Tensor, x: torch.Tensor, bone_scale: float = BONE_SCALE) -> torch.Tensor:
    """Display-domain bone image → network target ``bone / (bone_scale · std(x))``."""
    return bone / (bone_scale * image_std(x))


def output_to_bone(out: torch.Tensor, x: torch.Tensor, bone_scale: float = BONE_SCALE) -> torch.Tensor:
    """Network output → display-domain bone image ``bone_scale · std(x) · out``."""
    return out * (bone_scale * image_std(x))


def predict(model, x: torch.Tensor, options: dict) -> dict[str, torch.Tensor]:
    """Bone image (display domain) of radiographs ``x`` ``(B, 1, S, S)`` in ``[0, 1]``.

    Returns ``{"bone": (B, 1, S, S)}`` with ``x ≈ soft_tissue + bone`` (see module docstring);
    ``options["bone_scale"]`` from the checkpoint's ``config["inference"]``.
    """
    scale = float(options.get("bone_scale", BONE_SCALE))
    return {"bone": output_to_bone(model(normalize(x)), x, scale)}
