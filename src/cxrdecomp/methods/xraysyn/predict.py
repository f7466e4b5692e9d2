"""XraySyn inference (Peng et al., AAAI 2021): bone suppression by reversing CT2Xray, and novel views.

Both start from a display-domain radiograph ``x`` ``(B, 1, h, h)`` in ``[0, 1]`` at the model's input size (the
scene's ``view_size``; its ``render_size`` when the model has a 2DRN):

1. Algorithm 1, first step (:func:`~cxrdecomp.methods.xraysyn.scene.calibrate`): ``L = a·x + b`` puts it into the
   attenuation range ``−ln I`` of the training renderings.
2. 3DPN (Eq. 7–8): ``V = G(BP(L, T₀))`` at the frontal pose ``T₀`` (azimuth = elevation = 0).
3. CT2Xray of ``V`` (Eq. 1–6): bone and tissue thicknesses ``t_bone``, ``t_tissue`` at any pose, refined by the 2DRN
   (Eq. 11) to the render size when the model has one.
4. Bone suppression (Algorithm 1, :func:`cxrdecomp.simulate.ct2xray.reverse_ct2xray`): per pixel, the tissue
   thickness that reproduces the input's ``I = exp(−L)`` exactly with ``t_bone``, then the rendering with the bone
   replaced by soft tissue of the same volume; back through the calibration to the display domain.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cxrdecomp.methods.xraysyn.scene import calibrate, uncalibrate
from cxrdecomp.simulate.ct2xray import log_image, reverse_ct2xray


def frontal(x: torch.Tensor) -> torch.Tensor:
    """``(B, 2)`` frontal poses for a batch."""
    return x.new_zeros(x.shape[0], 2)


def calibrated_prior(model, x: torch.Tensor):
    """Calibration ``(a, b)`` of ``x`` and the 3DPN's prediction from it (``x`` at the model's input size: the view
    size, or the render size when the model has a 2DRN; the 3DPN sees it average-pooled to the view size).

    Raises:
        ConfigError: the model is the 2D Refiner baseline (no 3D prior: it only scores in scripts/xraysyn_eval.py).
    """
    if not hasattr(model, "prior"):
        from cxrdecomp.errors import ConfigError

        raise ConfigError("this checkpoint is XraySyn's 2D Refiner baseline (scripts/xraysyn_eval.py --refiner2d), not a decomposer")
    a, b = calibrate(x, model.scene.config)
    h = model.scene.config.view_size
    small = F.adaptive_avg_pool2d(x, h) if x.shape[-1] != h else x
    return a, b, model(a * small + b, frontal(x))


def thickness(model, x: torch.Tensor, pred: dict, angles: torch.Tensor) -> torch.Tensor:
    """Bone and tissue thicknesses ``(V, 2, h, h)`` g/cm² of one prediction (batch 1) at ``(V, 2)`` poses: the 3DPN's
    projection, refined by the 2DRN (Eq. 11, conditioned on the input ``x (1, 1, h, h)``) when the model has one."""
    t = model.render(pred, angles)["thickness"]
    if model.refine is not None:
        t = model.refine(t, x.expand(len(angles), -1, -1, -1)).clamp(min=0)
    return t


def predict(model, x: torch.Tensor, options: dict) -> dict[str, torch.Tensor]:
    """Bone-suppressed image and bone image of ``x`` ``(B, 1, h, h)`` (display domain; module docstring).

    Returns ``{"soft_tissue", "bone"}``, each ``(B, 1, h, h)``, with ``x = soft_tissue + bone``.
    """
    a, b, pred = calibrated_prior(model, x)
    t = torch.cat([thickness(model, x[i : i + 1], {k: v[i : i + 1] for k, v in pred.items()}, frontal(x[:1])) for i in range(x.shape[0])])
    log = a * x + b
    rev = reverse_ct2xray(torch.exp(-log), t[:, :1], t[:, 1:2], model.scene.spectrum)
    soft = uncalibrate(log_image(rev["bone_suppressed"]), a, b)
    return {"soft_tissue": soft, "bone": x - soft}


@torch.no_grad()
def views(model, x: torch.Tensor, angles: torch.Tensor) -> dict[str, torch.Tensor]:
    """Novel views of radiographs ``x`` ``(B, 1, h, h)`` at ``(V, 2)`` poses (azimuth, elevation in degrees).

    Returns ``{"image": (B, V, h, h)`` display domain (the input's calibration inverted, clipped to [0, 1]),
    ``"bone": (B, V, h, h)`` bone thickness g/cm², ``"tissue"`` likewise``}``.
    """
    a, b, pred = calibrated_prior(model, x)
    angles = torch.as_tensor(angles, dtype=x.dtype, device=x.device).reshape(-1, 2)
    imgs, bones, tissues = [], [], []
    for i in range(x.shape[0]):
        one = {k: v[i : i + 1].expand(len(angles), *v.shape[1:]) for k, v in pred.items()}
        t = thickness(model, x[i : i + 1], one, angles)
        imgs.append(uncalibrate(model.scene.radiograph(t)[:, 0], a[i, 0], b[i, 0]).clamp(0, 1))
        bones.append(t[:, 0])
        tissues.append(t[:, 1])
    return {"image": torch.stack(imgs), "bone": torch.stack(bones), "tissue": torch.stack(tissues)}
