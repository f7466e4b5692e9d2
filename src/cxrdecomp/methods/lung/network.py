"""Lung-structure enhancement networks (method 2: "Lung structures enhancement in chest radiographs
via CT based FCNN training", Gozes & Greenspan 2018, §2.2–2.4). Registered as ``lung``.

One checkpoint holds both networks in one :class:`LungNet`:

* ``seg`` — lung segmentation U-Net (§2.2): 32 filters in the first layer, dilated convolutions
  (rate 2) in the deeper levels, no batch norm, ReLU, sigmoid output, a Gaussian-noise layer
  (std 0.2) on its input during training; trained with a weighted binary cross-entropy, Adam 1e-4,
  batch 8, augmentation rotation ±2°, width shift 0.1, height shift 0.2, zoom 0.3; the output is
  thresholded at 0.95.
* ``extract`` — lung-structure extraction U-Net (§2.2): same layout, tanh output; trained with the
  nodule-weighted L1 loss of Eq. 5, ``‖(ŷ − y)·(1 + w_nodule·noduleMask)‖₁`` (w_nodule = 30; 0 for
  the ablation), Adam 1e-4, batch 8, augmentation rotation ±4°, width/height shift 0.1, zoom 0.2,
  horizontal flip.

Inference (§2.3–2.4, :func:`predict_lung`): normalise to [0, 1], HE + CLAHE
(:func:`cxrdecomp.preprocess.he_clahe`), segment, normalise the lung area to mean 0 / std 0.5,
extract, rescale the lung X-ray to [0, 1]; :class:`cxrdecomp.decomposer.Decomposer` then fuses
``I_enhanced = I + w·I_lung`` (Eq. 6) at full resolution for one or several ``w``.

Training data come from :mod:`cxrdecomp.simulate.lung_generate` (simulated DRR views of CT).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cxrdecomp.nn.blocks import UNet
from cxrdecomp.preprocess import he_clahe, lung_normalize, normalize01

METHOD = "lung"


class GaussianNoise(nn.Module):
    """Additive Gaussian noise (std ``std``) in training mode only; identity in eval mode.

    Shape: ``(B, C, H, W)`` → same.
    """

    def __init__(self, std: float = 0.2):
        super().__init__()
        self.std = float(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and self.std > 0:
            return x + torch.randn_like(x) * self.std
        return x


class LungNet(nn.Module):
    """The lung segmentation and lung-structure extraction U-Nets in one module.

    Args:
        base: filters of the first level (paper: 32).
        depth: down-sampling steps (4 in a classic U-Net; the bundled checkpoint uses 3 to stay small).
        dilate_from: first level using dilation rate 2.
        noise_std: std of the Gaussian-noise layer before the segmentation U-Net (training only).

    Shape:
        :meth:`segment`: HE+CLAHE image ``(B, 1, S, S)`` in [0, 1] → lung probability ``(B, 1, S, S)``.
        :meth:`extract_lung`: lung-normalised image ``(B, 1, S, S)`` → lung X-ray ``(B, 1, S, S)`` in (−1, 1)
        (trained on display-domain targets in [0, 1]).
    """

    def __init__(self, base: int = 32, depth: int = 4, dilate_from: int = 2, noise_std: float = 0.2):
        super().__init__()
        self.noise = GaussianNoise(noise_std)
        self.seg = UNet(1, 1, base=base, depth=depth, dilate_from=dilate_from, out_activation="sigmoid")
        self.extract = UNet(1, 1, base=base, depth=depth, dilate_from=dilate_from, out_activation="tanh")
        # He-normal initialisation (Keras U-Nets' "he_normal"): without batch norm, PyTorch's default
        # init shrinks the signal through the ~20 ReLU layers and training at lr 1e-4 barely starts.
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def segment(self, x: torch.Tensor) -> torch.Tensor:
        return self.seg(self.noise(x))

    def extract_lung(self, z: torch.Tensor) -> torch.Tensor:
        return self.extract(z)

    def forward(self, x: torch.Tensor, threshold: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
        """HE+CLAHE image → ``(lung probability, raw lung X-ray)`` (see :func:`predict_lung`)."""
        prob = self.segment(x)
        return prob, self.extract_lung(lung_normalize(x, prob > threshold))


def build_lung(base: int = 32, depth: int = 4, dilate_from: int = 2, noise_std: float = 0.2, **_ignored) -> LungNet:
    """Registry builder of the ``lung`` method (config ``model`` keyword arguments)."""
    return LungNet(base=base, depth=depth, dilate_from=dilate_from, noise_std=noise_std)


def predict_lung(model: LungNet, x: torch.Tensor, options: dict) -> dict[str, torch.Tensor]:
    """Lung X-ray and lung probability of radiographs (lung paper §2.3).

    Args:
        model: a :class:`LungNet`.
        x: ``(B, 1, S, S)`` display domain ``[0, 1]`` at the model size.
        options: ``lung_threshold`` (default 0.95) for the lung-area normalisation mask.

    Returns:
        ``{"lung": (B, 1, S, S) lung X-ray rescaled to [0, 1] per image (display domain),
        "lung_mask": (B, 1, S, S) lung probability}``. When the thresholded mask is (nearly) empty,
        the lung-area normalisation falls back to whole-image statistics.
    """
    pre = he_clahe(x)
    prob, raw = model(pre, threshold=float(options.get("lung_threshold", 0.95)))
    return {"lung": normalize01(raw), "lung_mask": prob}


# ----------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------
def random_affine(
    x: torch.Tensor,
    rotation_deg: float,
    shift_w: float,
    shift_h: float,
    zoom: float,
    hflip: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random affine matrices ``(B, 2, 3)`` for ``F.affine_grid`` (Keras ``ImageDataGenerator``-like):
    rotation uniform in ±``rotation_deg``, shifts uniform in ± fraction of width/height, zoom factor
    uniform in ``[1 − zoom, 1 + zoom]``, optional horizontal flip with probability 0.5."""
    b = x.shape[0]
    kw = {"device": x.device, "dtype": x.dtype}

    def u(lo, hi):
        return torch.rand(b, generator=generator, device=x.device if generator is None else "cpu").to(**kw) * (hi - lo) + lo

    a = torch.deg2rad(u(-rotation_deg, rotation_deg))
    s = u(1 - zoom, 1 + zoom)
    tx, ty = u(-shift_w, shift_w) * 2, u(-shift_h, shift_h) * 2  # normalised coords span 2
    fx = torch.ones(b, **kw)
    if hflip:
        fx = torch.where(u(0, 1) < 0.5, -fx, fx)
    cos, sin = torch.cos(a) / s, torch.sin(a) / s
    theta = torch.stack([torch.stack([cos * fx, -sin, tx], -1), torch.stack([sin * fx, cos, ty], -1)], 1)
    return theta


