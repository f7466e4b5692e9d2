"""Training of the bone U-Net (``cxrdecomp train bone_unet``), bone-extraction paper §2.3.

Adam (lr 1e-3), batch 8, L1 loss on the normalised bone target (see :mod:`cxrdecomp.methods.bone_unet.predict`)
plus, when VGG16 weights are given, the perceptual loss of Eq. 5 on the display-domain bone image.
Validation each epoch on held-out simulated pairs: ``val/rmse``, ``val/psnr``, ``val/ssim``,
``val/ms_ssim`` of the display-domain bone image (data range 1), and ``val/rmse_zero`` — the RMSE of
predicting no bone at all — as the baseline to read them against.

The exported checkpoint stores weights as float16 (``config["dtype"] = "float16"``): the paper's
width (base 32, depth 4, 7.8 M parameters) is 15.6 MB instead of 31 MB.
"""

from __future__ import annotations

from pathlib import Path

import torch

from cxrdecomp import metrics
from cxrdecomp.data.loaders import make_loader
from cxrdecomp.methods.bone_unet.network import build
from cxrdecomp.methods.bone_unet.options import Options
from cxrdecomp.methods.bone_unet.predict import (
    BONE_SCALE,
    bone_to_target,
    image_std,
    normalize,
    output_to_bone,
)
from cxrdecomp.train import MethodModule, fit
from cxrdecomp.train.engine import init_config


