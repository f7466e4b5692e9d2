"""Training options of BS-Diff (``cxrdecomp train bsdiff``), Chen et al. ISBI 2024 §2.2–2.4, §3.2.

One run trains one stage: ``--stage 1`` the conditional DDPM, then ``--stage 2`` the enhancement
autoencoder on the stage-1 outputs (``--stage1`` names the stage-1 checkpoint). The model overrides
(``--channels`` ... ``--condition``) are the keyword arguments of
:func:`cxrdecomp.methods.bsdiff.network.build`, given as command-line friendly strings; unset ones keep
the builder's default (stage 1) or the stage-1 checkpoint's value (stage 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from cxrdecomp.train.options import TrainOptions, option


@dataclass
class Options(TrainOptions):
    """BS-Diff: stage 1 (conditional DDPM, AdamW, warm-up + cosine LR, EMA), then stage 2 (enhancer,
    MAE + MS-SSIM + VGG16 perceptual + adversarial loss, Eq. 5) on the stage-1 outputs. Rerun to resume."""

    data: Optional[Path] = option(None, "Folder with train/ and val/ (each cxr/ + soft/ pairs, bse-jsrt layout); default: bse-jsrt.")
    out: Path = option(Path("runs/bsdiff"), "Run folder: last.ckpt (resume), logs/, metrics.json, model/.", flag="-o")
    epochs: int = option(100, "Epochs (each = --repeats passes over the pairs).")
    batch_size: int = option(2, "Batch size (paper: 2).")
    lr: float = option(1e-4, "AdamW learning rate (warm-up 2 %, then cosine to 5 %).")
    size: int = option(256, "Square training size (paper: 256); divisible by the U-Net's downsampling factor.")
    num_workers: int = option(2, "Data-loader workers (CLAHE and augmentation run there).")

    stage: int = option(1, "1: conditional DDPM; 2: enhancement autoencoder on stage-1 outputs.")
    stage1: Optional[Path] = option(None, "Stage 2: stage-1 checkpoint folder (default OUT/../stage1/model).")
    d_lr: float = option(5e-4, "Stage 2: discriminator learning rate.")
    ema: float = option(0.995, "EMA decay of the trained network's weights (with warm-up); the EMA weights are exported.")
    repeats: int = option(1, "Passes over the training pairs per epoch.")
    val_steps: int = option(10, "Stage 1: DDIM steps of the validation samples (0: noise loss only).")
    gen_steps: int = option(20, "Stage 2: DDIM steps used to make the stage-1 outputs it learns from.")
    perceptual_weights: Optional[Path] = option(None, "Stage 2: torchvision VGG16 state dict (.pth); without it the perceptual term is off.")
    clahe: bool = option(True, "CLAHE on the conditioning radiograph (paper §3.2).")
    augment: bool = option(True, "Horizontal flip, rotation ±10° and gamma contrast augmentation.")
    limit_pairs: Optional[int] = option(None, "Use only the first N pairs of each split (smoke tests).")

    channels: Optional[str] = option(None, "Stage 1 U-Net widths per level, e.g. 32,48,64,96,128.")
    attention_levels: Optional[str] = option(None, "Self-attention per U-Net level as 0/1, e.g. 0,1,1,1,1.")
    enhancer_channels: Optional[str] = option(None, "Stage 2 autoencoder widths, e.g. 32,64,64.")
    norm_groups: Optional[int] = option(None, "GroupNorm groups (all widths must be multiples).")
    res_blocks: Optional[int] = option(None, "Stage 1 residual blocks per level (paper: 3).")
    prediction: Optional[str] = option(None, "Stage 1 network output: epsilon (paper), sample (x0) or v_prediction.")
    target: Optional[str] = option(None, "Stage 1 diffusion target: soft (paper) or residual (scale·(soft − radiograph); small budgets).")
    condition: Optional[str] = option(None, "Stage 1 condition: clahe (paper), raw or raw+clahe.")
