"""Training data of the lung-structure method: the simulated views written by
:func:`cxrdecomp.simulate.lung_generate.simulate` (``cxrdecomp simulate-lung``), read back into memory."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from cxrdecomp.data.pairs import read_gray01
from cxrdecomp.errors import DataNotFoundError
from cxrdecomp.simulate.lung_generate import sample_complete

KEYS = ("input", "lung", "lung_mask", "nodule_mask")


class LungSimDataset(torch.utils.data.Dataset):
    """Simulated lung samples of a folder written by :func:`cxrdecomp.simulate.lung_generate.simulate`.

    Items: ``{"input", "lung", "lung_mask", "nodule_mask"}`` tensors ``(1, S, S)`` float32 in
    ``[0, 1]`` (``input`` = DRR after HE + CLAHE, display domain; ``lung`` = lung X-ray, display
    domain; the masks 0/1), and ``"name"``. Images are resized to ``size`` when given.

    Raises:
        DataNotFoundError: no complete sample in ``root``.
    """

    def __init__(self, root: str | os.PathLike, size: int | None = None):
        root = Path(root)
        names = sorted(p.stem for p in (root / "meta").glob("*.json")) if (root / "meta").is_dir() else []
        names = [nm for nm in names if sample_complete(root, nm)]
        if not names:
            raise DataNotFoundError(f"no simulated lung samples in {root}: write them with `cxrdecomp simulate-lung -o DATA` (DATA/train, DATA/val)")
        self.names = names
        self.data = {k: torch.from_numpy(np.stack([read_gray01(root / k / f"{nm}.png", size) for nm in names]))[:, None] for k in KEYS}
        for k in ("lung_mask", "nodule_mask"):
            self.data[k] = (self.data[k] > 0.5).float()

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> dict:
        return {**{k: v[i] for k, v in self.data.items()}, "name": self.names[i]}