class BoneUNetModule(MethodModule):
    """LightningModule of the bone U-Net (see module docstring)."""

    method = "bone_unet"
    card_summary = (
        "Bone U-Net of Gozes & Greenspan (ISBI 2019), trained on realistic radiographs simulated from CT (`cxrdecomp "
        "simulate` or `--online`: anatomy variation, cone beam, polyenergetic physics, detector, processing), optionally "
        "mixed with real BSE-JSRT pairs (loss inside their lung fields). Input: a chest radiograph in the display domain "
        "[0, 1]; output: its bone image (display domain), soft tissue = input − bone."
    )

    def __init__(self, size: int = 512, base: int = 32, depth: int = 4, dilate_from: int = 2, lr: float = 1e-3,
                 bone_scale: float = BONE_SCALE, vgg_weights: str | None = None, perceptual_weight: float = 1.0,
                 dtype: str = "float16"):
        super().__init__()
        self.save_hyperparameters()
        self.model_config = {"base": base, "depth": depth, "dilate_from": dilate_from}
        self.net = build(**self.model_config)
        self.input_size = int(size)
        self.inference_defaults = {"bone_scale": float(bone_scale), "target": "bone/(bone_scale*std(x))", "w": 1.0, "w_s": 1.0}
        self.lr = lr
        self.bone_scale = float(bone_scale)
        self.dtype_name = dtype
        self.perceptual = None
        self.perceptual_weight = perceptual_weight
        if vgg_weights:
            from cxrdecomp.nn.losses import PerceptualLoss

            self.perceptual = PerceptualLoss(vgg_weights)

    def export_config(self, metrics, training):
        cfg = super().export_config(metrics, training)
        if self.dtype_name == "float16":
            cfg["dtype"] = "float16"
        return cfg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Display-domain bone image of ``x`` ``(B, 1, S, S)``."""
        return output_to_bone(self.net(normalize(x)), x, self.bone_scale)

    def _losses(self, batch):
        x, bone = batch["x"], batch["bone"]
        out = self.net(normalize(x))
        err = (out - bone_to_target(bone, x, self.bone_scale)).abs()
        field = batch.get("field")
        # the target holds only inside `field` (BSE-JSRT pairs: the lung fields, see RealPairs)
        l1 = err.mean() if field is None else (err * field).sum() / field.sum().clamp_min(1.0)
        loss = l1
        parts = {"l1": l1}
        if self.perceptual is not None:
            pl = self.perceptual(output_to_bone(out, x, self.bone_scale), bone)
            parts["perceptual"] = pl
            loss = loss + self.perceptual_weight * pl
        return loss, parts, out

    def training_step(self, batch, batch_idx):
        loss, parts, _ = self._losses(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["x"].shape[0])
        for k, v in parts.items():
            self.log(f"train/{k}", v, batch_size=batch["x"].shape[0])
        return loss

    def validation_step(self, batch, batch_idx):
        loss, _, out = self._losses(batch)
        pred = output_to_bone(out, batch["x"], self.bone_scale)
        m = metrics.image_metrics(pred.float(), batch["bone"].float(), data_range=1.0)
        n = batch["x"].shape[0]
        self.log("val/loss", loss, sync_dist=True, batch_size=n)
        for k, v in m.items():
            self.log(f"val/{k}", v.float().mean(), sync_dist=True, prog_bar=k in ("psnr",), batch_size=n)
        # baseline printed beside the metrics: predicting "no bone" (bone = 0)
        self.log("val/rmse_zero", batch["bone"].float().pow(2).mean().sqrt(), sync_dist=True, batch_size=n)

    def configure_optimizers(self):
        return torch.optim.Adam(self.net.parameters(), lr=self.lr)

    def state_dict(self, *args, **kwargs):  # keep the frozen VGG out of Lightning checkpoints
        sd = super().state_dict(*args, **kwargs)
        return {k: v for k, v in sd.items() if not k.startswith("perceptual.")}

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):
        return super().load_state_dict(state_dict, strict=False if self.perceptual is not None else strict, **kwargs)


def estimate_bone_scale(ds, n: int = 32, target: float = 0.6) -> float:
    """``bone_scale`` so that the 99.9th percentile of ``|bone| / (bone_scale · std(x))`` is ``target``
    over up to ``n`` items of ``ds`` (keeps targets well inside tanh's range whatever the bone definition)."""
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(ds), generator=g)[:n].tolist()
    vals = []
    for i in idx:
        it = ds[i]
        r = (it["bone"] / image_std(it["x"][None])[0]).abs().flatten()
        vals.append(torch.quantile(r[:: max(1, r.numel() // 65536)], 0.999))
    q = float(torch.stack(vals).max())
    return float(f"{max(q / target, 1e-3):.3g}")


def train(o: Options) -> Path:
    """Train the bone U-Net; returns the exported checkpoint folder ``OUT/model``.

    Raises:
        DataNotFoundError: no simulated samples in ``data``, missing VGG weights or real-pair folder.
    """
    from cxrdecomp.data.simulated import RealPairs, SimulatedPairs, split_names
    from cxrdecomp.errors import ConfigError

    if o.data is None and not o.online:
        raise ConfigError("give --data (a folder written by `cxrdecomp simulate`) or --online")
    if o.data is not None and o.online:
        raise ConfigError("give either --data or --online, not both")
    torch.manual_seed(int(o.seed))
    size = int(o.size)
    extra = {}
    real = None
    if o.real_pairs:
        root = Path(o.real_pairs)
        real = RealPairs(root / "train" if (root / "train").is_dir() else root, size=size)
    if o.online:
        from cxrdecomp.data.online import datamodule_from_options

        dm = datamodule_from_options(o, ("image", "bone"), {"image": "x"}, target=o.target, real=real, real_every=o.real_every)
        train_ds, desc = dm.train_set, dm.describe()
        extra["use_distributed_sampler"] = False  # the EpochSampler splits the indices by rank
    else:
        data = Path(o.data)
        train_names, val_names = split_names(data, o.val_fraction, seed=int(o.seed))
        train_ds = SimulatedPairs(data, size=size, augment=True, names=train_names)
        val_ds = SimulatedPairs(data, size=size, augment=False, names=val_names)
        desc = f"{len(train_ds)} simulated pairs from {data} (validation: {len(val_ds)})"
    if real is not None and not o.online:
        train_ds = torch.utils.data.ConcatDataset([train_ds, real])
        desc += f" + {len(real)} real pairs from {o.real_pairs}"
    if o.init_from is not None and str(o.bone_scale) == "auto":
        bone_scale = float(init_config(o.init_from, "bone_unet")["inference"]["bone_scale"])  # the target it learnt
    elif str(o.bone_scale) == "auto":
        bone_scale = estimate_bone_scale(getattr(train_ds, "simulated", train_ds), n=8 if o.online else 32)
    else:
        bone_scale = float(o.bone_scale)
    module = BoneUNetModule(size=size, base=o.base, depth=o.depth, dilate_from=o.dilate_from, lr=o.lr, bone_scale=bone_scale,
                            vgg_weights=str(o.vgg_weights) if o.vgg_weights else None, perceptual_weight=o.perceptual_weight,
                            dtype=o.dtype)
    if o.online:
        train_loader, val_loader = dm.train_dataloader(), dm.val_dataloader()
    else:
        train_loader = make_loader(train_ds, o.batch_size, shuffle=True, num_workers=o.num_workers, drop_last=False)
        val_loader = make_loader(val_ds, o.batch_size, shuffle=False, num_workers=o.num_workers)
    return fit(module, train_loader, val_loader, o, data_description=desc, limit_val_batches=o.limit_val_batches, **extra)
