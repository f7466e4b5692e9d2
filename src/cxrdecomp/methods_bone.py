"""Training of the bone U-Net (``cxrdecomp train --method bone_unet``), bone-extraction paper §2.3.

Adam (lr 1e-3), batch 8, L1 loss on the normalised bone target (see :mod:`cxrdecomp.models.unet`)
plus, when VGG16 weights are given, the perceptual loss of Eq. 5 on the display-domain bone image.
Validation each epoch on held-out simulated pairs: ``val/rmse``, ``val/psnr``, ``val/ssim``,
``val/ms_ssim`` of the display-domain bone image (data range 1), and ``val/rmse_zero`` — the RMSE of
predicting no bone at all — as the baseline to read them against.

The exported checkpoint stores weights as float16 (``config["dtype"] = "float16"``): the paper's
width (base 32, depth 4, 7.8 M parameters) is 15.6 MB instead of 31 MB.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cxrdecomp.models import registry
from cxrdecomp.models.unet import BONE_SCALE, bone_to_target, normalize, output_to_bone
from cxrdecomp.train import MethodModule, fit

DEFAULTS: dict[str, Any] = {
    "epochs": 10, "max_steps": -1, "batch_size": 8, "lr": 1e-3, "size": 512, "base": 32, "depth": 4,
    "dilate_from": 2, "accelerator": "auto", "devices": 1, "num_nodes": 1, "strategy": "auto",
    "precision": None, "vgg_weights": None, "perceptual_weight": 1.0, "real_pairs": None, "resume": True,
    "num_workers": 0, "val_fraction": 0.1, "bone_scale": "auto", "display": "log", "progress": True,
    "limit_val_batches": 1.0, "dtype": "float16", "seed": 0, "max_minutes": None,
}


def _ms_ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from pytorch_msssim import ms_ssim

    side = min(pred.shape[-2:])
    win = 11
    while win > 3 and side <= (win - 1) * 16:
        win -= 2
    if side <= (win - 1) * 16:
        return torch.tensor(float("nan"), device=pred.device)
    return ms_ssim(pred.float(), target.float(), data_range=1.0, win_size=win, size_average=True)


def bone_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """RMSE, PSNR (dB), SSIM and MS-SSIM of display-domain bone images ``(B, 1, H, W)`` (data range 1)."""
    from pytorch_msssim import ssim

    pred, target = pred.float(), target.float()
    mse = ((pred - target) ** 2).mean(dim=(1, 2, 3))
    psnr = (10 * torch.log10(1.0 / mse.clamp_min(1e-12))).mean()
    win = 11 if min(pred.shape[-2:]) > 11 else 3
    return {
        "rmse": mse.mean().sqrt(),
        "psnr": psnr,
        "ssim": ssim(pred, target, data_range=1.0, win_size=win, size_average=True),
        "ms_ssim": _ms_ssim(pred, target),
    }


class BoneUNetModule(MethodModule):
    """LightningModule of the bone U-Net (see module docstring)."""

    method = "bone_unet"
    card_summary = (
        "Bone U-Net of Gozes & Greenspan (ISBI 2019), trained on DRR pairs simulated from CT by `cxrdecomp simulate`. "
        "Input: a chest radiograph in the display domain [0, 1]; output: its bone image (display domain), "
        "soft tissue = input − bone. Trained on very few CTs: expect a domain gap on real radiographs."
    )

    def __init__(self, size: int = 512, base: int = 32, depth: int = 4, dilate_from: int = 2, lr: float = 1e-3,
                 bone_scale: float = BONE_SCALE, vgg_weights: str | None = None, perceptual_weight: float = 1.0,
                 dtype: str = "float16", display: str = "log"):
        super().__init__()
        self.save_hyperparameters()
        self.model_config = {"base": base, "depth": depth, "dilate_from": dilate_from}
        self.net = registry.build_model(self.method, **self.model_config)
        self.input_size = int(size)
        self.inference_defaults = {"bone_scale": float(bone_scale), "target": "bone/(bone_scale*std(x))", "display": display, "w": 1.0, "w_s": 1.0}
        self.lr = lr
        self.bone_scale = float(bone_scale)
        self.dtype_name = dtype
        self.perceptual = None
        self.perceptual_weight = perceptual_weight
        if vgg_weights:
            from cxrdecomp.losses import PerceptualLoss

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
        l1 = (out - bone_to_target(bone, x, self.bone_scale)).abs().mean()
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
        m = bone_metrics(pred, batch["bone"])
        n = batch["x"].shape[0]
        self.log("val/loss", loss, sync_dist=True, batch_size=n)
        for k, v in m.items():
            self.log(f"val/{k}", v, sync_dist=True, prog_bar=k in ("psnr",), batch_size=n)
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
    from cxrdecomp.models.unet import image_std

    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(ds), generator=g)[:n].tolist()
    vals = []
    for i in idx:
        it = ds[i]
        r = (it["bone"] / image_std(it["x"][None])[0]).abs().flatten()
        vals.append(torch.quantile(r[:: max(1, r.numel() // 65536)], 0.999))
    q = float(torch.stack(vals).max())
    return float(f"{max(q / target, 1e-3):.3g}")


def _loader(ds, batch_size, shuffle, num_workers):
    return torch.utils.data.DataLoader(
        ds, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers, drop_last=False,
        persistent_workers=num_workers > 0, pin_memory=torch.cuda.is_available(),
    )


def train_bone_unet(options: dict[str, Any]) -> Path:
    """Train the bone U-Net from ``options`` (keys of :data:`DEFAULTS` plus ``data`` and ``out``).

    Returns:
        The exported checkpoint folder ``OUT/model``.

    Raises:
        DataNotFoundError: no simulated samples in ``data``, missing VGG weights or real-pair folder.
    """
    from cxrdecomp.data.datasets import RealPairs, SimulatedPairs, split_names

    o = {**DEFAULTS, **{k: v for k, v in options.items() if v is not None}}
    torch.manual_seed(int(o["seed"]))
    data, out = Path(o["data"]), Path(o["out"])
    size = int(o["size"])
    train_names, val_names = split_names(data, o["val_fraction"], seed=int(o["seed"]))
    train_ds = SimulatedPairs(data, size=size, augment=True, names=train_names, display=o["display"])
    val_ds = SimulatedPairs(data, size=size, augment=False, names=val_names, display=o["display"])
    desc = f"{len(train_ds)} simulated pairs from {data} (validation: {len(val_ds)})"
    if o["real_pairs"]:
        root = Path(o["real_pairs"])
        real = RealPairs(root / "train" if (root / "train").is_dir() else root, size=size)
        train_ds = torch.utils.data.ConcatDataset([train_ds, real])
        desc += f" + {len(real)} real pairs from {root}"
    if str(o["bone_scale"]) == "auto":
        o["bone_scale"] = estimate_bone_scale(train_ds)
    module = BoneUNetModule(size=size, base=int(o["base"]), depth=int(o["depth"]), dilate_from=int(o["dilate_from"]),
                            lr=float(o["lr"]), bone_scale=float(o["bone_scale"]), vgg_weights=str(o["vgg_weights"]) if o["vgg_weights"] else None,
                            perceptual_weight=float(o["perceptual_weight"]), dtype=o["dtype"], display=o["display"])
    nw = int(o["num_workers"])
    train_loader = _loader(train_ds, int(o["batch_size"]), True, nw)
    return fit(
        module,
        train_loader,
        _loader(val_ds, int(o["batch_size"]), False, nw),
        out,
        data_description=desc,
        resume=bool(o["resume"]),
        max_epochs=int(o["epochs"]),
        max_steps=int(o["max_steps"]),
        accelerator=o["accelerator"],
        devices=o["devices"],
        num_nodes=int(o["num_nodes"]),
        strategy=o["strategy"],
        precision=o["precision"],
        progress=bool(o["progress"]),
        limit_val_batches=o["limit_val_batches"],
        log_every=max(1, min(50, len(train_loader))),
        max_minutes=float(o["max_minutes"]) if o["max_minutes"] else None,
    )