def apply_affine(theta: torch.Tensor, *imgs: torch.Tensor, mode: str = "bilinear") -> list[torch.Tensor]:
    """Warp ``(B, 1, H, W)`` images with ``theta`` (zeros outside)."""
    grid = F.affine_grid(theta, list(imgs[0].shape), align_corners=False)
    return [F.grid_sample(im, grid, mode=mode, padding_mode="zeros", align_corners=False) for im in imgs]


def weighted_bce(p: torch.Tensor, y: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Class-balanced binary cross-entropy: positives weighted by ``n_neg / n_pos`` of the batch
    (lung paper §2.2, "weighted binary cross-entropy"), normalised by the total weight."""
    p, y = p.float().clamp(eps, 1 - eps), y.float()
    n_pos = y.sum().clamp_min(1.0)
    n_neg = (1 - y).sum().clamp_min(1.0)
    w = torch.where(y > 0.5, n_neg / n_pos, torch.ones_like(y))
    return (w * -(y * p.log() + (1 - y) * (1 - p).log())).sum() / w.sum()


def nodule_weighted_l1(pred: torch.Tensor, target: torch.Tensor, nodule_mask: torch.Tensor, w_nodule: float = 30.0) -> torch.Tensor:
    """Eq. 5: mean of ``|ŷ − y|·(1 + w_nodule·noduleMask)`` (the L1 norm divided by the pixel count)."""
    return ((pred.float() - target.float()).abs() * (1.0 + w_nodule * nodule_mask.float())).mean()


def dice_score(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-image Dice of binary ``(B, 1, H, W)`` masks → ``(B,)``."""
    p, t = pred.float().flatten(1), target.float().flatten(1)
    return (2 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) + eps)


