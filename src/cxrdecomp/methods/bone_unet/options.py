"""Training options of the bone U-Net (``cxrdecomp train bone_unet``), bone-extraction paper §2.3."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cxrdecomp.train.options import OnlineOptions, option


@dataclass
class Options(OnlineOptions):
    """Adam (lr 1e-3), batch 8, L1 on the normalised bone target, optional VGG16 perceptual loss (Eq. 5)."""

    data: Path | None = option(None, "A `cxrdecomp simulate` output folder (samples/*.npz).")
    target: str = option("volume", "--online: bone replacement of the soft-tissue target: volume, mass or air.")
    out: Path = option(Path("runs/bone"), "Run folder: last.ckpt (resume), logs/, metrics.json, model/.", flag="-o")
    base: int = option(32, "Filters of the first U-Net level (paper: 32).")
    depth: int = option(4, "Down-sampling steps of the U-Net.")
    dilate_from: int = option(2, "First U-Net level with dilated (rate 2) convolutions.")
    vgg_weights: Path | None = option(None, "torchvision VGG16 state dict (.pth) for the perceptual loss (Eq. 5); none: L1 only.")
    perceptual_weight: float = option(1.0, "Weight of the perceptual loss.")
    real_pairs: Path | None = option(None, "Also train on real pairs (BSE-JSRT layout: cxr/ and soft/, or its train/ folder); loss inside their lung fields only.")
    real_every: int = option(4, "--online with --real-pairs: one real pair in every N samples.")
    val_fraction: float = option(0.1, "Fraction of the simulated samples held out for validation.")
    bone_scale: str = option("auto", "Network target scale: bone / (bone_scale * std(x)); 'auto' estimates it from the data.")
    limit_val_batches: float = option(1.0, "Fraction (or number, if > 1) of validation batches per epoch.")
    dtype: str = option("float16", "Exported weight dtype: float16 (half the size) or float32.")
