"""Training of the DAE and its AE baselines (``cxrdecomp train dae``), "Disentanglement AutoEncoder for bone
suppression in chest radiographs" §2.1–2.2 and Table 1.

Adam, cosine-annealed per step to 1 % of the learning rate at the end of the epochs or of the time budget
(:func:`cxrdecomp.train.schedules.warmup_cosine`), loss :func:`~cxrdecomp.methods.dae.losses.dae_loss`,
random affine augmentation (:class:`cxrdecomp.data.augment.PairedAffine`) on the training device.
Validation every epoch on the real validation pairs at model size (display domain):
``val/bsr``, ``val/rmae``, ``val/psnr``, ``val/ssim`` (:func:`cxrdecomp.metrics.suppression_metrics`) and
the identity baseline ``val/psnr_identity``, ``val/ssim_identity``. The weights of the best validation BSR
are kept (also in ``last.ckpt``, under ``"dae_best"``) and exported.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import lightning as L
import torch

from cxrdecomp.data.augment import PairedAffine
from cxrdecomp.data.loaders import make_loader
from cxrdecomp.errors import ConfigError, DataNotFoundError
from cxrdecomp.methods.dae.losses import bone_mask, dae_loss
from cxrdecomp.methods.dae.network import BoneSegBranch, build
from cxrdecomp.methods.dae.options import (
    DEFAULT_MASK_THRESHOLD,
    SIM_MODES,
    VARIANTS,
    Options,
)
from cxrdecomp.metrics import suppression_metrics
from cxrdecomp.train import MethodModule, fit
from cxrdecomp.train.schedules import warmup_cosine

BEST_KEY = "dae_best"
"""Lightning-checkpoint key of the best-validation-BSR weights and metrics."""


class DAEModule(MethodModule):
    """LightningModule of the DAE and its AE baselines (``variant`` in :data:`~cxrdecomp.methods.dae.options.VARIANTS`).

    ``self.net`` is the inference :class:`~cxrdecomp.methods.dae.network.DAE` (exported);
    ``self.seg_branch`` the training-only :class:`~cxrdecomp.methods.dae.network.BoneSegBranch` (``None``
    for AE variants). :meth:`select_for_export` loads the weights of the best validation BSR into ``net``.

    Raises:
        ConfigError: unknown variant.
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
    ):
        super().__init__()
        if variant not in VARIANTS:
            raise ConfigError(f"unknown DAE variant {variant!r}; choose one of {sorted(VARIANTS)}")
        self.variant = variant
        self.method, with_seg, self.use_msssim = VARIANTS[variant]
        self.model_config = {"base": base, "kernel": kernel, "residual": residual, "norm": norm}
        self.net = build(**self.model_config)
        self.seg_branch = BoneSegBranch(base, kernel, norm) if with_seg else None
        self.input_size = size
        self.inference_defaults = {}
        self.lr, self.lambda_mse, self.lambda_seg = lr, lambda_mse, lambda_seg
        self.mask_threshold = mask_threshold
        self.augment = PairedAffine() if augment else None
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
            "(BSR 1 − Σ(Ŝ−S)²/Σ(I−S)², identity = 0; RMAE of the bone image I − Ŝ); "
            "exported: the weights of the best validation BSR."
        )

    # -- data on device -----------------------------------------------------------------------------
    def on_after_batch_transfer(self, batch, dataloader_idx: int = 0):
        if self._trainer is not None and self.trainer.training and self.augment is not None:
            batch = dict(batch)
            batch["cxr"], batch["soft"] = self.augment(batch["cxr"], batch["soft"])
        return batch

    # -- steps --------------------------------------------------------------------------------------
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
        loss, _, pred = self._loss(batch)
        cxr, soft = batch["cxr"], batch["soft"]
        bs = cxr.shape[0]
        self.log("val/loss", loss, sync_dist=True, batch_size=bs)
        m = suppression_metrics(pred.detach().clamp(0, 1), soft, cxr)
        ident = suppression_metrics(cxr, soft, cxr)
        m["psnr_identity"], m["ssim_identity"] = ident["psnr"], ident["ssim"]
        for k, v in m.items():
            self.log(f"val/{k}", v.float().mean(), sync_dist=True, batch_size=bs, prog_bar=k == "bsr")
        self._val.append(m)

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

    # -- best weights: checkpoint and export --------------------------------------------------------
    def on_save_checkpoint(self, checkpoint):
        super().on_save_checkpoint(checkpoint)
        checkpoint[BEST_KEY] = {"bsr": self.best_bsr, "metrics": self.best_metrics, "state": self.best_state}

    def on_load_checkpoint(self, checkpoint):
        super().on_load_checkpoint(checkpoint)
        best = checkpoint.get(BEST_KEY)
        if best:
            self.best_bsr, self.best_metrics, self.best_state = best["bsr"], best["metrics"], best["state"]

    def select_for_export(self, metrics: dict[str, float]) -> dict[str, float]:
        """Load the weights of the best validation BSR into ``self.net``; return their metrics
        (``metrics``, the last epoch's, when no validation epoch has run)."""
        if self.best_state is None:
            return metrics
        self.net.load_state_dict(self.best_state)
        return dict(self.best_metrics)

    def export_config(self, metrics, training):
        return super().export_config(metrics, {**training, "variant": self.variant, "selection": "best val/bsr"})

    def configure_optimizers(self):
        """Adam; learning rate cosine-annealed per step to 1 % at the end of the epochs or of the time budget."""
        params = list(self.net.parameters()) + (list(self.seg_branch.parameters()) if self.seg_branch is not None else [])
        opt = torch.optim.Adam(params, lr=self.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_cosine(self.progress, warmup=0.0, floor=0.01))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _module(o: Options) -> DAEModule:
    return DAEModule(
        o.variant, base=o.base, kernel=o.kernel, residual=o.residual, norm=o.norm, size=o.size, lr=o.lr,
        lambda_mse=o.lambda_mse, lambda_seg=o.lambda_seg, mask_threshold=o.mask_threshold, augment=o.augment,
    )


