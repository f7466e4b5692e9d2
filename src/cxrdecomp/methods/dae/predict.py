"""Inference of the DAE / AE (``dae``, ``ae``): the soft-tissue image of a radiograph."""

from __future__ import annotations

import torch

from cxrdecomp.methods.dae.network import DAE


def predict(model: DAE, x: torch.Tensor, options: dict) -> dict[str, torch.Tensor]:
    """Soft-tissue image of radiographs ``x`` ``(B, 1, S, S)``, display domain ``[0, 1]``, ``S`` divisible by 4.

    Runs the encoder and soft-tissue estimator only (``options`` is unused: the DAE has no inference
    settings); :class:`cxrdecomp.decomposer.Decomposer` derives ``bone = x − soft_tissue`` at model size
    and applies it at full resolution.

    Returns:
        ``{"soft_tissue": (B, 1, S, S)}``, display domain.
    """
    return {"soft_tissue": model(x)}
