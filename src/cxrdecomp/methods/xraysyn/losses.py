"""XraySyn objectives: the 3DPN loss (Eq. 8–10), the 2DRN loss (Eq. 11–14) and the LSGAN terms (Eq. 14).

The x-ray terms of the 3DPN loss need the differentiable projector; they are computed by the caller
(:func:`xray_loss` per view) and passed in, so this module does not depend on the projector.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cxrdecomp.errors import InputError
from cxrdecomp.nn.losses import l1_loss


def _same(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise InputError(f"{what}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")


def lsgan_d_loss(d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """LSGAN discriminator loss (Eq. 14, Mao et al. 2017, labels a=0, b=1): ``½E[(D(real)−1)²] + ½E[D(fake)²]``.

    ``d_real``, ``d_fake``: raw PatchGAN scores of any shape (means over all patches). The authors' code
    (pix2pix ``GANLoss("lsgan")``) omits the ½, i.e. its value is twice this one.
    """
    return 0.5 * (d_real - 1.0).square().mean() + 0.5 * d_fake.square().mean()


def lsgan_g_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """LSGAN generator loss (Eq. 14, target c=1): ``½E[(D(fake)−1)²]`` of raw PatchGAN scores (authors: no ½)."""
    return 0.5 * (d_fake - 1.0).square().mean()


@dataclass(frozen=True)
class PriorWeights:
    """λ's of the 3DPN loss (Eq. 10). The paper publishes none; these are our defaults.

    Attributes:
        ct: λ_CT on the volume L1, computed on HU / ``hu_scale``.
        mask: λ_mask on the bone-mask binary cross-entropy.
        xray: λ_xray on the x-ray terms (input view T and novel view T′).
        hu_scale: HU span dividing the volume error (5000: the authors' normalisation, −1000 … 4000 HU → [0, 1]).
    """

    ct: float = 1.0
    mask: float = 0.1
    xray: float = 1.0
    hu_scale: float = 5000.0


def xray_loss(i_ct: torch.Tensor, i_in: torch.Tensor, t_pred: dict[str, torch.Tensor], t_gt: dict[str, torch.Tensor]) -> torch.Tensor:
    """L_xray of one view (Eq. 9): ``‖I_CT − I_in‖₁ + Σ_m ‖t_m − t_m^gt‖₁`` (means).

    Args:
        i_ct: radiograph rendered from the predicted volume ``(B, 1, H, W)``, display domain.
        i_in: the reference radiograph of that view, same shape.
        t_pred, t_gt: projected material thicknesses by material (``"bone"``, ``"tissue"``), each
            ``(B, 1, H, W)`` in g/cm²; the sum runs over the keys of ``t_gt``.

    Raises:
        InputError: a material of ``t_gt`` missing from ``t_pred``, or shapes that differ.
    """
    _same(i_ct, i_in, "x-ray loss images")
    loss = l1_loss(i_ct, i_in)
    for m, gt in t_gt.items():
        if m not in t_pred:
            raise InputError(f"x-ray loss: predicted thicknesses lack material {m!r} (have {sorted(t_pred)})")
        _same(t_pred[m], gt, f"x-ray loss thickness {m!r}")
        loss = loss + l1_loss(t_pred[m], gt)
    return loss


def prior_loss(
    pred: dict[str, torch.Tensor],
    target: dict[str, torch.Tensor],
    weights: PriorWeights | None = None,
    xray_terms: Sequence[torch.Tensor] = (),
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """3DPN loss (Eq. 10): ``λ_CT‖V − V_gt‖₁ + λ_mask BCE(m, m_gt) + λ_xray (L_xray^T + L_xray^T′)``.

    Args:
        pred: :class:`~cxrdecomp.methods.xraysyn.network.PriorNet3D` output (uses ``volume`` in HU and
            ``mask_logit``), each ``(B, 1, D, H, W)``.
        target: ``{"volume": V_gt (HU), "mask": m_gt (0/1)}``, same shapes.
        weights: the λ's (default :class:`PriorWeights`); the volume L1 is taken on HU / ``hu_scale``.
        xray_terms: precomputed :func:`xray_loss` values, one per view (paper: T and T′); may be empty.

    Returns:
        ``(loss, parts)``, parts ``{"ct", "mask", "xray"}`` unweighted and detached.

    Raises:
        InputError: prediction and target shapes differ.
    """
    w = weights or PriorWeights()
    _same(pred["volume"], target["volume"], "prior loss volume")
    _same(pred["mask_logit"], target["mask"], "prior loss mask")
    ct = l1_loss(pred["volume"], target["volume"]) / w.hu_scale
    bce = F.binary_cross_entropy_with_logits(pred["mask_logit"].float(), target["mask"].float())
    xray = sum(xray_terms, torch.zeros((), device=ct.device, dtype=ct.dtype))
    loss = w.ct * ct + w.mask * bce + w.xray * xray
    return loss, {"ct": ct.detach(), "mask": bce.detach(), "xray": xray.detach()}


def refine_loss(
    i_final: torch.Tensor,
    i_in: torch.Tensor,
    d_fake: torch.Tensor,
    bone_ref: torch.Tensor | None = None,
    bone_target: torch.Tensor | None = None,
    *,
    lambda_adv: float = 0.02,
    lambda_bone: float = 0.005,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """2DRN generator loss (Eq. 13–14): ``L1(I_final, I_in) + 0.02·LSGAN_G(D(fake)) [+ 0.005·L1(bone)]``.

    As the authors' ``ct2xray_real_gan_meta``: ``i_final`` is the radiograph rendered from the refined
    thicknesses at the input pose and ``i_in`` the input radiograph (both ``(B, 1, H, W)``, display domain);
    ``d_fake`` the discriminator's scores of the rendering at the novel pose. The optional bone term
    compares the refined bone thickness ``bone_ref (B, 1, sH, sW)`` (g/cm²) with the unrefined projection
    ``bone_target (B, 1, H, W)``, average-pooling ``bone_ref`` by the integer factor s when sizes differ.
    Deviations: the authors add the bone term only when it exceeds 1 (a discontinuous gate), here always
    when given; and their LSGAN term has no ½ (see :func:`lsgan_g_loss`), so 0.02 here weighs half as much.

    Returns:
        ``(loss, parts)``, parts ``{"l1", "adv"[, "bone"]}`` unweighted and detached.

    Raises:
        ValueError: only one of ``bone_ref`` / ``bone_target`` given.
        InputError: ``i_final``/``i_in`` shapes differ, or bone sizes not related by an integer factor.
    """
    _same(i_final, i_in, "refine loss images")
    l1 = l1_loss(i_final, i_in)
    adv = lsgan_g_loss(d_fake)
    loss = l1 + lambda_adv * adv
    parts = {"l1": l1.detach(), "adv": adv.detach()}
    if (bone_ref is None) != (bone_target is None):
        raise ValueError("refine_loss needs both bone_ref and bone_target, or neither")
    if bone_ref is not None:
        h, w = bone_target.shape[-2:]
        k = bone_ref.shape[-1] // w if w else 0
        if k < 1 or tuple(bone_ref.shape[-2:]) != (h * k, w * k) or bone_ref.shape[:-2] != bone_target.shape[:-2]:
            raise InputError(f"refine loss bone maps {tuple(bone_ref.shape)} and {tuple(bone_target.shape)} differ by no integer factor")
        bone = l1_loss(F.avg_pool2d(bone_ref, k) if k > 1 else bone_ref, bone_target)
        loss = loss + lambda_bone * bone
        parts["bone"] = bone.detach()
    return loss, parts