def _real_pairs(o: Options):
    from cxrdecomp.data.pairs import PairedImages, default_bse_jsrt

    root = Path(o.data) if o.data is not None else default_bse_jsrt()
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DataNotFoundError(
                f"{root} has no {split}/ folder; give --data a folder with train/ and val/ pairs "
                "(cxr/ and soft/ with matching names, e.g. ../shared/data/bse-jsrt)"
            )
    tr, val = PairedImages(root / "train", size=o.size), PairedImages(root / "val", size=o.size)
    if o.limit_pairs:
        tr = torch.utils.data.Subset(tr, range(min(o.limit_pairs, len(tr))))
        val = torch.utils.data.Subset(val, range(min(o.limit_pairs, len(val))))
    return root, tr, val


def train(o: Options) -> Path:
    """Train a DAE / AE variant on paired radiographs; export the weights of the best validation BSR.

    Writes ``OUT/last.ckpt`` (resume: rerun the same options), ``OUT/logs`` (CSV + TensorBoard),
    ``OUT/metrics.json`` and ``OUT/model`` (checkpoint folder for ``Decomposer.from_pretrained``); with
    ``sim_mode="pretrain"`` the pre-training stage first writes the same under ``OUT/pretrain``.

    Returns:
        The exported checkpoint folder ``OUT/model``.

    Raises:
        ConfigError: unknown variant or sim mode, size not divisible by 4.
        DataNotFoundError: missing ``train/`` / ``val/`` folders or simulated pairs.
    """
    from cxrdecomp.methods.dae.data import simulated_pairs

    if o.variant not in VARIANTS:
        raise ConfigError(f"unknown variant {o.variant!r}; choose one of {sorted(VARIANTS)}")
    if o.sim_mode not in SIM_MODES:
        raise ConfigError(f"--sim-mode must be one of {', '.join(SIM_MODES)}, not {o.sim_mode!r}")
    if o.size % 4:
        raise ConfigError(f"--size must be divisible by 4, got {o.size}")
    L.seed_everything(o.seed, workers=True, verbose=False)
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.benchmark = True
    out = Path(o.out)
    root, train_set, val = _real_pairs(o)
    desc = f"{root}: {len(train_set)} training / {len(val)} validation pairs at {o.size}²"

    def loader(ds, shuffle: bool):
        return make_loader(ds, o.batch_size, shuffle=shuffle, num_workers=o.num_workers, drop_last=False)

    val_loader = loader(val, False)
    sim = simulated_pairs(o.sim_data, size=o.size, augment=o.augment) if o.sim_data else None
    module = _module(o)
    if sim is not None and o.sim_mode == "pretrain":
        pre = _module(o)
        sim_loader = loader(sim, True)
        fit(pre, sim_loader, val_loader, o, out=out / "pretrain", epochs=o.sim_epochs,
            data_description=f"{o.sim_data}: {len(sim)} simulated pairs", log_every=max(1, min(10, len(sim_loader))))
        module.net.load_state_dict(pre.net.state_dict())  # the pre-training's best validation weights
        if pre.seg_branch is not None:
            module.seg_branch.load_state_dict(pre.seg_branch.state_dict())
        desc += f"; pre-trained {o.sim_epochs} epochs on {len(sim)} simulated pairs from {o.sim_data}"
    if sim is not None and o.sim_mode == "mix":
        train_set = torch.utils.data.ConcatDataset([train_set, sim])
        desc += f"; mixed with {len(sim)} simulated pairs from {o.sim_data}"
    train_loader = loader(train_set, True)
    folder = fit(module, train_loader, val_loader, o, data_description=desc, log_every=max(1, min(10, len(train_loader))))
    print(f"model: {folder}", file=sys.stderr)
    return folder
