"""XraySyn inference (Peng et al., AAAI 2021): bone suppression by reversing CT2Xray, and novel views.

Both start from a display-domain radiograph ``x`` ``(B, 1, h, h)`` in ``[0, 1]`` at the scene's ``view_size``:

1. Algorithm 1, first step (:func:`~cxrdecomp.methods.xraysyn.scene.calibrate`): ``L = a·x + b`` puts it into the
   attenuation range ``−ln I`` of the training renderings.
2. 3DPN (Eq. 7–8): ``V = G(BP(L, T₀))`` at the frontal pose ``T₀`` (azimuth = elevation = 0).
3. CT2Xray of ``V`` (Eq. 1–6): bone and tissue thicknesses ``t_bone``, ``t_tissue`` at any pose.
4. Bone suppression (Algorithm 1, :func:`cxrdecomp.simulate.ct2xray.reverse_ct2xray`): per pixel, the tissue
   thickness that reproduces the input's ``I = exp(−L)`` exactly with ``t_bone``, then the rendering with the bone
   replaced by soft tissue of the same volume; back through the calibration to the display domain.
"""

from __future__ import annotations

import torch

from cxrdecomp.methods.xraysyn.scene import calibrate
from cxrdecomp.simulate.ct2xray import log_image, reverse_ct2xray


def frontal(x: torch.Tensor) -> torch.Tensor:
    """``(B, 2)`` frontal poses for a batch."""
    return x.new_zeros(x.shape[0], 2)


def predict(model, x: torch.Tensor, options: dict) -> dict[str, torch.Tensor]:
    """Bone-suppressed image and bone image of ``x`` ``(B, 1, h, h)`` (display domain; module docstring).

    Returns ``{"soft_tissue", "bone"}``, each ``(B, 1, h, h)``, with ``x = soft_tissue + bone``.
    """
    cfg = model.scene.config
    a, b = calibrate(x, cfg)
    log = a * x + b
    pred = model(log, frontal(x))
    t = model.render(pred, frontal(x))["thickness"]
    rev = reverse_ct2xray(torch.exp(-log), t[:, :1], t[:, 1:2], model.scene.spectrum)
    soft = (log_image(rev["bone_suppressed"]) - b) / a
    return {"soft_tissue": soft, "bone": x - soft}


@torch.no_grad()
def views(model, x: torch.Tensor, angles: torch.Tensor) -> dict[str, torch.Tensor]:
    """Novel views of radiographs ``x`` ``(B, 1, h, h)`` at ``(V, 2)`` poses (azimuth, elevation in degrees).

    Returns ``{"image": (B, V, h, h)`` display domain (the input's calibration inverted, clipped to [0, 1]),
    ``"bone": (B, V, h, h)`` bone thickness g/cm², ``"tissue"`` likewise``}``.
    """
    cfg = model.scene.config
    a, b = calibrate(x, cfg)
    pred = model(a * x + b, frontal(x))
    angles = torch.as_tensor(angles, dtype=x.dtype, device=x.device).reshape(-1, 2)
    imgs, bones, tissues = [], [], []
    for i in range(x.shape[0]):
        one = {k: v[i : i + 1].expand(len(angles), *v.shape[1:]) for k, v in pred.items()}
        r = model.render(one, angles)
        imgs.append(((r["log"][:, 0] - b[i, 0]) / a[i, 0]).clamp(0, 1))
        bones.append(r["thickness"][:, 0])
        tissues.append(r["thickness"][:, 1])
    return {"image": torch.stack(imgs), "bone": torch.stack(bones), "tissue": torch.stack(tissues)}
