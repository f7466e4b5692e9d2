"""Real radiograph / soft-tissue pairs stored as folders (the layout of ../shared/data/bse-jsrt).

``ROOT/cxr/NAME.png`` and ``ROOT/soft/NAME.png`` with the same file name form a pair; images are
read in the display domain ``[0, 1]`` (8- or 16-bit). The bone image of a pair is ``cxr − soft``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cxrdecomp.errors import DataNotFoundError

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


def default_bse_jsrt() -> Path:
    """Location of the BSE-JSRT pairs: ``$CXRDECOMP_BSE_JSRT`` or ``../shared/data/bse-jsrt``."""
    env = os.environ.get("CXRDECOMP_BSE_JSRT")
    if env:
        return Path(env)
    for base in (Path.cwd(), *Path.cwd().parents):
        p = base / "shared" / "data" / "bse-jsrt"
        if p.is_dir():
            return p
    return Path("../shared/data/bse-jsrt")


def list_pairs(root: str | os.PathLike, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[tuple[Path, Path]]:
    """Sorted ``(cxr_path, soft_path)`` pairs of ``root``: files of ``cxr/`` and ``soft/`` with the same name
    without suffix (hidden files ignored).

    Raises:
        DataNotFoundError: no ``cxr/`` or ``soft/`` folder, or no file names in common.
    """
    root = Path(root)
    cxr, soft = root / "cxr", root / "soft"
    if not cxr.is_dir() or not soft.is_dir():
        raise DataNotFoundError(f"{root} must hold cxr/ and soft/ folders with matching file names (the bse-jsrt layout)")

    def files(folder: Path) -> list[Path]:
        return [p for p in sorted(folder.iterdir()) if p.suffix.lower() in suffixes and not p.name.startswith(".")]

    soft_by_stem = {p.stem: p for p in files(soft)}
    pairs = [(p, soft_by_stem[p.stem]) for p in files(cxr) if p.stem in soft_by_stem]
    if not pairs:
        raise DataNotFoundError(f"no pairs in {root}: cxr/ and soft/ share no file names")
    return pairs


def read_gray01(path: str | os.PathLike, size: int | None = None) -> np.ndarray:
    """Read an 8/16-bit grey image as float32 ``(H, W)`` in ``[0, 1]``, optionally resized to ``size²``."""
    im = Image.open(path)
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float32)
        a = a / (65535.0 if a.max() > 255 else 255.0)
    else:
        a = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    if size is not None and a.shape != (size, size):
        a = np.asarray(Image.fromarray(a, mode="F").resize((size, size), Image.BILINEAR), dtype=np.float32)
    return a


class PairedImages(torch.utils.data.Dataset):
    """Pairs of a folder as tensors ``(1, S, S)``: ``{"cxr", "soft", "bone", "name"}``, display domain.

    Images are loaded once and held in memory (118 pairs at 512² ≈ 250 MB as float32).

    Args:
        root: folder with ``cxr/`` and ``soft/``.
        size: square size images are resized to.
        transform: optional callable on the dict (augmentation), applied per item.
    """

    def __init__(self, root: str | os.PathLike, size: int = 512, transform=None):
        self.pairs = list_pairs(root)
        self.size = size
        self.transform = transform
        self.cxr = torch.from_numpy(np.stack([read_gray01(c, size) for c, _ in self.pairs]))[:, None]
        self.soft = torch.from_numpy(np.stack([read_gray01(s, size) for _, s in self.pairs]))[:, None]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict:
        item = {"cxr": self.cxr[i], "soft": self.soft[i], "name": self.pairs[i][0].stem}
        if self.transform is not None:
            item = self.transform(item)
        item["bone"] = item["cxr"] - item["soft"]
        return item
