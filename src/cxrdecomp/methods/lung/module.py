"""Training of the lung-structure networks (``cxrdecomp train lung --stage seg|extract``), lung paper §2.2.

Both U-Nets of :class:`~cxrdecomp.methods.lung.network.LungNet` are trained separately, one stage per run,
on the simulated views of :mod:`cxrdecomp.simulate.lung_generate` (``cxrdecomp simulate-lung``):

* ``--stage seg`` (:class:`LungSegModule`): the segmentation U-Net on HE+CLAHE DRRs with their
  projected 3D lung masks; class-balanced BCE (:func:`~cxrdecomp.methods.lung.losses.weighted_bce`),
  Adam 1e-4, batch 8, augmentation rotation ±2°, width shift 0.1, height shift 0.2, zoom 0.3.
  Validation: ``val/loss``, ``val/dice`` (threshold 0.95) and ``val/dice_at_0.5``.
* ``--stage extract`` (:class:`LungExtractModule`): the extraction U-Net on lung-normalised inputs (the
  ground-truth 2D lung mask defines the lung area) with the lung X-ray target (Eq. 4); the
  nodule-weighted L1 of Eq. 5 (:func:`~cxrdecomp.methods.lung.losses.nodule_weighted_l1`,
  ``w_nodule`` = 30, 0 for the ablation), Adam 1e-4, batch 8, augmentation rotation ±4°, width/height
  shift 0.1, zoom 0.2, horizontal flip. Validation (prediction clamped to [0, 1] vs the display-domain
  target): ``val/mae``, ``val/mse``, ``val/rmse``, ``val/psnr``, ``val/ssim`` (:mod:`cxrdecomp.metrics`)
  and the nodule contrast of prediction and target (:func:`cxrdecomp.simulate.lung.nodule_contrast`)
  with their ratio.

Data: with ``--online``, fresh samples of the realistic simulation (:mod:`cxrdecomp.data.online`: anatomy
variation, cone beam, polyenergetic physics, detector, "for presentation" processing, 2-D nodules) with its lung
X-ray (``lung``, Eq. 4 on the image's window scale), lung and nodule masks; the radiograph goes through HE + CLAHE
on the batch (:func:`cxrdecomp.preprocess.he_clahe`, as at inference), and validation uses the held-out anatomy
bank. Else the stored views of ``cxrdecomp simulate-lung`` (already HE + CLAHE processed).

Augmentation (:class:`cxrdecomp.data.augment.PairedAffine`, zeros outside) runs on the device on each
batch, one random affine per image shared by the image and its targets.

With ``--seg-checkpoint`` the extraction run copies that checkpoint's segmentation weights in at the
start and again at the end of fitting, so its exported ``OUT/model`` holds both trained networks — the
usable ``lung`` model. Rerunning a finished extraction run with ``--seg-checkpoint`` (it resumes from
``OUT/last.ckpt`` and trains no further) re-exports it with the segmentation network bundled.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from cxrdecomp import metrics
from cxrdecomp.data.augment import PairedAffine
from cxrdecomp.data.loaders import make_loader
from cxrdecomp.errors import CheckpointError, ConfigError
from cxrdecomp.methods.lung.data import LungSimDataset
from cxrdecomp.methods.lung.losses import nodule_weighted_l1, weighted_bce
from cxrdecomp.methods.lung.network import LungNet, build
from cxrdecomp.methods.lung.options import STAGES, Options
from cxrdecomp.methods.lung.predict import LUNG_THRESHOLD
from cxrdecomp.preprocess import he_clahe, lung_normalize
from cxrdecomp.simulate.lung import nodule_contrast
from cxrdecomp.train import MethodModule, fit

METHOD = "lung"

SEG_AUGMENT = PairedAffine(rotation=2.0, shift=(0.1, 0.2), shear=0.0, zoom=0.3, hflip=0.0, padding_mode="zeros")
"""Augmentation of the segmentation U-Net (§2.2): rotation ±2°, width shift 0.1, height shift 0.2, zoom 0.3."""

EXTRACT_AUGMENT = PairedAffine(rotation=4.0, shift=(0.1, 0.1), shear=0.0, zoom=0.2, hflip=0.5, padding_mode="zeros")
"""Augmentation of the extraction U-Net (§2.2): rotation ±4°, width/height shift 0.1, zoom 0.2, horizontal flip."""


class LungModule(MethodModule):
    """What both stages share: the :class:`LungNet`, its config, the inference defaults and the export dtype.

    Args:
        size: model input size (square pixels).
        base, depth, dilate_from, noise_std: :func:`cxrdecomp.methods.lung.network.build` arguments.
        lr: Adam learning rate.
        dtype: exported weight dtype, ``"float16"`` or ``"float32"``.
    """

    method = METHOD

    def __init__(self, size: int = 512, base: int = 32, depth: int = 4, dilate_from: int = 2, noise_std: float = 0.2,
                 lr: float = 1e-4, dtype: str = "float16"):
        super().__init__()
        self.model_config = {"base": int(base), "depth": int(depth), "dilate_from": int(dilate_from), "noise_std": float(noise_std)}
        self.net = build(**self.model_config)
        self.input_size = int(size)
        self.inference_defaults = {"w": 1.0, "w_levels": [0.5, 1.0, 2.0], "lung_threshold": LUNG_THRESHOLD, "enhanced_rescale": True}
        self.lr = float(lr)
        self.dtype_name = dtype
        self.he_clahe_input = False  # online samples: HE + CLAHE on the batch (stored views have it already)

    def on_after_batch_transfer(self, batch, dataloader_idx):
        if self.he_clahe_input:
            batch["input"] = he_clahe(batch["input"])
        return batch

    def export_config(self, metrics: dict[str, float], training: dict[str, Any]) -> dict[str, Any]:
        cfg = super().export_config(metrics, training)
        cfg["dtype"] = self.dtype_name
        return cfg


class LungSegModule(LungModule):
    """Stage ``seg``: trains ``net.seg`` only (weighted BCE, :data:`SEG_AUGMENT`); see the module docstring."""

    card_summary = (
        "Lung segmentation U-Net of the lung-structure method (Gozes & Greenspan 2018, §2.2), trained on "
        "DRRs of CT with AP-projected 3D lung masks (retrocardiac and subdiaphragmatic lung included). "
        "Its extraction U-Net is untrained: pass this checkpoint to `cxrdecomp train lung --stage extract --seg-checkpoint`."
    )

    def training_step(self, batch, batch_idx):
        x, y = SEG_AUGMENT(batch["input"], batch["lung_mask"])
        loss = weighted_bce(self.net.segment(x), (y > 0.5).float())
        self.log("train/loss", loss, prog_bar=True, batch_size=x.shape[0])
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch["input"], batch["lung_mask"]
        p = self.net.segment(x).float()
        n = x.shape[0]
        self.log("val/loss", weighted_bce(p, y), sync_dist=True, batch_size=n)
        self.log("val/dice", metrics.dice(p > LUNG_THRESHOLD, y > 0.5).float().mean(), prog_bar=True, sync_dist=True, batch_size=n)
        self.log("val/dice_at_0.5", metrics.dice(p > 0.5, y > 0.5).float().mean(), sync_dist=True, batch_size=n)

    def configure_optimizers(self):
        return torch.optim.Adam(self.net.seg.parameters(), lr=self.lr)


class LungExtractModule(LungModule):
    """Stage ``extract``: trains ``net.extract`` only (Eq. 5, :data:`EXTRACT_AUGMENT`); see the module docstring.

    Args:
        w_nodule: nodule weight of Eq. 5 (0: the unweighted ablation).
        seg_checkpoint: a ``lung`` checkpoint folder whose segmentation U-Net is copied into ``net`` at
            construction and at the start and end of fitting (after a resume has restored the weights).
        **kwargs: :class:`LungModule` arguments.

    Raises:
        CheckpointError: ``seg_checkpoint`` is not a ``lung`` checkpoint or has another architecture.
    """

    def __init__(self, w_nodule: float = 30.0, seg_checkpoint: str | os.PathLike | None = None, **kwargs):
        super().__init__(**kwargs)
        self.w_nodule = float(w_nodule)
        self.seg_checkpoint = str(seg_checkpoint) if seg_checkpoint else None
        self.card_summary = (
            "Lung segmentation + lung-structure extraction U-Nets (Gozes & Greenspan 2018, §2.2–2.4), trained on "
            "DRRs of CT and their lung X-rays (Eq. 4, non-lung voxels set to air); nodule-weighted L1 (Eq. 5), "
            f"w_nodule = {self.w_nodule:g}. Segmentation weights: "
            + (f"from `{self.seg_checkpoint}`." if self.seg_checkpoint else "untrained (no --seg-checkpoint given).")
        )
        self._seg_config: dict[str, Any] = {}
        self._load_seg()

    def _load_seg(self) -> None:
        if self.seg_checkpoint:
            self._seg_config = copy_seg_weights(self.net, self.seg_checkpoint)

    def on_fit_start(self):
        super().on_fit_start()
        self._load_seg()

    def on_fit_end(self):
        super().on_fit_end()
        self._load_seg()

    def training_step(self, batch, batch_idx):
        x, y, nm, lm = EXTRACT_AUGMENT(batch["input"], batch["lung"], batch["nodule_mask"], batch["lung_mask"])
        loss = nodule_weighted_l1(self.net.extract_lung(lung_normalize(x, lm)), y, (nm > 0.5).float(), self.w_nodule)
        self.log("train/loss", loss, prog_bar=True, batch_size=x.shape[0])
        return loss

    def validation_step(self, batch, batch_idx):
        x, y, nm, lm = batch["input"], batch["lung"], batch["nodule_mask"], batch["lung_mask"]
        pred = self.net.extract_lung(lung_normalize(x, lm)).float().clamp(0, 1)
        n = x.shape[0]
        m = {"mae": metrics.mae(pred, y), "mse": metrics.mse(pred, y), **metrics.image_metrics(pred, y, data_range=1.0, with_ms_ssim=False)}
        for k, v in m.items():
            self.log(f"val/{k}", v.float().mean(), prog_bar=k == "psnr", sync_dist=True, batch_size=n)
        cp, ct = nodule_contrast(pred, nm), nodule_contrast(y, nm)
        ok = ~torch.isnan(ct)
        if ok.any():
            self.log("val/nodule_contrast", cp[ok].float().mean(), sync_dist=True, batch_size=n)
            self.log("val/nodule_contrast_target", ct[ok].float().mean(), sync_dist=True, batch_size=n)
            self.log("val/nodule_contrast_ratio", (cp[ok] / ct[ok].clamp_min(1e-6)).float().mean(), sync_dist=True, batch_size=n)

    def configure_optimizers(self):
        return torch.optim.Adam(self.net.extract.parameters(), lr=self.lr)

    def export_config(self, metrics: dict[str, float], training: dict[str, Any]) -> dict[str, Any]:
        """Adds, with a segmentation checkpoint, its metrics as ``seg_<name>`` and its training record as
        ``training["segmentation"]``."""
        cfg = super().export_config(metrics, training)
        if self._seg_config:
            cfg["metrics"] = {**{f"seg_{k}": v for k, v in self._seg_config.get("metrics", {}).items()}, **cfg["metrics"]}
            cfg["training"] = {**cfg["training"], "segmentation": {"checkpoint": self.seg_checkpoint, **self._seg_config.get("training", {})}}
        return cfg

    def model_card(self, metrics: dict[str, float], training: dict[str, Any], n_params: int, size_mb: float) -> str:
        card = super().model_card(metrics, training, n_params, size_mb)
        if not self._seg_config:
            return card
        seg_training = self._seg_config.get("training", {})
        lines = ["", "## Segmentation network", "", f"- From: `{self.seg_checkpoint}`", f"- Command: `{seg_training.get('command', '')}`",
                 f"- Steps: {seg_training.get('global_step', '')}", "", "Its validation metrics:", ""]
        lines += [f"- {k}: {v:.4g}" for k, v in sorted(self._seg_config.get("metrics", {}).items())] or ["- (none logged)"]
        return card + "\n".join(lines) + "\n"


def copy_seg_weights(net: LungNet, seg_checkpoint: str | os.PathLike) -> dict[str, Any]:
    """Copy the segmentation U-Net of a ``lung`` checkpoint folder into ``net`` (same architecture).

    Returns:
        The checkpoint's ``config.json``.

    Raises:
        CheckpointError: not a ``lung`` checkpoint, or another architecture (``base`` / ``depth`` differ).
    """
    from cxrdecomp import methods

    other, cfg = methods.load(seg_checkpoint)
    if cfg.get("method") != METHOD:
        raise CheckpointError(f"{seg_checkpoint} is a {cfg.get('method')!r} checkpoint, not a 'lung' one")
    try:
        net.seg.load_state_dict(other.seg.state_dict())
    except RuntimeError as e:
        raise CheckpointError(f"segmentation weights of {seg_checkpoint} do not fit this network (base/depth differ): {e}") from e
    return cfg


def train(o: Options) -> Path:
    """Train one stage of the lung-structure method (``o.stage``: ``"seg"`` or ``"extract"``); returns the
    exported checkpoint folder ``OUT/model``. Resumes from ``OUT/last.ckpt``.

    ``seg`` exports a ``lung`` checkpoint whose extraction network is untrained; ``extract`` with
    ``o.seg_checkpoint`` exports both trained networks (see the module docstring).

    Raises:
        ConfigError: unknown stage, ``seg_checkpoint`` with stage ``seg``, neither or both of ``data`` and ``online``,
            unknown ``dtype``.
        DataNotFoundError: no simulated samples in ``data/train`` or ``data/val``.
        CheckpointError: unusable ``seg_checkpoint``.
    """
    if o.stage not in STAGES:
        raise ConfigError(f"unknown lung training stage {o.stage!r}: use 'seg' (segmentation U-Net, first) or 'extract' (extraction U-Net)")
    if o.stage == "seg" and o.seg_checkpoint is not None:
        raise ConfigError("--seg-checkpoint belongs to --stage extract (it bundles a trained segmentation U-Net into the extraction run)")
    if o.data is None and not o.online:
        raise ConfigError("give --data (a folder written by `cxrdecomp simulate-lung`, train/ and val/) or --online")
    if o.data is not None and o.online:
        raise ConfigError("give either --data or --online, not both")
    if o.dtype not in ("float16", "float32"):
        raise ConfigError(f"dtype must be 'float16' or 'float32', not {o.dtype!r}")
    torch.manual_seed(int(o.seed))
    size = int(o.size)
    common = {"size": size, "base": o.base, "depth": o.depth, "dilate_from": o.dilate_from, "noise_std": o.noise_std, "lr": o.lr, "dtype": o.dtype}
    if o.stage == "seg":
        module: LungModule = LungSegModule(**common)
    else:
        module = LungExtractModule(w_nodule=o.w_nodule, seg_checkpoint=o.seg_checkpoint, **common)
    extra = {}
    if o.online:
        from cxrdecomp.data.online import datamodule_from_options

        dm = datamodule_from_options(o, ("image", "lung", "lung_mask", "nodule_mask"), {"image": "input"})
        train_loader, val_loader, desc = dm.train_dataloader(), dm.val_dataloader(), dm.describe()
        module.he_clahe_input = True
        extra["use_distributed_sampler"] = False  # the EpochSampler splits the indices by rank
    else:
        root = Path(o.data)
        train_ds, val_ds = LungSimDataset(root / "train", size), LungSimDataset(root / "val", size)
        train_loader = make_loader(train_ds, o.batch_size, shuffle=True, num_workers=o.num_workers)
        val_loader = make_loader(val_ds, o.batch_size, shuffle=False, num_workers=o.num_workers)
        desc = f"{len(train_ds)} simulated training views, {len(val_ds)} validation views from {root}"
    return fit(module, train_loader, val_loader, o, data_description=desc, **extra)