def nodule_contrast_batch(img: torch.Tensor, nodule_mask: torch.Tensor, ring_px: int = 4) -> torch.Tensor:
    """Per-image nodule contrast: mean inside the nodule mask − mean in a ``ring_px`` ring around it.
    Returns ``(B,)`` with NaN for images without nodules."""
    m = (nodule_mask > 0.5).float()
    ring = (F.max_pool2d(m, 2 * ring_px + 1, stride=1, padding=ring_px) > 0).float() - m
    n_in, n_ring = m.sum((1, 2, 3)), ring.sum((1, 2, 3))
    c = (img * m).sum((1, 2, 3)) / n_in.clamp_min(1) - (img * ring).sum((1, 2, 3)) / n_ring.clamp_min(1)
    return torch.where(n_in > 0, c, torch.full_like(c, float("nan")))


@dataclass
class LungTrainOptions:
    """Options of :func:`train_lung_seg` / :func:`train_lung_extract` (CLI flags of the same names).

    ``data`` holds ``train/`` and ``val/`` folders written by ``cxrdecomp simulate-lung``.
    """

    data: str = "data/lung"
    out: str = "runs/lung"
    size: int = 512
    base: int = 32
    depth: int = 4
    dilate_from: int = 2
    noise_std: float = 0.2
    lr: float = 1e-4
    batch_size: int = 8
    epochs: int = 10
    max_steps: int = -1
    w_nodule: float = 30.0
    seg_checkpoint: str | None = None
    accelerator: str = "auto"
    devices: int = 1
    precision: str | None = None
    num_workers: int = 2
    progress: bool = True
    seed: int = 0
    dtype: str = "float16"
    extra: dict[str, Any] = field(default_factory=dict)

    def model_config(self) -> dict[str, Any]:
        return {"base": self.base, "depth": self.depth, "dilate_from": self.dilate_from, "noise_std": self.noise_std}


def _base_module():
    from cxrdecomp.train import MethodModule

    class _LungModule(MethodModule):
        method = METHOD

        def __init__(self, opts: LungTrainOptions):
            super().__init__()
            from cxrdecomp import methods as registry

            self.opts = opts
            self.model_config = opts.model_config()
            self.input_size = opts.size
            self.inference_defaults = {"w": 1.0, "w_levels": [0.5, 1.0, 2.0], "lung_threshold": 0.95, "enhanced_rescale": True}
            self.net = registry.build_model(METHOD, **self.model_config)

        def export_config(self, metrics, training):
            cfg = super().export_config(metrics, training)
            cfg["dtype"] = self.opts.dtype
            return cfg

    return _LungModule


def make_seg_module(opts: LungTrainOptions):
    """LightningModule training the segmentation U-Net (weighted BCE, aug ±2°, shifts 0.1/0.2, zoom 0.3)."""

    class LungSegModule(_base_module()):
        card_summary = (
            "Lung segmentation U-Net of the lung-structure method (Gozes & Greenspan 2018, §2.2), trained on "
            "DRRs of CT with AP-projected 3D lung masks (retrocardiac and subdiaphragmatic lung included)."
        )

        def training_step(self, batch, _i):
            x, y = batch["input"], batch["lung_mask"]
            theta = random_affine(x, 2.0, 0.1, 0.2, 0.3)
            x, y = apply_affine(theta, x, y)
            y = (y > 0.5).float()
            loss = weighted_bce(self.net.segment(x), y)
            self.log("train/loss", loss, prog_bar=True, batch_size=x.shape[0])
            return loss

        def validation_step(self, batch, _i):
            x, y = batch["input"], batch["lung_mask"]
            p = self.net.segment(x).float()
            self.log("val/loss", weighted_bce(p, y), sync_dist=True, batch_size=x.shape[0])
            self.log("val/dice", dice_score(p > 0.95, y > 0.5).mean(), prog_bar=True, sync_dist=True, batch_size=x.shape[0])
            self.log("val/dice_at_0.5", dice_score(p > 0.5, y > 0.5).mean(), sync_dist=True, batch_size=x.shape[0])

        def configure_optimizers(self):
            return torch.optim.Adam(self.net.seg.parameters(), lr=self.opts.lr)

    return LungSegModule(opts)


