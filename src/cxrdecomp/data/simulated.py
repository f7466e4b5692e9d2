"""Training pairs for the bone U-Net: stored realistic samples (and optionally real BSE-JSRT pairs).

``cxrdecomp simulate`` (:mod:`cxrdecomp.simulate.generate`) stores samples that went through the whole
realistic pipeline — anatomy variation, cone beam, polyenergetic physics, detector, "for presentation"
processing — with the soft-tissue target processed by the same chain, so **the pair is already in the
display domain**: input ``x = image``, bone target ``bone = image − soft_tissue``. The trainer adds only the
bone-extraction paper's geometric augmentations (§2.3), on input and target alike so ``x = soft + bone`` holds:
horizontal flip (probability 1/2) and zoom about the centre by up to ±30 %. Intensity variation (tone curve,
contrast equalisation, noise) is part of the simulation itself.

Items are dicts of ``(1, S, S)`` float32 tensors: ``"x"`` (input), ``"bone"`` (target), ``"soft"`` (= x − bone)
and ``"field"``, where the target holds (all ones for simulated samples, the lung fields for BSE-JSRT pairs).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cxrdecomp.data.augment import zoom
from cxrdecomp.errors import DataNotFoundError

PAPER_AUG = {"flip": 0.5, "scale": 0.3, "noise": 0.02}
"""Augmentation strengths: flip probability, max |zoom − 1| (paper §2.3), and for real pairs the max σ of
additive noise on the input."""


class SimulatedPairs(torch.utils.data.Dataset):
    """Samples stored by ``cxrdecomp simulate`` (folder with ``samples/*.npz``).

    Args:
        root: the simulate output folder.
        size: training size S (arrays are area-resampled if stored at another size; linear, so
            x = soft + bone survives).
        augment: flip and zoom (training) or not (validation).
        aug: augmentation strengths (default :data:`PAPER_AUG`).
        names: restrict to these sample names (for train/val splits).

    Raises:
        DataNotFoundError: no finished samples in ``root``.
    """

    def __init__(self, root: str | os.PathLike, size: int = 512, augment: bool = True, aug: dict | None = None,
                 names: list[str] | None = None):
        from cxrdecomp.simulate.generate import SAMPLES, require_samples

        self.root = Path(root)
        stems = require_samples(self.root)
        if names is not None:
            keep = set(names)
            stems = [n for n in stems if n in keep]
        if not stems:
            raise DataNotFoundError(f"none of the requested samples is finished in {self.root}/{SAMPLES}")
        self.files = [self.root / SAMPLES / f"{n}.npz" for n in stems]
        self.size = int(size)
        self.augment = augment
        self.aug = {**PAPER_AUG, **(aug or {})}

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        from cxrdecomp.simulate.generate import load_sample

        d = load_sample(self.files[i])
        arr = torch.from_numpy(np.stack([d["image"], d["soft_tissue"]]))
        if arr.shape[-1] != self.size or arr.shape[-2] != self.size:
            arr = F.interpolate(arr[None], size=(self.size, self.size), mode="area")[0]
        if self.augment:
            g = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,)).item()))
            if float(torch.rand(1, generator=g)) < self.aug["flip"]:
                arr = arr.flip(-1)
            if self.aug["scale"]:
                arr = zoom(arr, 1 + self.aug["scale"] * (2 * float(torch.rand(1, generator=g)) - 1))
        x, soft = arr[0:1], arr[1:2]
        return {"x": x, "bone": x - soft, "soft": soft, "field": torch.ones_like(x)}


class RealPairs(torch.utils.data.Dataset):
    """Real radiograph / soft-tissue pairs (BSE-JSRT layout, :class:`cxrdecomp.data.pairs.PairedImages`)
    as items of the same form as :class:`SimulatedPairs` (``x``, ``bone = cxr − soft``, ``soft``) plus ``field``:
    the lung fields (:func:`cxrdecomp.data.pairs.edited_field`), where BSE-JSRT removed the ribs. Outside them
    it kept every bone, so a trainer that learns all-bone removal restricts its loss on these pairs to ``field``.

    Augmentation: horizontal flip and zoom on all; noise on the input. :meth:`item` draws them from a given
    generator (reproducible mixing, :class:`cxrdecomp.data.online.MixedSamples`).
    """

    def __init__(self, root: str | os.PathLike, size: int = 512, augment: bool = True, aug: dict | None = None):
        from cxrdecomp.data.pairs import PairedImages, edited_field

        self.pairs = PairedImages(root, size=size)
        self.field = torch.from_numpy(np.stack([edited_field(c[0].numpy(), s[0].numpy())
                                                for c, s in zip(self.pairs.cxr, self.pairs.soft)])).float()[:, None]
        self.augment = augment
        self.aug = {**PAPER_AUG, **(aug or {})}

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict:
        return self.item(i)

    def item(self, i: int, generator: torch.Generator | None = None) -> dict:
        """Pair ``i`` (augmented when ``augment``), random draws from ``generator`` (default: the global one)."""
        x, soft, field = self.pairs.cxr[i], self.pairs.soft[i], self.field[i]
        if self.augment:
            a = self.aug
            if float(torch.rand((), generator=generator)) < a["flip"]:
                x, soft, field = x.flip(-1), soft.flip(-1), field.flip(-1)
            if a["scale"]:
                f = 1 + a["scale"] * (2 * float(torch.rand((), generator=generator)) - 1)
                x, soft, field = zoom(x, f), zoom(soft, f), (zoom(field, f) > 0.5).float()
        bone = x - soft
        if self.augment and self.aug["noise"]:
            s = float(torch.rand((), generator=generator)) * self.aug["noise"]
            x = x + s * torch.randn(x.shape, generator=generator)
        return {"x": x.clamp(0, 1), "bone": bone, "soft": soft, "field": field}


def split_names(root: str | os.PathLike, val_fraction: float = 0.1, seed: int = 0) -> tuple[list[str], list[str]]:
    """Deterministic train/validation split of a simulate folder's sample names.

    Prefer a separate folder of held-out anatomies (``cxrdecomp simulate --split val``) for validation: samples of
    one folder share anatomies (``anatomy_reuse``), so this split holds out views, not anatomies.
    """
    from cxrdecomp.simulate.generate import require_samples

    names = require_samples(root)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(names))
    n_val = max(1, int(round(val_fraction * len(names)))) if len(names) > 1 else 0
    val = sorted(names[i] for i in perm[:n_val])
    train = sorted(names[i] for i in perm[n_val:]) or val
    return train, val
