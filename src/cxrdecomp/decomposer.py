"""Run a trained method on real radiographs at their full resolution.

Python API::

    from cxrdecomp import Decomposer
    dec = Decomposer.from_pretrained()                # the default; or a bundled name ("dae") or checkpoint folder
    out = dec(image)                                  # (H, W) array/tensor, display domain [0, 1]
    out = dec("chest.dcm")                            # or a DICOM / PNG / JPEG / TIFF file path
    out.bone, out.soft_tissue, out.enhanced           # (H, W) float32 tensors, same size as the input

Lung-structure methods (lung paper §2.4, Eq. 6): ``enhanced = I + w·lung`` with ``lung`` the lung X-ray
rescaled to [0, 1], plus ``enhanced_w<w>`` extras for the ``w_levels`` option.

Composition (Bone-extraction paper §2.4, weighted summation), in the display domain:
``soft_tissue = I − w_s·bone`` and ``enhanced = I + w·bone``, with ``bone`` the model's change
(``x − soft`` for soft-tissue methods) computed at model size, upsampled, and applied to the
full-resolution input so that detail the model never saw is kept (DESIGN.md, "Full resolution").

That choice was measured (``benchmarks/full_resolution.py``): with an *oracle* model that predicts
the exact model-size bone image of the 12 real BSE-JSRT validation pairs (1024²), upsampling the
change gives BSR 0.987 (512² model) / 0.972 (256²), upsampling the predicted soft-tissue image only
0.649 / 0.141 (identity = 0). ``upsample="soft"`` stays available for comparison.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cxrdecomp import methods
from cxrdecomp.errors import InputError
from cxrdecomp.io.arrays import as_image_batch


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
    t, _ = as_image_batch(image, "image", torch.float32)
    if min(t.shape[-2:]) < 8:
        raise InputError(f"image of {tuple(t.shape[-2:])} pixels is too small to be a radiograph")
    if not torch.isfinite(t).all():
        raise InputError("image contains NaN or infinite values")
    return t


UPSAMPLE_MODES = ("change", "soft")


def _image_of(x):
    """A file path → its display-domain image (``read_radiograph``); a Radiograph → ``.image``."""
    if isinstance(x, (str, os.PathLike)):
        from cxrdecomp.io.radiograph import read_radiograph

        return read_radiograph(x).image
    if hasattr(x, "image") and hasattr(x, "pixel_spacing"):
        return x.image
    return x


class Decomposer:
    """A trained method ready to decompose radiographs.

    Args:
        model: the network (eval mode).
        config: its checkpoint ``config.json``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ... or ``None`` (CUDA when available).
        **options: override ``config["inference"]``; common ones:

            * ``w`` (bone-enhancement weight, default 1.0) and ``w_s`` (suppression weight, 1.0);
            * ``upsample``: ``"change"`` (default, DESIGN.md "Full resolution": upsample the bone
              image the model predicts and apply it to the full-resolution input) or ``"soft"``
              (upsample the model-size soft-tissue image ``x − bone``; the bone image then also holds
              all the input's detail finer than the model size);
            * ``batch_size``: images per network forward pass (default 4);
            * ``channels_last``: run the network in channels-last memory format (default True;
              measured ~1.9x faster on CPU for the 512² bone U-Net);
            * ``precision``: ``"fp32"`` (default) or ``"bf16"`` (autocast of the network only);
            * ``steps`` and other method-specific keys are passed to the predictor.
    """

    def __init__(self, model: torch.nn.Module, config: dict[str, Any], device: str | None = None, **options):
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.config = config
        self.method = config["method"]
        self.size = int(config.get("input_size", 512))
        self.options = {"w": 1.0, "w_s": 1.0, "upsample": "change", "batch_size": 4, "channels_last": True, "precision": "fp32", **config.get("inference", {}), **options}
        model = model.to(self.device).eval()
        if self.options["channels_last"]:  # ~1.5-2x faster convolutions with oneDNN on CPU
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self._check_options(self.options)
        self._predict = methods.predictor(self.method)

    @staticmethod
    def _check_options(opts: dict[str, Any]) -> None:
        from cxrdecomp.errors import ConfigError

        if opts.get("upsample") not in UPSAMPLE_MODES:
            raise ConfigError(f"upsample must be one of {UPSAMPLE_MODES}, not {opts.get('upsample')!r}")
        if opts.get("precision", "fp32") not in ("fp32", "bf16"):
            raise ConfigError(f"precision must be 'fp32' or 'bf16', not {opts.get('precision')!r}")
        if int(opts.get("batch_size", 1)) < 1:
            raise ConfigError(f"batch_size must be >= 1, not {opts.get('batch_size')}")
        for k in ("w", "w_s"):
            if not np.isfinite(float(opts[k])):
                raise ConfigError(f"{k} must be a finite number, not {opts[k]}")

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike | None = None, device: str | None = None, **options) -> "Decomposer":
        """Load a bundled checkpoint by name (``"bone"``, ``"dae"``, ...) or a checkpoint folder
        (``None``: the default, :func:`cxrdecomp.methods.default_checkpoint`, the best measured on real radiographs).

        Raises:
            CheckpointError: no such checkpoint, or it does not fit its config.
        """
        model, cfg = methods.load(methods.default_checkpoint() if name_or_path is None else name_or_path)
        return cls(model, cfg, device=device, **options)

    def to_model_size(self, image: torch.Tensor) -> torch.Tensor:
        """Area-resize ``(B, 1, H, W)`` display-domain images to ``(B, 1, S, S)``, clamped to ``[0, 1]``."""
        x = image.to(self.device)
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="area")
        return x.clamp(0, 1).contiguous()

    @torch.inference_mode()
    def predict_model_size(self, image: torch.Tensor, **options) -> dict[str, torch.Tensor]:
        """Run the network on ``(B, 1, H, W)`` display-domain images resized to the model size.

        Returns the predictor's dict at model size ``(B, 1, S, S)`` (see :mod:`cxrdecomp.methods`),
        always with a ``"bone"`` entry when the method gives a bone or soft-tissue image.
        """
        opts = {**self.options, **options}
        x = self.to_model_size(image)
        bs = int(opts.get("batch_size", 4))
        fmt = torch.channels_last if opts.get("channels_last") else torch.contiguous_format
        bf16 = opts.get("precision", "fp32") == "bf16"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            parts = [self._predict(self.model, x[i : i + bs].contiguous(memory_format=fmt), opts) for i in range(0, x.shape[0], bs)]
        pred = {k: torch.cat([p[k] for p in parts]).float().contiguous() for k in parts[0]}
        if "bone" not in pred and "soft_tissue" in pred:
            pred["bone"] = x - pred["soft_tissue"]
        return pred

    @torch.inference_mode()
    def __call__(self, image, **options) -> Decomposition | list[Decomposition]:
        """Decompose radiographs at their full resolution.

        Args:
            image: one ``(H, W)`` image, a batch ``(B, H, W)`` / ``(B, 1, H, W)`` of equal size, or a
                list of ``(H, W)`` images of any sizes; numpy or torch; display domain ``[0, 1]``.
                A file path or a :class:`~cxrdecomp.io.radiograph.Radiograph` counts as one image.
            **options: override the decomposer's options for this call (``w``, ``w_s``, ``upsample``...).

        Returns:
            One :class:`Decomposition` for a single 2-D input, else a list (same order). All outputs
            are display domain, at each input's size; ``soft_tissue + w_s·bone == image`` exactly
            (Bone-extraction paper §2.4, weighted summation).

        Raises:
            InputError: wrong shape, too small, NaN/inf, or an unreadable file.
            ConfigError: invalid options.
        """
        opts = {**self.options, **options}
        self._check_options(opts)
        if isinstance(image, (list, tuple)):
            image = [_image_of(im) for im in image]
        else:
            image = _image_of(image)
        if isinstance(image, (list, tuple)):
            fulls = [_as_batch(im) for im in image]
            for f in fulls:
                if f.shape[0] != 1:
                    raise InputError("a list input must hold single (H, W) images")
            single = False
        else:
            single = (image.ndim if hasattr(image, "ndim") else np.ndim(image)) == 2
            b = _as_batch(image)
            fulls = [b[i : i + 1] for i in range(b.shape[0])]
        fulls = [f.to(self.device) for f in fulls]
        small = torch.cat([self.to_model_size(f) for f in fulls])
        pred = self.predict_model_size(small, **opts)
        outs = [self._compose(full, small[i : i + 1], {k: v[i : i + 1] for k, v in pred.items()}, opts) for i, full in enumerate(fulls)]
        return outs[0] if single else outs

    def _compose(self, full: torch.Tensor, small: torch.Tensor, pred: dict[str, torch.Tensor], opts) -> Decomposition:
        """Full-resolution outputs of one image ``full`` ``(1, 1, H, W)`` from model-size predictions."""
        h, w = full.shape[-2:]

        def up(t: torch.Tensor) -> torch.Tensor:
            if t.shape[-2:] == (h, w):
                return t
            return F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)

        d = Decomposition(image=full[0, 0].cpu())
        if "bone" in pred:
            if opts["upsample"] == "soft":
                bone = full - up(small - pred["bone"])  # = full − upsampled soft tissue
            else:
                bone = up(pred["bone"])
            bone = bone[0, 0]
            img = full[0, 0]
            d.bone = bone.cpu()
            d.soft_tissue = torch.add(img, bone, alpha=-float(opts["w_s"])).cpu()
            d.enhanced = torch.add(img, bone, alpha=float(opts["w"])).cpu()
        for k, v in pred.items():
            if k not in ("bone", "soft_tissue"):
                d.extra[k] = up(v)[0, 0].cpu()
        if "lung" in d.extra and d.enhanced is None:
            # lung paper Eq. 6: I_enhanced = I + w·I_lung, for w and each of the optional "w_levels"
            # (extras "enhanced_w<w>"); with "enhanced_rescale" an image exceeding 1 is divided by its max.
            lung = d.extra["lung"].to(full.device)

            def fuse(wl: float) -> torch.Tensor:
                e = torch.add(full[0, 0], lung, alpha=wl)
                if opts.get("enhanced_rescale", False) and float(e.max()) > 1.0:
                    e = e / e.max()
                return e.cpu()

            d.enhanced = fuse(float(opts["w"]))
            for wl in opts.get("w_levels", ()) or ():
                d.extra[f"enhanced_w{float(wl):g}"] = fuse(float(wl))
        return d
