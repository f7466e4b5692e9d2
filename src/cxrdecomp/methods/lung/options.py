"""Training options of the lung-structure method (``cxrdecomp train lung``), lung paper §2.2."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from cxrdecomp.train.options import OnlineOptions, option

STAGES = ("seg", "extract")


@dataclass
class Options(OnlineOptions):
    """Adam (lr 1e-4), batch 8; the stage picks the network: seg (weighted BCE) or extract (Eq. 5 loss).

    Train --stage seg first, then --stage extract --seg-checkpoint SEG/model: the exported extraction
    checkpoint then holds both trained networks (the usable lung model). Rerunning a finished extract
    run with --seg-checkpoint re-exports it with the segmentation network bundled.
    """

    data: Optional[Path] = option(None, "Folder written by `cxrdecomp simulate-lung` (train/ and val/); or --online.")
    out: Path = option(Path("runs/lung"), "Run folder: last.ckpt (resume), logs/, metrics.json, model/.", flag="-o")
    stage: str = option("seg", "seg: train the lung segmentation U-Net; extract: the lung-structure extraction U-Net.")
    seg_checkpoint: Optional[Path] = option(
        None, "Stage extract: lung checkpoint whose trained segmentation U-Net is copied into the exported model."
    )
    w_nodule: float = option(30.0, "Stage extract: nodule weight of the L1 loss (Eq. 5); 0 is the unweighted ablation.")
    base: int = option(32, "Filters of the first U-Net level (paper: 32).")
    depth: int = option(4, "Down-sampling steps of both U-Nets.")
    dilate_from: int = option(2, "First U-Net level with dilated (rate 2) convolutions.")
    noise_std: float = option(0.2, "Std of the Gaussian noise added to the segmentation input in training.")
    dtype: str = option("float16", "Exported weight dtype: float16 (half the size) or float32.")
    size: int = option(512, "Model input size (square pixels).")
    lr: float = option(1e-4, "Learning rate (Adam).")
    batch_size: int = option(8, "Images per optimiser step (per device).")
    epochs: int = option(10, "Training epochs.")
    num_workers: int = option(2, "Data-loader worker processes.")
