"""Disentanglement autoencoder (DAE) for bone suppression, and the plain autoencoder baselines.

Source: "Disentanglement AutoEncoder for bone suppression in chest radiographs" (§2.1 network,
Eq. 1–7 loss, Table 1 ablation). Registered as ``dae`` (trained with the bone-segmentation branch)
and ``ae`` (the same inference network trained without it); both predict the soft-tissue image.

Network (§2.1)::

    x (B,1,S,S) ─ encoder: 4 conv layers (3×3, ReLU), max-pool after the first two,
                  channels base, 2·base, 4·base, 4·base  → features (B, 4·base, S/4, S/4)
                  (S = 512, base = 16: the paper's 128×128×64 features)
       ├─ soft-tissue estimator: 2 stride-2 deconvolutions + 3×3 conv → soft tissue (B,1,S,S)
       └─ bone segmentation branch (training only): same shape → bone-probability logits (B,1,S,S)

Only the encoder and the soft-tissue estimator form the exported network (:class:`DAE`); the bone
branch (:class:`BoneSegBranch`) lives in the LightningModule and never enters a checkpoint, so
inference costs exactly what a plain autoencoder costs.

Loss (Eq. 1–7): ``L = L_MS-SSIM + λ_m · L_MSE + λ_s · L_seg`` with
``L_MS-SSIM = 1 − MS-SSIM(Ŝ, S)`` (α = 1, β = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333), pytorch-msssim),
``L_MSE = mean (Ŝ − S)²`` and ``L_seg`` the binary cross-entropy between the branch's bone probability
and the bone mask ``M = [(I − S) > t]`` (display domain, ``t = 4/255`` by default; see docs/dae.md).

Deviation from the paper (configurable, ``residual``): by default the soft-tissue estimator outputs the
bone layer to remove and ``Ŝ = x − r`` (a global skip connection, last layer zero-initialised so an
untrained model returns its input, BSR 0). The paper's estimator outputs ``Ŝ`` directly
(``residual=False``); on BSE-JSRT, where the identity already scores 38 dB PSNR, a direct autoencoder
with two max-pools cannot reach the identity's error and scores a negative BSR.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cxrdecomp.errors import ConfigError, DataNotFoundError

MSSSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
DEFAULT_MASK_THRESHOLD = 4.0 / 255.0
VARIANTS = {
    # name: (method registered for the checkpoint, bone segmentation branch, MS-SSIM term)
    "dae-msssim": ("dae", True, True),
    "dae": ("dae", True, False),
    "ae-msssim": ("ae", False, True),
    "ae": ("ae", False, False),
}


# ---------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------


def _conv(c_in: int, c_out: int, k: int, norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.ReLU(inplace=True))
    return layers


def _deconv(c_in: int, c_out: int, norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(c_out))
    layers.append(nn.ReLU(inplace=True))
    return layers


class Encoder(nn.Sequential):
    """DAE encoder (§2.1): 4 conv layers, max-pool after the first two, channels doubled except last.

    Shape: ``(B, 1, S, S)`` → ``(B, 4·base, S/4, S/4)`` (512² → 128×128×64 for ``base = 16``).
    """

    def __init__(self, base: int = 16, kernel: int = 3, norm: bool = False):
        c = [base, 2 * base, 4 * base, 4 * base]
        super().__init__(
            *_conv(1, c[0], kernel, norm), nn.MaxPool2d(2),
            *_conv(c[0], c[1], kernel, norm), nn.MaxPool2d(2),
            *_conv(c[1], c[2], kernel, norm),
            *_conv(c[2], c[3], kernel, norm),
        )
        self.out_channels = c[3]


class Decoder(nn.Sequential):
    """Deconvolution decoder: ``(B, 4·base, S/4, S/4)`` → ``(B, 1, S, S)`` (no output activation)."""

    def __init__(self, base: int = 16, kernel: int = 3, norm: bool = False):
        super().__init__(
            *_deconv(4 * base, 2 * base, norm),
            *_deconv(2 * base, base, norm),
            nn.Conv2d(base, 1, kernel, padding=kernel // 2),
        )


class DAE(nn.Module):
    """Inference network of the DAE / AE: encoder + soft-tissue estimator (no bone branch).

    Args:
        base: channels of the first encoder layer (paper: 16, giving 64 feature channels).
        kernel: convolution kernel size (3).
        residual: predict the bone layer ``r`` and return ``x − r`` (default, see module docstring);
            ``False`` returns ``sigmoid(decoder)`` directly as in the paper.
        norm: batch normalisation after each convolution (off in the paper).

    Shape:
        Input ``(B, 1, S, S)`` display domain ``[0, 1]`` with ``S`` divisible by 4 →
        output ``(B, 1, S, S)`` soft-tissue image, display domain.

    Example:
        >>> DAE(base=4)(torch.rand(2, 1, 64, 64)).shape
        torch.Size([2, 1, 64, 64])
    """

    def __init__(self, base: int = 16, kernel: int = 3, residual: bool = True, norm: bool = False):
        super().__init__()
        self.encoder = Encoder(base, kernel, norm)
        self.soft_decoder = Decoder(base, kernel, norm)
        self.residual = residual
        if residual:
            last = self.soft_decoder[-1]
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Shared features ``(B, 4·base, S/4, S/4)`` of display-domain images ``(B, 1, S, S)``."""
        if x.shape[-1] % 4 or x.shape[-2] % 4:
            raise ValueError(f"DAE input size {tuple(x.shape[-2:])} must be divisible by 4")
        return self.encoder(x)

    def soft_from_features(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Soft-tissue image (display domain) from the input ``x`` and its features ``h``."""
        y = self.soft_decoder(h)
        return x - y if self.residual else torch.sigmoid(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.soft_from_features(x, self.features(x))


class BoneSegBranch(Decoder):
    """Bone segmentation branch (§2.1, training only): features → bone-probability *logits* ``(B,1,S,S)``."""


def build_dae(base: int = 16, kernel: int = 3, residual: bool = True, norm: bool = False, **_ignored) -> DAE:
    """Builder for the registry (``dae`` and ``ae``): the inference network from ``config["model"]``."""
    return DAE(base=base, kernel=kernel, residual=residual, norm=norm)


def predict_dae(model: DAE, x: torch.Tensor, options: dict) -> dict[str, torch.Tensor]:
    """Soft-tissue image of ``x`` ``(B, 1, S, S)`` display domain: ``{"soft_tissue": (B, 1, S, S)}``.

    Runs the encoder and soft-tissue estimator only; :class:`cxrdecomp.decomposer.Decomposer` derives
    ``bone = x − soft_tissue`` at model size and applies it at full resolution.
    """
    return {"soft_tissue": model(x)}


# ---------------------------------------------------------------------------------------------
# Loss, masks, metrics
# ---------------------------------------------------------------------------------------------


def msssim_window(size: int) -> int:
    """Largest odd Gaussian window ≤ 11 that lets 5-scale MS-SSIM run on ``size²`` images.

    pytorch-msssim needs ``size > (win − 1) · 2⁴``: 11 for ≥ 161 px (the paper's setting at 512²),
    smaller windows for the tiny images of tests.

    Raises:
        ValueError: ``size ≤ 32`` (too small for 5 scales).
    """
    w = min(11, (size - 1) // 16 + 1)
    w = w if w % 2 else w - 1
    while w >= 3 and not size > (w - 1) * 16:
        w -= 2
    if w < 3:
        raise ValueError(f"images of {size}² are too small for 5-scale MS-SSIM (need > 32 px)")
    return w


def ms_ssim_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 − MS-SSIM`` (Eq. 2–4; α = 1, β = MSSSIM_WEIGHTS, data range 1) of display-domain ``(B,1,H,W)``."""
    from pytorch_msssim import ms_ssim

    win = msssim_window(min(pred.shape[-2:]))
    return 1.0 - ms_ssim(pred.float(), target.float(), data_range=1.0, size_average=True, win_size=win, weights=list(MSSSIM_WEIGHTS))


def bone_mask(cxr: torch.Tensor, soft: torch.Tensor, threshold: float = DEFAULT_MASK_THRESHOLD) -> torch.Tensor:
    """Binary bone mask ``[(cxr − soft) > threshold]`` (display domain, §2.2), float ``(B,1,H,W)``.

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
    """DAE objective (Eq. 1–7): ``L = L_MS-SSIM + λ_m L_MSE + λ_s L_seg`` on display-domain images.

    Terms are dropped for the ablation variants: no MS-SSIM term when ``use_msssim`` is false, no
    segmentation term when ``seg_logits`` is ``None`` (plain AE). The AE baseline is thus ``λ_m · MSE``.

    Returns:
        ``(loss, parts)`` with parts ``{"msssim", "mse", "seg"}`` (those used, detached).
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


def _soft_metrics(pred: torch.Tensor, soft: torch.Tensor, cxr: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image BSR, RMAE, PSNR (dB), SSIM of soft-tissue predictions; display domain ``[0, 1]``.

    Private stand-in until ``cxrdecomp.metrics`` (evaluation-suite issue) is merged:
    BSR = 1 − Σ(Ŝ−S)² / Σ(I−S)² (Yang et al. 2017), RMAE = Σ|Ŝ−S| / Σ|S| (relative mean absolute
    error), PSNR with data range 1, SSIM (Gaussian window 11, pytorch-msssim). Inputs ``(B,1,H,W)``;
    returns ``(B,)`` tensors.
    """
    from pytorch_msssim import ssim

    pred, soft, cxr = pred.float().clamp(0, 1), soft.float(), cxr.float()
    d2 = ((pred - soft) ** 2).flatten(1).sum(1)
    ref = ((cxr - soft) ** 2).flatten(1).sum(1).clamp_min(1e-12)
    mse = ((pred - soft) ** 2).flatten(1).mean(1)
    win = min(11, min(pred.shape[-2:]) // 2 * 2 - 1)
    return {
        "bsr": 1 - d2 / ref,
        "rmae": (pred - soft).abs().flatten(1).sum(1) / soft.abs().flatten(1).sum(1).clamp_min(1e-12),
        "psnr": 10 * torch.log10(1.0 / mse.clamp_min(1e-12)),
        "ssim": ssim(pred, soft, data_range=1.0, size_average=False, win_size=win),
    }


# ---------------------------------------------------------------------------------------------
# Simulated pairs (beyond the paper)
# ---------------------------------------------------------------------------------------------

SIM_INPUT_KEYS = ("cxr", "input", "drr", "radiograph", "image", "x")
SIM_SOFT_KEYS = ("soft", "soft_tissue", "target_soft", "soft_drr", "y")


class SimulatedPairs(torch.utils.data.Dataset):
    """Radiograph / soft-tissue pairs simulated from CT, read from a folder.

    Accepted layouts (checked in this order):

    * ``DIR/cxr/*.png`` + ``DIR/soft/*.png`` (the BSE-JSRT layout, display domain);
    * ``DIR/samples/*.npy`` written by ``cxrdecomp simulate`` (``(3, S, S)`` line integrals
      ``[total, bone, soft]``, attenuation domain): read through
      ``cxrdecomp.data.simulated.SimulatedPairs`` (its display mapping and augmentations) when that module
      exists, else mapped here with the same linear window (0.5–99.5 % quantiles of the total);
    * ``DIR/**/*.npz`` or ``DIR/**/*.pt`` files, one sample each, holding an input array under one of
      ``SIM_INPUT_KEYS`` and a soft-tissue array under one of ``SIM_SOFT_KEYS``, ``(H, W)`` or
      ``(1, H, W)``. Arrays outside ``[0, 1]`` (e.g. attenuation-domain line integrals, bone bright)
      are mapped to the display domain by one affine map per sample, ``(v − min(x)) / (max(x) − min(x))``
      applied to both, which keeps ``x − soft`` proportional to the bone layer.

    Items are ``{"cxr", "soft", "bone", "name"}`` (as :class:`~cxrdecomp.data.pairs.PairedImages`) with
    ``(1, S, S)`` float32 tensors (resized to ``size``), display domain.

    Raises:
        DataNotFoundError: the folder holds none of these.
    """

    def __init__(self, root: str | os.PathLike, size: int = 512, augment: bool = True):
        root = Path(root)
        self.size = size
        self.wrapped = None
        if (root / "cxr").is_dir() and (root / "soft").is_dir():
            from cxrdecomp.data.pairs import PairedImages

            ds = PairedImages(root, size=size)
            self.cxr, self.soft = ds.cxr, ds.soft
            self.names = [p[0].stem for p in ds.pairs]
            return
        npys = sorted((root / "samples").glob("*.npy")) if (root / "samples").is_dir() else []
        if npys:
            try:
                from cxrdecomp.data.simulated import SimulatedPairs as _SimulateOutput  # bone-decomposition issue
            except ImportError:
                _SimulateOutput = None
            if _SimulateOutput is not None:
                self.wrapped = _SimulateOutput(root, size=size, augment=augment)
                self.names = [p.stem for p in self.wrapped.files]
                return
            cxrs, softs = [], []
            for f in npys:
                import numpy as np

                a = torch.from_numpy(np.load(f).astype("float32"))
                total, soft = a[0], a[2]
                flat = total.flatten()[:: max(1, total.numel() // 65536)]
                lo, hi = torch.quantile(flat, 0.005), torch.quantile(flat, 0.995)
                scale = (hi - lo).clamp_min(1e-6)
                cxrs.append(self._resize(((total - lo) / scale).clamp(0, 1)))
                softs.append(self._resize((soft - lo) / scale))
            self.cxr, self.soft = torch.stack(cxrs), torch.stack(softs)
            self.names = [f.stem for f in npys]
            return
        files = sorted([*root.rglob("*.npz"), *root.rglob("*.pt")]) if root.is_dir() else []
        if not files:
            raise DataNotFoundError(
                f"no simulated pairs in {root}: expected cxr/ + soft/ image folders, samples/*.npy from "
                f"`cxrdecomp simulate`, or *.npz / *.pt files with an input ({', '.join(SIM_INPUT_KEYS)}) "
                f"and a soft-tissue ({', '.join(SIM_SOFT_KEYS)}) array"
            )
        cxrs, softs = [], []
        for f in files:
            d = self._read(f)
            x = self._pick(d, SIM_INPUT_KEYS, f)
            s = self._pick(d, SIM_SOFT_KEYS, f)
            x, s = self._to_display(x, s)
            cxrs.append(self._resize(x))
            softs.append(self._resize(s))
        self.cxr, self.soft = torch.stack(cxrs), torch.stack(softs)
        self.names = [f.stem for f in files]

    @staticmethod
    def _read(f: Path) -> dict:
        if f.suffix == ".npz":
            import numpy as np

            with np.load(f) as z:
                return {k: torch.from_numpy(z[k].astype("float32")) for k in z.files}
        d = torch.load(f, map_location="cpu", weights_only=True)
        if not isinstance(d, dict):
            raise DataNotFoundError(f"{f} does not hold a dict of arrays")
        return d

    @staticmethod
    def _pick(d: dict, keys, f: Path) -> torch.Tensor:
        for k in keys:
            if k in d:
                t = torch.as_tensor(d[k], dtype=torch.float32).squeeze()
                if t.ndim != 2:
                    raise DataNotFoundError(f"{f}: array {k!r} has shape {tuple(t.shape)}, expected (H, W)")
                return t
        raise DataNotFoundError(f"{f} has none of the keys {keys}; it holds {sorted(d)}")

    @staticmethod
    def _to_display(x: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.min() >= 0 and x.max() <= 1 and s.min() >= 0 and s.max() <= 1:
            return x, s
        lo, hi = x.min(), x.max()
        scale = (hi - lo).clamp_min(1e-8)
        return (x - lo) / scale, (s - lo) / scale

    def _resize(self, a: torch.Tensor) -> torch.Tensor:
        a = a[None, None]
        if a.shape[-2:] != (self.size, self.size):
            a = F.interpolate(a, size=(self.size, self.size), mode="area" if a.shape[-1] > self.size else "bilinear")
        return a[0]

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> dict:
        if self.wrapped is not None:
            d = self.wrapped[i]
            cxr, soft = d["x"].float(), d["soft"].float()
        else:
            cxr, soft = self.cxr[i], self.soft[i]
        return {"cxr": cxr, "soft": soft, "bone": cxr - soft, "name": self.names[i]}


# ---------------------------------------------------------------------------------------------
# Lightning module
# ---------------------------------------------------------------------------------------------


def _module_class():
    """Build :class:`DAEModule` on first use, so that inference never imports Lightning (slow)."""
    global _DAEModule
    if _DAEModule is not None:
        return _DAEModule
    from cxrdecomp.train import MethodModule

    class DAEModule(MethodModule):
        """LightningModule of the DAE and its AE baselines (``variant`` in :data:`VARIANTS`).

        ``self.net`` is the inference :class:`DAE` (exported); ``self.seg_branch`` the training-only bone
        segmentation branch (``None`` for AE variants). Augmentation (:class:`PairedAffine`) runs on the
        training device after the batch is transferred. The weights of the best validation BSR are kept
        (model selection on the validation pairs) and restored by :func:`train_dae` before export.
        """

        def __init__(
            self,
            variant: str = "dae-msssim",
            *,
            base: int = 16,
            kernel: int = 3,
            residual: bool = True,
            norm: bool = False,
            size: int = 512,
            lr: float = 1e-3,
            lambda_mse: float = 1.0,
            lambda_seg: float = 0.1,
            mask_threshold: float = DEFAULT_MASK_THRESHOLD,
            augment: bool = True,
            max_epochs: int = 100,
            max_minutes: float | None = None,
        ):
            super().__init__()
            if variant not in VARIANTS:
                raise ConfigError(f"unknown DAE variant {variant!r}; choose one of {sorted(VARIANTS)}")
            from cxrdecomp.data.augment import PairedAffine
            from cxrdecomp import methods as registry

            self.variant = variant
            self.method, with_seg, self.use_msssim = VARIANTS[variant]
            self.model_config = {"base": base, "kernel": kernel, "residual": residual, "norm": norm}
            self.net = registry.build_model(self.method, **self.model_config)
            self.seg_branch = BoneSegBranch(base, kernel, norm) if with_seg else None
            self.input_size = size
            self.inference_defaults = {}
            self.lr, self.lambda_mse, self.lambda_seg = lr, lambda_mse, lambda_seg
            self.mask_threshold = mask_threshold
            self.augment = PairedAffine() if augment else None
            self.max_epochs_for_schedule = max(1, max_epochs)
            self.max_minutes = max_minutes if max_minutes and max_minutes > 0 else None
            self.elapsed_before = 0.0  # training seconds of earlier (interrupted) runs, from the checkpoint
            self._t0: float | None = None
            self.best_bsr = -math.inf
            self.best_metrics: dict[str, float] = {}
            self.best_state: dict[str, torch.Tensor] | None = None
            self._val: list[dict[str, torch.Tensor]] = []
            terms = ["MS-SSIM"] * self.use_msssim + ["MSE"] + ["bone-mask BCE"] * with_seg
            self.card_summary = (
                f"cxrdecomp `{self.method}` (variant `{variant}`): disentanglement-autoencoder bone suppression "
                f"(\"Disentanglement AutoEncoder for bone suppression in chest radiographs\", §2.1). "
                f"Input: radiograph at {size}², display domain [0, 1]; output: soft-tissue image. "
                f"Loss: {' + '.join(terms)} (λ_m={lambda_mse}, λ_s={lambda_seg if with_seg else 0}); "
                f"bone mask threshold {mask_threshold:.4f}; residual={residual}. "
                "Validation metrics: the validation pairs at model size, display domain "
                "(BSR 1 − Σ(Ŝ−S)²/Σ(I−S)², identity = 0)."
            )

        # -- data on device ---------------------------------------------------------------------
        def on_after_batch_transfer(self, batch, dataloader_idx: int = 0):
            if self._trainer is not None and self.trainer.training and self.augment is not None:
                batch = dict(batch)
                batch["cxr"], batch["soft"] = self.augment(batch["cxr"], batch["soft"])
            return batch

        # -- steps -----------------------------------------------------------------------------------
        def _loss(self, batch):
            cxr, soft = batch["cxr"], batch["soft"]
            h = self.net.features(cxr)
            pred = self.net.soft_from_features(cxr, h)
            logits = mask = None
            if self.seg_branch is not None:
                logits = self.seg_branch(h)
                mask = bone_mask(cxr, soft, self.mask_threshold)
            loss, parts = dae_loss(
                pred, soft, logits, mask, use_msssim=self.use_msssim, lambda_mse=self.lambda_mse, lambda_seg=self.lambda_seg
            )
            return loss, parts, pred

        def training_step(self, batch, batch_idx):
            loss, parts, _ = self._loss(batch)
            bs = batch["cxr"].shape[0]
            self.log("train/loss", loss, prog_bar=True, batch_size=bs)
            for k, v in parts.items():
                self.log(f"train/{k}", v, batch_size=bs)
            return loss

        def validation_step(self, batch, batch_idx):
            loss, parts, pred = self._loss(batch)
            bs = batch["cxr"].shape[0]
            self.log("val/loss", loss, sync_dist=True, batch_size=bs)
            m = _soft_metrics(pred, batch["soft"], batch["cxr"])
            ident = _soft_metrics(batch["cxr"], batch["soft"], batch["cxr"])
            m["psnr_identity"], m["ssim_identity"] = ident["psnr"], ident["ssim"]
            for k, v in m.items():
                self.log(f"val/{k}", v.mean(), sync_dist=True, batch_size=bs, prog_bar=k == "bsr")
            self._val.append({k: v.detach() for k, v in m.items()})

        def on_validation_epoch_start(self):
            self._val = []

        def on_validation_epoch_end(self):
            vals, self._val = self._val, []
            if self._trainer is None or self.trainer.sanity_checking or not vals:
                return
            per = {k: torch.cat([v[k] for v in vals]) for k in vals[0]}
            if self.trainer.world_size > 1:
                per = {k: self.all_gather(v).flatten() for k, v in per.items()}
            means = {f"val/{k}": float(v.float().mean()) for k, v in per.items()}
            if means["val/bsr"] > self.best_bsr:
                self.best_bsr = means["val/bsr"]
                self.best_metrics = {**means, "val/epoch": float(self.current_epoch), "val/n_images": float(per["bsr"].numel())}
                self.best_state = {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()}

        # -- time budget -----------------------------------------------------------------------
        def elapsed(self) -> float:
            """Training seconds so far, earlier interrupted runs included."""
            return self.elapsed_before + (time.monotonic() - self._t0 if self._t0 is not None else 0.0)

        def on_train_start(self):
            self._t0 = time.monotonic()

        def on_train_epoch_end(self):
            if self.max_minutes is not None and self.elapsed() >= 60 * self.max_minutes:
                self.trainer.should_stop = True

        def on_save_checkpoint(self, checkpoint):
            checkpoint["dae_best"] = {"bsr": self.best_bsr, "metrics": self.best_metrics, "state": self.best_state,
                                      "elapsed": self.elapsed()}

        def on_load_checkpoint(self, checkpoint):
            best = checkpoint.get("dae_best")
            if best:
                self.best_bsr, self.best_metrics, self.best_state = best["bsr"], best["metrics"], best["state"]
                self.elapsed_before = float(best.get("elapsed", 0.0))

        def _progress(self, step: int) -> float:
            total = max(1, int(self._trainer.estimated_stepping_batches)) if self._trainer is not None else 1
            p = step / total
            if self.max_minutes is not None:
                p = max(p, self.elapsed() / (60 * self.max_minutes))
            return min(1.0, p)

        def configure_optimizers(self):
            """Adam; learning rate cosine-annealed per step to 1 % at the end of the epochs or of the time budget."""
            params = list(self.net.parameters()) + (list(self.seg_branch.parameters()) if self.seg_branch is not None else [])
            opt = torch.optim.Adam(params, lr=self.lr)

            def factor(step: int) -> float:
                return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * self._progress(step)))

            sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    _DAEModule = DAEModule
    return DAEModule


_DAEModule = None


def __getattr__(name: str):
    if name == "DAEModule":
        return _module_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ---------------------------------------------------------------------------------------------
# Training entry point
# ---------------------------------------------------------------------------------------------


@dataclass
class DAETrainOptions:
    """Options of :func:`train_dae` (the CLI ``train-dae`` command mirrors them).

    ``data`` holds ``train/`` and ``val/`` folders of ``cxr/`` + ``soft/`` pairs (BSE-JSRT layout);
    ``None`` = :func:`cxrdecomp.data.pairs.default_bse_jsrt`. ``sim_data`` (optional) is a folder of
    simulated pairs (:class:`SimulatedPairs`), mixed into the training set (``sim_mode="mix"``) or
    used to pre-train for ``sim_epochs`` epochs first (``"pretrain"``, stage stored in ``OUT/pretrain``).
    ``limit_pairs`` keeps only the first N training / validation pairs (smoke runs).
    """

    out: Path = Path("runs/dae")
    variant: str = "dae-msssim"
    data: Path | None = None
    size: int = 512
    epochs: int = 100
    max_steps: int = -1
    batch_size: int = 8
    lr: float = 1e-3
    lambda_mse: float = 1.0
    lambda_seg: float = 0.1
    mask_threshold: float = DEFAULT_MASK_THRESHOLD
    base: int = 16
    kernel: int = 3
    residual: bool = True
    norm: bool = False
    augment: bool = True
    sim_data: Path | None = None
    sim_mode: str = "mix"
    sim_epochs: int = 20
    limit_pairs: int = 0
    num_workers: int = 0
    accelerator: str = "auto"
    devices: int = 1
    precision: str | None = None
    val_every: int = 1
    seed: int = 0
    max_minutes: float | None = None
    progress: bool = True
    resume: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


def _loaders(opts: DAETrainOptions):
    from cxrdecomp.data.pairs import PairedImages, default_bse_jsrt

    root = Path(opts.data) if opts.data is not None else default_bse_jsrt()
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DataNotFoundError(
                f"{root} has no {split}/ folder; give --data a folder with train/ and val/ pairs "
                "(cxr/ and soft/ with matching names, e.g. ../shared/data/bse-jsrt)"
            )
    train, val = PairedImages(root / "train", size=opts.size), PairedImages(root / "val", size=opts.size)
    if opts.limit_pairs:
        train = torch.utils.data.Subset(train, range(min(opts.limit_pairs, len(train))))
        val = torch.utils.data.Subset(val, range(min(opts.limit_pairs, len(val))))
    return root, train, val


def _loader(ds, opts: DAETrainOptions, shuffle: bool):
    return torch.utils.data.DataLoader(
        ds, batch_size=opts.batch_size, shuffle=shuffle, drop_last=False, num_workers=opts.num_workers,
        persistent_workers=opts.num_workers > 0, pin_memory=torch.cuda.is_available(),
    )


def _module(opts: DAETrainOptions, epochs: int):
    return _module_class()(
        opts.variant, base=opts.base, kernel=opts.kernel, residual=opts.residual, norm=opts.norm, size=opts.size,
        lr=opts.lr, lambda_mse=opts.lambda_mse, lambda_seg=opts.lambda_seg, mask_threshold=opts.mask_threshold,
        augment=opts.augment, max_epochs=epochs, max_minutes=opts.max_minutes,
    )


def train_dae(opts: DAETrainOptions) -> Path:
    """Train a DAE / AE variant on paired radiographs; export the best-validation-BSR model.

    Writes ``OUT/last.ckpt`` (resume), ``OUT/logs`` (CSV + TensorBoard), ``OUT/metrics.json`` and
    ``OUT/model`` (checkpoint folder for ``Decomposer.from_pretrained``). Rerunning the same command
    resumes after an interruption.

    Returns:
        The exported checkpoint folder.

    Raises:
        DataNotFoundError: missing data folders.  ConfigError: unknown variant / sim mode.
    """
    import lightning as L

    from cxrdecomp import checkpoint
    from cxrdecomp.train import fit

    if opts.variant not in VARIANTS:
        raise ConfigError(f"unknown variant {opts.variant!r}; choose one of {sorted(VARIANTS)}")
    if opts.sim_mode not in ("mix", "pretrain"):
        raise ConfigError(f"--sim-mode must be 'mix' or 'pretrain', not {opts.sim_mode!r}")
    if opts.size % 4:
        raise ConfigError(f"--size must be divisible by 4, got {opts.size}")
    L.seed_everything(opts.seed, workers=True, verbose=False)
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.benchmark = True
    out = Path(opts.out)
    root, train, val = _loaders(opts)
    data_desc = f"{root}: {len(train)} training / {len(val)} validation pairs at {opts.size}²"
    trainer_kw = dict(
        accelerator=opts.accelerator, devices=opts.devices, precision=opts.precision, progress=opts.progress,
        val_every=opts.val_every, log_every=max(1, min(10, len(train) // opts.batch_size)),
    )

    sim = SimulatedPairs(opts.sim_data, size=opts.size) if opts.sim_data else None
    init_state = None
    if sim is not None and opts.sim_mode == "pretrain":
        pre = _module(opts, opts.sim_epochs)
        pre_out = out / "pretrain"
        fit(pre, _loader(sim, opts, True), _loader(val, opts, False), pre_out,
            data_description=f"{opts.sim_data}: {len(sim)} simulated pairs", resume=opts.resume,
            max_epochs=opts.sim_epochs, max_steps=opts.max_steps, **trainer_kw)
        init_state = {k: v.clone() for k, v in pre.net.state_dict().items()}
        if pre.seg_branch is not None:
            init_state.update({f"seg_branch.{k}": v.clone() for k, v in pre.seg_branch.state_dict().items()})
        data_desc += f"; pre-trained {opts.sim_epochs} epochs on {len(sim)} simulated pairs from {opts.sim_data}"
    train_set = train
    if sim is not None and opts.sim_mode == "mix":
        train_set = torch.utils.data.ConcatDataset([train, sim])
        data_desc += f"; mixed with {len(sim)} simulated pairs from {opts.sim_data}"

    module = _module(opts, opts.epochs)
    if init_state is not None:
        module.net.load_state_dict({k: v for k, v in init_state.items() if not k.startswith("seg_branch.")})
        if module.seg_branch is not None:
            module.seg_branch.load_state_dict({k[11:]: v for k, v in init_state.items() if k.startswith("seg_branch.")})
    folder = fit(module, _loader(train_set, opts, True), _loader(val, opts, False), out, data_description=data_desc,
                 resume=opts.resume, max_epochs=opts.epochs, max_steps=opts.max_steps, **trainer_kw)

    # model selection: export the weights of the best validation BSR
    if module.best_state is not None and (folder / checkpoint.CONFIG).is_file():
        cfg = json.loads((folder / checkpoint.CONFIG).read_text())
        module.net.load_state_dict(module.best_state)
        metrics = {**module.best_metrics}
        training = {**cfg.get("training", {}), "variant": opts.variant, "selection": "best val/bsr",
                    "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(opts).items()}}
        config = module.export_config(metrics, training)
        n = sum(p.numel() for p in module.net.parameters())
        card = module.model_card(metrics, training, n, n * 4 / 1e6)
        checkpoint.save(folder, module.net, config, card)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(f"model: {folder}", file=sys.stderr)
    return folder
