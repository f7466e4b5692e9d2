"""Training pairs for the bone U-Net: simulated DRR pairs (and optionally real BSE-JSRT pairs).

**The training pair is defined in the display domain** so that, at inference on a real radiograph
``x ∈ [0, 1]``, the network returns a display-domain bone image with ``x ≈ soft + bone``:

1. From the stored line integrals ``L = L_bone + L_soft`` (attenuation domain, see
   :mod:`cxrdecomp.simulate.generate`) take a per-image window ``lo, hi`` = quantiles (0.5 %, 99.5 %,
   jittered) of ``L`` and map linearly: ``d = (L − lo)/(hi − lo)``, ``s = (L_soft − lo)/(hi − lo)``
   (:func:`cxrdecomp.simulate.render.to_display`). Real CR/DX images are log-transformed detector
   signals (∝ L) shown through a tone curve, so this "log" display is the closest DRR analogue. The
   paper's ``exp(β µ_av)`` rescaled to [0, 1] is the same image to < 0.4 % (see
   :mod:`cxrdecomp.simulate.render`); ``display="paper"`` uses it literally.
2. A random monotone tone curve ``f(t) = clip(t, 0, 1)^γ`` (γ ∈ [1/gamma, gamma]) imitates the LUT of
   processed radiographs; input ``x = f(d)``, soft-tissue image ``f(s)``, **bone target
   ``b = f(d) − f(s)``** — "the same processing applied to the radiograph without bone".
3. Processing of real radiographs: dynamic-range compression ``x − c (blur(x) − mean)``
   (:func:`compress_range`, linear, applied to input and target alike).
4. The paper's augmentations (§2.3): horizontal flip and scaling ±30 % (zoom about the centre) act on
   input and target alike; sharpening (unsharp mask, α = 0.5) is linear and applied to both, so
   ``x ≈ soft + bone`` still holds; additive Gaussian noise and a bias ±20 % act on the input only
   (the target stays the clean bone image: the network learns to ignore them; since the network input
   is normalised to zero mean and unit variance, the bias matters only through the clamp to [0, 1]).

Items are dicts of ``(1, S, S)`` float32 tensors: ``"x"`` (input, display domain), ``"bone"``
(target, display domain) and ``"soft"`` (= x − bone before noise/bias).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cxrdecomp.data.augment import compress_range, sharpen, zoom
from cxrdecomp.errors import DataNotFoundError

PAPER_AUG = {"flip": 0.5, "noise": 0.02, "bias": 0.2, "scale": 0.3, "sharpen": 0.5, "gamma": 1.6, "window_jitter": 0.01, "drc": 0.6}
"""Default augmentation strengths: flip probability, max noise σ, max |bias|, max |zoom−1|,
sharpening α (applied with probability 1/2), max tone-curve γ, quantile jitter of the window, max
dynamic-range compression ``c`` (see :func:`compress_range`). ``gamma``, ``window_jitter`` and ``drc``
are cxrdecomp's additions to the paper's list, to imitate the processing of real CR/DX images."""


def display_pair(total: torch.Tensor, soft: torch.Tensor, q_lo: float = 0.005, q_hi: float = 0.995, gamma: float = 1.0,
                 display: str = "log", ray_length_cm: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Attenuation-domain ``(total, soft)`` ``(1, H, W)`` → display-domain ``(x, bone)`` (see module docstring).

    ``display="log"``: linear window of the line integrals; ``"paper"``: the paper's
    ``exp(β L/ℓ)`` (Eq. 2–3) windowed per image (``ray_length_cm`` = ℓ).
    """
    from cxrdecomp.simulate.render import display_window, drr_paper, to_display

    if display == "paper":
        total, soft = drr_paper(total / ray_length_cm), drr_paper(soft / ray_length_cm)
    elif display != "log":
        raise ValueError(f"display must be 'log' or 'paper', not {display!r}")
    lo, hi = display_window(total[None], q_lo, q_hi)
    d = to_display(total[None], lo, hi)[0]
    s = to_display(soft[None], lo, hi)[0]
    if gamma != 1.0:
        d, s = d.clamp(0, 1) ** gamma, s.clamp(0, 1) ** gamma
    return d, d - s