def make_extract_module(opts: LungTrainOptions):
    """LightningModule training the extraction U-Net (Eq. 5, aug ±4°, shifts 0.1, zoom 0.2, h-flip).

    The lung area is normalised with the ground-truth 2D lung mask during training. When
    ``opts.seg_checkpoint`` is given, its segmentation weights are copied in at the start and again
    at the end of training (so the exported checkpoint holds both trained networks).
    """

    class LungExtractModule(_base_module()):
        card_summary = (
            "Lung segmentation + lung-structure extraction U-Nets (Gozes & Greenspan 2018, §2.2–2.4), trained on "
            f"DRRs of CT and their lung X-rays (Eq. 4, non-lung voxels set to air); nodule-weighted L1 (Eq. 5), "
            f"w_nodule = {opts.w_nodule:g}."
        )

        def _load_seg(self):
            if self.opts.seg_checkpoint:
                copy_seg_weights(self.net, self.opts.seg_checkpoint)

        def on_fit_start(self):
            self._load_seg()

        def on_fit_end(self):
            self._load_seg()

        def training_step(self, batch, _i):
            x, y, nm, lm = batch["input"], batch["lung"], batch["nodule_mask"], batch["lung_mask"]
            theta = random_affine(x, 4.0, 0.1, 0.1, 0.2, hflip=True)
            x, y, nm, lm = apply_affine(theta, x, y, nm, lm)
            z = lung_normalize(x, lm)
            loss = nodule_weighted_l1(self.net.extract_lung(z), y, (nm > 0.5).float(), self.opts.w_nodule)
            self.log("train/loss", loss, prog_bar=True, batch_size=x.shape[0])
            return loss

        def validation_step(self, batch, _i):
            from pytorch_msssim import ssim

            x, y, nm, lm = batch["input"], batch["lung"], batch["nodule_mask"], batch["lung_mask"]
            pred = self.net.extract_lung(lung_normalize(x, lm)).float().clamp(0, 1)
            mse = F.mse_loss(pred, y)
            self.log("val/mae", F.l1_loss(pred, y), sync_dist=True, batch_size=x.shape[0])
            self.log("val/mse", mse, sync_dist=True, batch_size=x.shape[0])
            psnr = (10 * torch.log10(1.0 / ((pred - y) ** 2).mean((1, 2, 3)).clamp_min(1e-10))).mean()
            self.log("val/psnr", psnr, prog_bar=True, sync_dist=True, batch_size=x.shape[0])
            win = 11 if min(y.shape[-2:]) >= 11 * 4 else 3
            self.log("val/ssim", ssim(pred, y, data_range=1.0, win_size=win), sync_dist=True, batch_size=x.shape[0])
            cp, ct = nodule_contrast_batch(pred, nm), nodule_contrast_batch(y, nm)
            ok = ~torch.isnan(ct)
            if ok.any():
                self.log("val/nodule_contrast", cp[ok].mean(), sync_dist=True, batch_size=x.shape[0])
                self.log("val/nodule_contrast_target", ct[ok].mean(), sync_dist=True, batch_size=x.shape[0])
                self.log("val/nodule_contrast_ratio", (cp[ok] / ct[ok].clamp_min(1e-6)).mean(), sync_dist=True, batch_size=x.shape[0])

        def configure_optimizers(self):
            return torch.optim.Adam(self.net.extract.parameters(), lr=self.opts.lr)

    return LungExtractModule(opts)


