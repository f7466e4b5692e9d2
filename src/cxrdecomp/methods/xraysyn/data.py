"""XraySyn training samples: the deformation bank of one CT in the XraySyn cube, rendered at two poses.

A sample (global index ``g`` of ``split``) is a pure function of (CT, seed, split, g):

* anatomy: the realistic simulation's deformation bank (:meth:`cxrdecomp.simulate.pipeline.Simulator.anatomy_params`:
  deformation, per-axis scaling, per-bone density, lung inflation; ``split="val"`` draws from the held-out
  bank of validation anatomies, never seen in training), resampled into the scene's cube
  (:class:`~cxrdecomp.methods.xraysyn.scene.SceneConfig`): HU ``V`` from the total density and the bone mask
  ``m`` (bone fraction of each voxel);
* poses: the input view ``T`` and the novel view ``T′``, azimuth and elevation uniform in ``±max_angle`` and
  ``±novel_angle`` degrees (paper §3.1: ±18° for the 3DPN);
* CT2Xray of both (:class:`~cxrdecomp.methods.xraysyn.scene.Scene`) and the backprojection of the input view.

Item (float32 CPU tensors): ``bp (1, N, N, N)`` (network input), ``hu``, ``mask`` ``(1, N, N, N)``, ``angles (2, 2)``
(rows T, T′), ``thickness (2, 2, h, h)`` (per view: bone, tissue g/cm²), ``log (2, 1, h, h)`` (per view ``−ln I``),
``index``; with ``high_res`` also ``thickness_hr (2, 2, H, H)`` and ``log_hr (2, 1, H, H)`` at the render size (the
2DRN's targets).
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from cxrdecomp.methods.xraysyn.scene import Scene, SceneConfig
from cxrdecomp.physics.materials import hu_from_density
from cxrdecomp.simulate import anatomy as A

SPLIT_CODES = {"train": 0, "val": 1}


def fit_cube(ct) -> float:
    """Side in mm of the scene cube for a CT: its largest extent (X, Y or Z)."""
    return float(max(n * s for n, s in zip(np.shape(ct.hu), ct.spacing)))


class DeformationBank:
    """One CT prepared for XraySyn: anatomy variations resampled into the scene's cube (module docstring).

    Args:
        ct: a :class:`~cxrdecomp.io.ct.CTVolume` (labels recommended: bone groups and lungs).
        config: the scene; its ``cube_mm`` should cover the CT (:func:`fit_cube`).
        n_val_anatomies: size of the held-out validation bank.
        anatomy_reuse: consecutive training samples sharing one anatomy.
        seed: base seed of the anatomy streams.
    """

    def __init__(self, ct, config: SceneConfig, n_val_anatomies: int = 8, anatomy_reuse: int = 4, seed: int = 0) -> None:
        from cxrdecomp.simulate.pipeline import Simulator

        self.config, self.seed = config, int(seed)
        voxel = config.cube_mm / config.volume_size
        self.av = A.prepare(ct, voxel_mm=voxel)
        # anatomy parameters and the held-out validation bank come from the realistic simulation's streams
        self.sim = Simulator(self.av, size=config.render_size, anatomy_reuse=anatomy_reuse, n_val_anatomies=n_val_anatomies)
        self._cache: OrderedDict = OrderedDict()
        n = config.volume_size
        ax = (torch.arange(n, dtype=torch.float32) - (n - 1) / 2) * voxel  # cube voxel centres, mm from the isocentre
        self._axes = ax

    def anatomy(self, index: int, split: str = "train") -> A.AnatomyParams:
        return self.sim.anatomy_params(index, self.seed, split)

    def volume(self, p: A.AnatomyParams | None) -> tuple[torch.Tensor, torch.Tensor]:
        """HU and bone mask ``(1, N, N, N)`` each of anatomy ``p`` (``None``: the undeformed CT, the constant prior)."""
        key = p.volume_key() if p is not None else None
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        vol = A.vary_volume(self.av, p) if p is not None else self.av.volume
        sp = self.av.spacing
        voxel = self.config.cube_mm / self.config.volume_size
        k = tuple(max(1, int(round(voxel / s))) for s in sp)
        src = torch.cat([vol[:4].sum(0, keepdim=True), vol[4:5]])[None]  # total density, bone fraction
        if any(f > 1 for f in k):  # average down to about the cube's voxel first (no aliasing in the resampling)
            src = F.avg_pool3d(src, k, ceil_mode=True)
            sp = tuple(s * f for s, f in zip(sp, k))
        half = [(n - 1) / 2 * s for n, s in zip(src.shape[2:], sp)]
        gx, gy, gz = torch.meshgrid(self._axes / half[0], self._axes / half[1], self._axes / half[2], indexing="ij")
        grid = torch.stack([gz, gy, gx], -1)[None]  # grid_sample order (W=Z, H=Y, D=X)
        out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]
        hu, mask = hu_from_density(out[0:1]), out[1:2].clamp(0, 1)
        self._cache[key] = (hu, mask)
        while len(self._cache) > 4:
            self._cache.popitem(last=False)
        return hu, mask


class XraySynSamples(Dataset):
    """Map-style dataset of XraySyn samples (module docstring).

    Args:
        bank: the :class:`DeformationBank`.
        length: samples per epoch (a global index ``g`` is drawn by :class:`cxrdecomp.data.online.EpochSampler`).
        split: ``"train"`` or ``"val"``.
        max_angle, novel_angle: pose ranges of T and T′ in degrees.
    """

    def __init__(self, bank: DeformationBank, length: int, split: str = "train", max_angle: float = 18.0, novel_angle: float = 18.0,
                 high_res: bool = False) -> None:
        self.bank, self.length, self.split, self.high_res = bank, int(length), split, bool(high_res)
        self.max_angle, self.novel_angle = float(max_angle), float(novel_angle)
        self.scene = Scene(bank.config)

    def __len__(self) -> int:
        return self.length

    def angles(self, g: int) -> torch.Tensor:
        """``(2, 2)`` poses (T, T′) × (azimuth, elevation) of sample ``g``, degrees."""
        rng = np.random.default_rng([self.bank.seed, SPLIT_CODES[self.split], 3, int(g)])
        r = rng.uniform(-1.0, 1.0, size=(2, 2))
        return torch.tensor(r * np.array([[self.max_angle], [self.novel_angle]]), dtype=torch.float32)

    @torch.no_grad()
    def __getitem__(self, g: int) -> dict[str, torch.Tensor]:
        g = int(g)
        hu, mask = self.bank.volume(self.bank.anatomy(g, self.split))
        ang = self.angles(g)
        r = self.scene.render(hu[None].expand(2, -1, -1, -1, -1), mask[None].expand(2, -1, -1, -1, -1), ang, high_res=self.high_res)
        bp = self.scene.backproject(r["log"][:1], ang[:1])[0]
        return {"bp": bp, "hu": hu, "mask": mask, "angles": ang, **r, "index": torch.tensor(g)}


class RealRadiographs(Dataset):
    """Real radiographs of a folder (PNG, or its ``cxr/``) as ``{"image": (1, S, S)}`` display domain, held in memory."""

    def __init__(self, files, size: int):
        from cxrdecomp.data.pairs import read_gray01

        self.files = list(files)
        self.images = torch.from_numpy(np.stack([read_gray01(f, size) for f in self.files]))[:, None]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i]}