class SimulatedPairs(torch.utils.data.Dataset):
    """Pairs simulated by ``cxrdecomp simulate`` (folder with ``samples/*.npy``).

    Args:
        root: the simulate output folder.
        size: training size S (arrays are area-resampled if stored at another size; linear, so
            bone + soft = DRR survives).
        augment: apply the augmentations (training) or not (validation: fixed window, no tone curve).
        aug: augmentation strengths (default :data:`PAPER_AUG`).
        names: restrict to these sample names (for train/val splits).
        display: ``"log"`` (default) or ``"paper"`` (see :func:`display_pair`).
        seed: base seed of the per-item random generator (varied with the epoch by the worker's torch seed).

    Raises:
        DataNotFoundError: no finished samples in ``root``.
    """

    def __init__(self, root: str | os.PathLike, size: int = 512, augment: bool = True, aug: dict | None = None,
                 names: list[str] | None = None, display: str = "log"):
        self.root = Path(root)
        files = sorted(p for p in (self.root / "samples").glob("*.npy") if p.with_suffix(".json").is_file()) if (self.root / "samples").is_dir() else []
        if names is not None:
            keep = set(names)
            files = [p for p in files if p.stem in keep]
        if not files:
            raise DataNotFoundError(f"no simulated samples in {self.root}/samples; run `cxrdecomp simulate CT -o {self.root}` first")
        self.files = files
        self.size = int(size)
        self.augment = augment
        self.aug = {**PAPER_AUG, **(aug or {})}
        self.display = display

    def __len__(self) -> int:
        return len(self.files)

    def _load(self, i: int) -> tuple[torch.Tensor, float]:
        arr = torch.from_numpy(np.load(self.files[i], mmap_mode="r")[[0, 2]].copy())  # total, soft
        if arr.shape[-1] != self.size or arr.shape[-2] != self.size:
            arr = F.interpolate(arr[None], size=(self.size, self.size), mode="area")[0]
        ell = 1.0
        if self.display == "paper":
            ell = float(json.loads(self.files[i].with_suffix(".json").read_text())["ray_length_cm"])
        return arr, ell

    def __getitem__(self, i: int) -> dict:
        arr, ell = self._load(i)
        a = self.aug
        g = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,)).item()) if self.augment else i)
        U = lambda lo, hi: float(lo + (hi - lo) * torch.rand(1, generator=g))  # noqa: E731
        if not self.augment:
            x, bone = display_pair(arr[0:1], arr[1:2], display=self.display, ray_length_cm=ell)
            return {"x": x, "bone": bone, "soft": x - bone}
        if U(0, 1) < a["flip"]:
            arr = arr.flip(-1)
        if a["scale"]:
            arr = zoom(arr, U(1 - a["scale"], 1 + a["scale"]))
        j = a["window_jitter"]
        gam = float(np.exp(U(-np.log(a["gamma"]), np.log(a["gamma"])))) if a["gamma"] and a["gamma"] > 1 else 1.0
        x, bone = display_pair(arr[0:1], arr[1:2], q_lo=0.005 + U(0, j), q_hi=0.995 - U(0, j), gamma=gam, display=self.display, ray_length_cm=ell)
        if a.get("drc"):
            c = U(0, a["drc"])
            x, bone = compress_range(x, c), compress_range(bone, c)
        if a["sharpen"] and U(0, 1) < 0.5:
            sig = 2.0 * x.shape[-1] / 512
            x, bone = sharpen(x, a["sharpen"], sig), sharpen(bone, a["sharpen"], sig)
        soft = x - bone
        if a["bias"]:
            x = x + U(-a["bias"], a["bias"])
        if a["noise"]:
            x = x + U(0, a["noise"]) * torch.randn(x.shape, generator=g)
        return {"x": x.clamp(0, 1), "bone": bone, "soft": soft}


class RealPairs(torch.utils.data.Dataset):
    """Real radiograph / soft-tissue pairs (BSE-JSRT layout, :class:`cxrdecomp.data.pairs.PairedImages`)
    as items of the same form as :class:`SimulatedPairs` (``x``, ``bone = cxr − soft``, ``soft``).

    Augmentation: horizontal flip and zoom on both; noise on the input. Note BSE-JSRT removes ribs only
    inside the lung fields (clavicles stay), a different target than the simulated bone image.
    """

    def __init__(self, root: str | os.PathLike, size: int = 512, augment: bool = True, aug: dict | None = None):
        from cxrdecomp.data.pairs import PairedImages

        self.pairs = PairedImages(root, size=size)
        self.augment = augment
        self.aug = {**PAPER_AUG, **(aug or {})}

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict:
        it = self.pairs[i]
        x, soft = it["cxr"], it["soft"]
        if self.augment:
            a = self.aug
            if torch.rand(1) < a["flip"]:
                x, soft = x.flip(-1), soft.flip(-1)
            if a["scale"]:
                f = 1 + a["scale"] * (2 * float(torch.rand(1)) - 1)
                x, soft = zoom(x, f), zoom(soft, f)
        bone = x - soft
        if self.augment and self.aug["noise"]:
            x = x + float(torch.rand(1)) * self.aug["noise"] * torch.randn_like(x)
        return {"x": x.clamp(0, 1), "bone": bone, "soft": soft}


def split_names(root: str | os.PathLike, val_fraction: float = 0.1, seed: int = 0) -> tuple[list[str], list[str]]:
    """Deterministic train/validation split of a simulate folder's sample names."""
    names = sorted(p.stem for p in (Path(root) / "samples").glob("*.npy") if p.with_suffix(".json").is_file())
    if not names:
        raise DataNotFoundError(f"no simulated samples in {root}/samples; run `cxrdecomp simulate` first")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(names))
    n_val = max(1, int(round(val_fraction * len(names)))) if len(names) > 1 else 0
    val = sorted(names[i] for i in perm[:n_val])
    train = sorted(names[i] for i in perm[n_val:]) or val
    return train, val
