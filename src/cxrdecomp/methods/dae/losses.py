"""DAE objective (Eq. 1–7) and the bone mask that supervises its segmentation branch (§2.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cxrdecomp.methods.dae.options import DEFAULT_MASK_THRESHOLD
from cxrdecomp.nn.losses import ms_ssim_loss


def bone_mask(cxr: torch.Tensor, soft: torch.Tensor, threshold: float = DEFAULT_MASK_THRESHOLD) -> torch.Tensor:
    """Binary bone mask ``M = [(cxr − soft) > threshold]`` (display domain, §2.2), float ``(B, 1, H, W)``.

    The default ``4/255`` separates the ribs and clavicles of BSE-JSRT from the near-zero
    (|d| ≤ 1/255) differences elsewhere; see docs/dae.md.
    """
    return ((cxr - soft) > threshold).to(cxr.dtype)


def dae_loss(
    soft_pred: torch.Tensor,
    soft: torch.Tensor,
    seg_logits: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    *,
    use_msssim: bool = True,
    lambda_mse: float = 1.0,
    lambda_seg: float = 0.1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DAE objective (Eq. 1–7): ``L = L_MS-SSIM + λ_m L_MSE + λ_s L_seg`` on display-domain ``(B, 1, H, W)``.

    ``L_MS-SSIM = 1 − MS-SSIM(Ŝ, S)`` (:func:`cxrdecomp.nn.losses.ms_ssim_loss`: 5 scales, α = 1,
    β = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), data range 1), ``L_MSE = mean (Ŝ − S)²``, ``L_seg`` the
    binary cross-entropy between the branch's logits and the bone mask. Terms are dropped for the
    ablation variants: no MS-SSIM term when ``use_msssim`` is false, no segmentation term when
    ``seg_logits`` is ``None`` (plain AE, whose loss is then ``λ_m · MSE``).

    Returns:
        ``(loss, parts)`` with parts ``{"msssim", "mse", "seg"}`` (those used, detached).

    Raises:
        ValueError: ``seg_logits`` given without ``mask``.
        InputError: images too small for 5-scale MS-SSIM (≤ 32 px), with ``use_msssim``.
    """
    parts: dict[str, torch.Tensor] = {}
    mse = F.mse_loss(soft_pred, soft)
    loss = lambda_mse * mse
    parts["mse"] = mse.detach()
    if use_msssim:
        ms = ms_ssim_loss(soft_pred, soft)
        loss = loss + ms
        parts["msssim"] = ms.detach()
    if seg_logits is not None:
        if mask is None:
            raise ValueError("a bone mask is needed with the segmentation branch")
        seg = F.binary_cross_entropy_with_logits(seg_logits.float(), mask.float())
        loss = loss + lambda_seg * seg
        parts["seg"] = seg.detach()
    return loss, parts