def copy_seg_weights(net: LungNet, seg_checkpoint: str | os.PathLike) -> None:
    """Copy the segmentation U-Net of a ``lung`` checkpoint into ``net`` (same architecture).

    Raises:
        CheckpointError: not a ``lung`` checkpoint, or another architecture.
    """
    from cxrdecomp import checkpoint
    from cxrdecomp.errors import CheckpointError

    other, cfg = checkpoint.load(seg_checkpoint)
    if cfg.get("method") != METHOD:
        raise CheckpointError(f"{seg_checkpoint} is a {cfg.get('method')!r} checkpoint, not a 'lung' one")
    try:
        net.seg.load_state_dict(other.seg.state_dict())
    except RuntimeError as e:
        raise CheckpointError(f"segmentation weights of {seg_checkpoint} do not fit this network (base/depth differ): {e}") from e


def combine_checkpoints(seg: str | os.PathLike, extract: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write a ``lung`` checkpoint with the segmentation U-Net of ``seg`` and the extraction U-Net of
    ``extract`` (for trainings run in parallel); metrics of both are merged in config and card."""
    from cxrdecomp import checkpoint

    net, cfg = checkpoint.load(extract)
    copy_seg_weights(net, seg)
    seg_cfg = checkpoint.load_config(seg)
    cfg = {k: v for k, v in cfg.items() if k != "cxrdecomp_version"}
    cfg["metrics"] = {**{f"seg_{k}": v for k, v in seg_cfg.get("metrics", {}).items()}, **cfg.get("metrics", {})}
    cfg["training"] = {"segmentation": seg_cfg.get("training", {}), "extraction": cfg.get("training", {})}
    card = (Path(checkpoint.resolve(extract)) / checkpoint.CARD).read_text()
    seg_card = (Path(checkpoint.resolve(seg)) / checkpoint.CARD).read_text()
    card = card + "\n## Segmentation network (from " + str(seg) + ")\n\n" + seg_card.split("## Training", 1)[-1]
    return checkpoint.save(out, net, cfg, card)


def _loaders(opts: LungTrainOptions):
    from cxrdecomp.simulate.lung_generate import LungSimDataset

    root = Path(opts.data)
    tr = LungSimDataset(root / "train", opts.size)
    va = LungSimDataset(root / "val", opts.size)
    dl = torch.utils.data.DataLoader
    kw = {"num_workers": opts.num_workers, "persistent_workers": opts.num_workers > 0, "pin_memory": torch.cuda.is_available()}
    train = dl(tr, batch_size=opts.batch_size, shuffle=True, drop_last=len(tr) >= opts.batch_size, **kw)
    val = dl(va, batch_size=opts.batch_size, shuffle=False, **kw)
    return train, val, f"{len(tr)} simulated training views, {len(va)} validation views from {root}"


def _fit(module, opts: LungTrainOptions, out: Path) -> Path:
    from cxrdecomp.train import fit

    torch.manual_seed(opts.seed)
    train, val, desc = _loaders(opts)
    steps_per_epoch = max(1, len(train))
    epochs = opts.epochs if opts.max_steps < 0 else max(opts.epochs, math.ceil(opts.max_steps / steps_per_epoch))
    out.mkdir(parents=True, exist_ok=True)
    (out / "options.json").write_text(json.dumps(asdict(opts), indent=1) + "\n")
    return fit(
        module,
        train,
        val,
        out,
        data_description=desc,
        max_epochs=epochs,
        max_steps=opts.max_steps,
        accelerator=opts.accelerator,
        devices=opts.devices,
        precision=opts.precision,
        progress=opts.progress,
        log_every=10,
    )


def train_lung_seg(opts: LungTrainOptions) -> Path:
    """Train the lung segmentation U-Net; returns the exported checkpoint folder ``OUT/model``
    (a ``lung`` checkpoint whose extraction network is untrained). Resumes from ``OUT/last.ckpt``.

    Raises:
        DataNotFoundError: no simulated samples in ``data/train`` or ``data/val``.
    """
    return _fit(make_seg_module(opts), opts, Path(opts.out))


def train_lung_extract(opts: LungTrainOptions) -> Path:
    """Train the lung-structure extraction U-Net (Eq. 5 with ``opts.w_nodule``; 0 = unweighted
    ablation); with ``opts.seg_checkpoint`` the exported ``OUT/model`` holds both trained networks.

    Raises:
        DataNotFoundError: no simulated samples; CheckpointError: unusable ``seg_checkpoint``.
    """
    return _fit(make_extract_module(opts), opts, Path(opts.out))
