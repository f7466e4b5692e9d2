"""Simulated radiograph / soft-tissue pairs for the DAE (``--sim-data``; beyond the paper).

:func:`simulated_pairs` reads one of three folder layouts and returns items of the form of
:class:`cxrdecomp.data.pairs.PairedImages` — ``{"cxr", "soft", "bone", "name"}`` with ``(1, S, S)``
float32 tensors in the display domain, ``bone = cxr − soft`` — so they can be concatenated with the real
training pairs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cxrdecomp.errors import DataNotFoundError

INPUT_KEYS = ("cxr", "input", "drr", "radiograph", "image", "x")
"""Keys accepted for the radiograph in ``*.npz`` / ``*.pt`` files, in order of preference."""
SOFT_KEYS = ("soft", "soft_tissue", "target_soft", "soft_drr", "y")
"""Keys accepted for the soft-tissue image in ``*.npz`` / ``*.pt`` files."""


def simulated_pairs(root: str | os.PathLike, size: int = 512, augment: bool = True) -> torch.utils.data.Dataset:
    """Simulated pairs of a folder, checked in this order:

    * ``ROOT/cxr/*.png`` + ``ROOT/soft/*.png`` (the BSE-JSRT layout, display domain):
      :class:`cxrdecomp.data.pairs.PairedImages`;
    * ``ROOT/samples/*.npz`` written by ``cxrdecomp simulate`` (realistic samples, display domain):
      :class:`cxrdecomp.data.simulated.SimulatedPairs` (with ``augment``, its flips and zooms), see
      :class:`SimulateOutputPairs`;
    * ``ROOT/**/*.npz`` or ``ROOT/**/*.pt``, one pair per file: :class:`ArrayPairs`.

    Args:
        root: the folder.  size: square size ``S`` of the items.
        augment: apply :class:`~cxrdecomp.data.simulated.SimulatedPairs`' augmentations (``samples/`` only).

    Returns:
        A dataset of ``{"cxr", "soft", "bone", "name"}`` items, ``(1, S, S)`` float32, display domain.

    Raises:
        DataNotFoundError: the folder holds none of these.
    """
    from cxrdecomp.data.pairs import PairedImages

    root = Path(root)
    if (root / "cxr").is_dir() and (root / "soft").is_dir():
        return PairedImages(root, size=size)
    if (root / "samples").is_dir() and any((root / "samples").glob("*.npz")):
        return SimulateOutputPairs(root, size=size, augment=augment)
    return ArrayPairs(root, size=size)


class SimulateOutputPairs(torch.utils.data.Dataset):
    """``cxrdecomp simulate`` output as DAE items: :class:`cxrdecomp.data.simulated.SimulatedPairs`'
    ``x`` / ``soft`` become ``cxr`` / ``soft``, ``bone = cxr − soft``, ``name`` the sample's file stem.

    Raises:
        DataNotFoundError: no finished samples (``.npz`` with its ``.json``) in ``root/samples``.
    """

    def __init__(self, root: str | os.PathLike, size: int = 512, augment: bool = True):
        from cxrdecomp.data.simulated import SimulatedPairs

        self.pairs = SimulatedPairs(root, size=size, augment=augment)
        self.names = [p.stem for p in self.pairs.files]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict:
        d = self.pairs[i]
        cxr, soft = d["x"].float(), d["soft"].float()
        return {"cxr": cxr, "soft": soft, "bone": cxr - soft, "name": self.names[i]}


class ArrayPairs(torch.utils.data.Dataset):
    """Pairs stored one per ``*.npz`` / ``*.pt`` file (searched recursively), held in memory.

    Each file holds an input array under one of :data:`INPUT_KEYS` and a soft-tissue array under one of
    :data:`SOFT_KEYS`, ``(H, W)`` or ``(1, H, W)`` (a ``.pt`` file: a dict of tensors or arrays). Pairs
    outside ``[0, 1]`` (e.g. attenuation-domain line integrals, bone bright) are mapped to the display
    domain by one affine map per pair, ``v → (v − min x) / (max x − min x)`` applied to both, which keeps
    ``cxr − soft`` proportional to the bone layer. Resized to ``size²`` (area when shrinking, else bilinear).

    Raises:
        DataNotFoundError: no such files, a file without the keys, or an array that is not 2-D.
    """

    def __init__(self, root: str | os.PathLike, size: int = 512):
        root = Path(root)
        self.size = int(size)
        files = sorted([*root.rglob("*.npz"), *root.rglob("*.pt")]) if root.is_dir() else []
        if not files:
            raise DataNotFoundError(
                f"no simulated pairs in {root}: expected cxr/ + soft/ image folders, samples/*.npz from "
                f"`cxrdecomp simulate`, or *.npz / *.pt files with an input ({', '.join(INPUT_KEYS)}) "
                f"and a soft-tissue ({', '.join(SOFT_KEYS)}) array"
            )
        cxrs, softs = [], []
        for f in files:
            d = _read(f)
            x, s = _to_display(_pick(d, INPUT_KEYS, f), _pick(d, SOFT_KEYS, f))
            cxrs.append(self._resize(x))
            softs.append(self._resize(s))
        self.cxr, self.soft = torch.stack(cxrs), torch.stack(softs)
        self.names = [f.stem for f in files]

    def _resize(self, a: torch.Tensor) -> torch.Tensor:
        a = a[None, None]
        if a.shape[-2:] != (self.size, self.size):
            a = F.interpolate(a, size=(self.size, self.size), mode="area" if a.shape[-1] > self.size else "bilinear")
        return a[0]

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> dict:
        cxr, soft = self.cxr[i], self.soft[i]
        return {"cxr": cxr, "soft": soft, "bone": cxr - soft, "name": self.names[i]}


def _read(f: Path) -> dict:
    if f.suffix == ".npz":
        with np.load(f) as z:
            return {k: z[k] for k in z.files}
    d = torch.load(f, map_location="cpu", weights_only=True)
    if not isinstance(d, dict):
        raise DataNotFoundError(f"{f} does not hold a dict of arrays")
    return d


def _pick(d: dict, keys: tuple[str, ...], f: Path) -> torch.Tensor:
    for k in keys:
        if k in d:
            t = torch.as_tensor(np.asarray(d[k], dtype=np.float32)).squeeze()
            if t.ndim != 2:
                raise DataNotFoundError(f"{f}: array {k!r} has shape {tuple(t.shape)}, expected (H, W)")
            return t
    raise DataNotFoundError(f"{f} has none of the keys {keys}; it holds {sorted(d)}")


def _to_display(x: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.min() >= 0 and x.max() <= 1 and s.min() >= 0 and s.max() <= 1:
        return x, s
    lo, hi = x.min(), x.max()
    scale = (hi - lo).clamp_min(1e-8)
    return (x - lo) / scale, (s - lo) / scale
