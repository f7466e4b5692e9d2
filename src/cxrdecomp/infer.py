"""Run a trained method on real radiographs at their full resolution.

Python API::

    from cxrdecomp import Decomposer
    dec = Decomposer.from_pretrained("bone")          # bundled name or checkpoint folder
    out = dec(image)                                  # (H, W) array/tensor, display domain [0, 1]
    out.bone, out.soft_tissue, out.enhanced           # (H, W) float32 tensors, same size as the input

Lung-structure methods (lung paper §2.4, Eq. 6): ``enhanced = I + w·lung`` with ``lung`` the lung X-ray
rescaled to [0, 1], plus ``enhanced_w<w>`` extras for the ``w_levels`` option.

Composition (Bone-extraction paper §2.4, weighted summation), in the display domain:
``soft_tissue = I − w_s·bone`` and ``enhanced = I + w·bone``, with ``bone`` the model's change
(``x − soft`` for soft-tissue methods) computed at model size, upsampled, and applied to the
full-resolution input so that detail the model never saw is kept (DESIGN.md, "Full resolution").
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cxrdecomp import checkpoint
from cxrdecomp.errors import InputError
from cxrdecomp.models import registry


@dataclass
class Decomposition:
    """Full-resolution outputs, each ``(H, W)`` float32 in the display domain.

    ``bone`` is the bone image (I − soft tissue; may be slightly negative), ``soft_tissue`` the
    bone-suppressed image, ``enhanced`` the bone- or lung-enhanced image, ``extra`` holds
    method-specific outputs (``lung``, ``lung_mask``, ...).
    """

    image: torch.Tensor
    bone: torch.Tensor | None = None
    soft_tissue: torch.Tensor | None = None
    enhanced: torch.Tensor | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def images(self) -> dict[str, torch.Tensor]:
        """All outputs by name (``bone``, ``soft_tissue``, ``enhanced`` and extras) that are set."""
        d = {k: getattr(self, k) for k in ("bone", "soft_tissue", "enhanced") if getattr(self, k) is not None}
        d.update(self.extra)
        return d


def _as_batch(image) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(image) if not isinstance(image, torch.Tensor) else image)
    t = t.to(torch.float32)
    if t.ndim == 2:
        t = t[None, None]
    elif t.ndim == 3:
        t = t[:, None]
    if t.ndim != 4 or t.shape[1] != 1:
        raise InputError(f"expected an (H, W), (B, H, W) or (B, 1, H, W) image, got shape {tuple(t.shape)}")
    if min(t.shape[-2:]) < 8:
        raise InputError(f"image of {tuple(t.shape[-2:])} pixels is too small to be a radiograph")
    if not torch.isfinite(t).all():
        raise InputError("image contains NaN or infinite values")
    return t


class Decomposer:
    """A trained method ready to decompose radiographs.

    Args:
        model: the network (eval mode).
        config: its checkpoint ``config.json``.
        device: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available).
        **options: override ``config["inference"]`` (e.g. ``w=1.0``, ``w_s=1.0``, ``steps=20``).
    """

    def __init__(self, model: torch.nn.Module, config: dict[str, Any], device: str | None = None, **options):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.to(self.device).eval()
        self.config = config
        self.method = config["method"]
        self.size = int(config.get("input_size", 512))
        self.options = {"w": 1.0, "w_s": 1.0, **config.get("inference", {}), **options}
        self._predict = registry.predictor(self.method)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = "bone", device: str | None = None, **options) -> "Decomposer":
        """Load a bundled checkpoint by name (``"bone"``, ``"dae"``, ...) or a checkpoint folder."""
        model, cfg = checkpoint.load(name_or_path)
        return cls(model, cfg, device=device, **options)

    @torch.inference_mode()
    def predict_model_size(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the network on ``(B, 1, H, W)`` display-domain images resized to the model size.

        Returns the predictor's dict at model size ``(B, 1, S, S)`` (see :mod:`cxrdecomp.models.registry`).
        """
        x = F.interpolate(image.to(self.device), size=(self.size, self.size), mode="area")
        return self._predict(self.model, x.clamp(0, 1), self.options)

    @torch.inference_mode()
    def __call__(self, image, **options) -> Decomposition | list[Decomposition]:
        """Decompose one image ``(H, W)`` or a batch ``(B, H, W)`` / ``(B, 1, H, W)`` of equal size.

        Input and outputs are in the display domain (``[0, 1]``, air dark, bone bright).
        Returns one :class:`Decomposition` for a 2-D input, else a list.

        Raises:
            InputError: wrong shape, too small, NaN/inf.
        """
        single = (image.ndim if hasattr(image, "ndim") else np.ndim(image)) == 2
        opts = {**self.options, **options}
        x = _as_batch(image)
        full = x.to(self.device)
        pred = self.predict_model_size(full)
        h, w = full.shape[-2:]
        up = {k: F.interpolate(v, size=(h, w), mode="bilinear", align_corners=False) for k, v in pred.items()}
        small = F.interpolate(full, size=(self.size, self.size), mode="area")
        if "bone" not in up and "soft_tissue" in pred:
            up["bone"] = F.interpolate(small - pred["soft_tissue"], size=(h, w), mode="bilinear", align_corners=False)
        outs = []
        for i in range(x.shape[0]):
            d = Decomposition(image=full[i, 0].cpu())
            if "bone" in up:
                bone = up["bone"][i, 0]
                d.bone = bone.cpu()
                d.soft_tissue = (full[i, 0] - opts["w_s"] * bone).cpu()
                d.enhanced = (full[i, 0] + opts["w"] * bone).cpu()
            for k, v in up.items():
                if k not in ("bone", "soft_tissue"):
                    d.extra[k] = v[i, 0].cpu()
            if "lung" in up and d.enhanced is None:
                # lung paper Eq. 6: I_enhanced = I + w·I_lung, for w and each of the optional "w_levels"
                # (extras "enhanced_w<w>"); with "enhanced_rescale" an image exceeding 1 is divided by its max.
                def fuse(wl: float) -> torch.Tensor:
                    e = full[i, 0] + wl * up["lung"][i, 0]
                    if opts.get("enhanced_rescale", False) and float(e.max()) > 1.0:
                        e = e / e.max()
                    return e.cpu()

                d.enhanced = fuse(float(opts["w"]))
                for wl in opts.get("w_levels", ()) or ():
                    d.extra[f"enhanced_w{float(wl):g}"] = fuse(float(wl))
            outs.append(d)
        return outs[0] if single else outs
