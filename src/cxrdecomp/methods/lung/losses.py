"""Losses of the lung-structure networks (Gozes & Greenspan 2018, §2.2 and Eq. 5)."""

from __future__ import annotations

import torch


def weighted_bce(p: torch.Tensor, y: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Class-balanced binary cross-entropy of the segmentation U-Net (§2.2, "weighted binary
    cross-entropy"): positives weighted by ``n_neg / n_pos`` of the batch, normalised by the total weight.

    Args:
        p: ``(B, 1, H, W)`` predicted lung probability (clamped to ``[eps, 1 − eps]``).
        y: same shape, 0/1 lung mask.

    Returns:
        Scalar tensor (float32; nats per unit weight).
    """
    p, y = p.float().clamp(eps, 1 - eps), y.float()
    n_pos = y.sum().clamp_min(1.0)
    n_neg = (1 - y).sum().clamp_min(1.0)
    w = torch.where(y > 0.5, n_neg / n_pos, torch.ones_like(y))
    return (w * -(y * p.log() + (1 - y) * (1 - p).log())).sum() / w.sum()


def nodule_weighted_l1(pred: torch.Tensor, target: torch.Tensor, nodule_mask: torch.Tensor, w_nodule: float = 30.0) -> torch.Tensor:
    """Eq. 5, the loss of the extraction U-Net: mean of ``|ŷ − y|·(1 + w_nodule·noduleMask)`` (the L1
    norm divided by the pixel count). ``w_nodule = 0`` is the paper's unweighted ablation.

    Shapes: ``pred``, ``target``, ``nodule_mask`` (0/1) ``(B, 1, H, W)`` → scalar tensor (float32).
    """
    return ((pred.float() - target.float()).abs() * (1.0 + w_nodule * nodule_mask.float())).mean()
