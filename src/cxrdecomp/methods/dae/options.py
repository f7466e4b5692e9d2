"""Training options of the DAE and its AE baselines (``cxrdecomp train dae``); standard library only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from cxrdecomp.train.options import TrainOptions, option

DEFAULT_MASK_THRESHOLD = 4.0 / 255.0
"""Bone-mask threshold on ``cxr − soft`` (display domain): separates the ribs and clavicles of BSE-JSRT
from the near-zero differences elsewhere (docs/dae.md, "Bone mask threshold")."""

VARIANTS = {
    # name: (method written to config.json, bone segmentation branch, MS-SSIM term) — the paper's Table 1
    "dae-msssim": ("dae", True, True),
    "dae": ("dae", True, False),
    "ae-msssim": ("ae", False, True),
    "ae": ("ae", False, False),
}

SIM_MODES = ("mix", "pretrain")


@dataclass
class Options(TrainOptions):
    """Adam (lr 1e-3, cosine-annealed to 1 %), batch 8, 512², loss MS-SSIM + λ_m·MSE + λ_s·BCE (Eq. 1–7).

    --data holds train/ and val/ folders of cxr/ + soft/ pairs (BSE-JSRT layout). --sim-data adds simulated
    pairs (cxr/ + soft/ images, `cxrdecomp simulate` output, or *.npz / *.pt files), mixed into the
    training set (--sim-mode mix) or used to pre-train for --sim-epochs epochs first (--sim-mode pretrain,
    run folder OUT/pretrain). The weights of the best validation BSR are exported to OUT/model.
    """

    data: Optional[Path] = option(None, "Folder with train/ and val/ pairs (cxr/ + soft/); default ../shared/data/bse-jsrt.")
    out: Path = option(Path("runs/dae"), "Run folder: last.ckpt (resume), logs/, metrics.json, model/.", flag="-o")
    epochs: int = option(100, "Training epochs.")
    size: int = option(512, "Model input size (square pixels, divisible by 4).")
    variant: str = option("dae-msssim", "dae-msssim | dae | ae-msssim | ae (the paper's Table 1 ablation).")
    lambda_mse: float = option(1.0, "λ_m, weight of the MSE term (Eq. 1).")
    lambda_seg: float = option(0.1, "λ_s, weight of the bone-mask BCE term (Eq. 1).")
    mask_threshold: float = option(DEFAULT_MASK_THRESHOLD, "Bone mask: (cxr − soft) > threshold, display domain.")
    base: int = option(16, "Channels of the first encoder layer (16 → 64 feature channels).")
    kernel: int = option(3, "Convolution kernel size.")
    residual: bool = option(True, "Predict the bone layer and subtract it (default); --no-residual: the soft tissue directly (paper).")
    norm: bool = option(False, "Batch normalisation after each convolution (not in the paper).")
    augment: bool = option(True, "Random affine augmentation of the training pairs (rotation, shift, shear, zoom, flip).")
    sim_data: Optional[Path] = option(None, "Folder of simulated pairs to mix in or pre-train on.")
    sim_mode: str = option("mix", "mix | pretrain (with --sim-data).")
    sim_epochs: int = option(20, "Pre-training epochs on --sim-data (sim-mode pretrain).")
    limit_pairs: int = option(0, "Use only the first N train/val pairs (smoke runs; 0: all).")
