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


def shared_data(name: str, env: str | None = None) -> Path:
    """Location of a development data set: ``$ENV`` when set, else the first ``shared/data/NAME`` found in the
    working folder or a folder above it, else ``../shared/data/NAME``."""
    if env and os.environ.get(env):
        return Path(os.environ[env])
    for base in (Path.cwd(), *Path.cwd().parents):
        p = base / "shared" / "data" / name
        if p.is_dir():
            return p
    return Path("../shared/data") / name


def default_bse_jsrt() -> Path:
    """Location of the BSE-JSRT pairs: ``$CXRDECOMP_BSE_JSRT`` or ``shared/data/bse-jsrt`` (:func:`shared_data`)."""
    return shared_data("bse-jsrt", "CXRDECOMP_BSE_JSRT")


def default_des_dev() -> Path:
    """Location of the real dual-energy pairs: ``$CXRDECOMP_DES_DEV`` or ``shared/data/des-dev`` (:func:`shared_data`)."""
    return shared_data("des-dev", "CXRDECOMP_DES_DEV")


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


def edited_field(cxr: np.ndarray, soft: np.ndarray, *, sigma_frac: float = 1 / 256, level: float = 0.5 / 255,
                 closing_frac: float = 1 / 64) -> np.ndarray:
    """The lung fields of a BSE-JSRT pair, as the region its soft-tissue image was edited in.

    BSE-JSRT (Juhász et al. 2010) removed the ribs only inside the lung fields and copied every other pixel
    unchanged, so the fields are where ``soft`` differs from ``cxr``: ``|cxr − soft|`` smoothed by a Gaussian of
    σ = ``sigma_frac``·size, above ``level``, closed (radius ``closing_frac``·size), holes filled, and the two
    largest regions kept. Used as the loss mask of BSE-JSRT pairs in training and for the lung-field metrics
    (``bsr_lung``) of ``evaluate --masks edited``.

    Args:
        cxr, soft: ``(H, W)`` display domain ``[0, 1]``.

    Returns:
        bool ``(H, W)``; all False for a pair that differs nowhere.

    Raises:
        ValueError: arrays of different shapes.
    """
    from scipy import ndimage as ndi

    cxr, soft = np.asarray(cxr, dtype=np.float32), np.asarray(soft, dtype=np.float32)
    if cxr.shape != soft.shape or cxr.ndim != 2:
        raise ValueError(f"cxr and soft must be 2-D arrays of one shape, got {cxr.shape} and {soft.shape}")
    n = max(cxr.shape)
    g = ndi.gaussian_filter(np.abs(cxr - soft), max(0.5, sigma_frac * n))
    m = g > level
    if not m.any():
        return m
    r = max(1, round(closing_frac * n))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    m = ndi.binary_closing(np.pad(m, r), structure=xx**2 + yy**2 <= r * r)[r:-r, r:-r]
    m = ndi.binary_fill_holes(m)
    lab, k = ndi.label(m)
    if k > 2:
        sizes = ndi.sum(m, lab, range(1, k + 1))
        m = np.isin(lab, np.argsort(sizes)[::-1][:2] + 1)
    return m


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
