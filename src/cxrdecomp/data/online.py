"""Online DRR rendering for training: fresh samples every step from CTs held in memory (GPU when available).

Each sample is one random view of one CT (XraySyn §3.1 pose sampling: azimuth and elevation uniform in
±18° by default), a random tube spectrum (kVp), quantum noise level and bone-density scale, rendered
through :mod:`cxrdecomp.simulate.ct2xray` from a single projector pass over a 5-channel material
volume (bone, soft tissue, lung densities, bone mask, lung-label mask).

Sample dict (all ``(1, S, S)`` float32, display domain ``[0, 1]`` unless noted; ``x = −ln I / scale`` with
``scale`` the noise-free image's maximum, so air is dark and bone bright):

* ``image``: the (noisy) DRR.
* ``soft_tissue``: the same view with bone replaced by soft tissue of equal volume (bone-suppressed target).
* ``bone``: ``clean_image − soft_tissue`` — so ``image ≈ soft_tissue + bone`` up to the quantum noise.
* ``lung``: the lung-parenchyma-only image (lung structures / vessels), same scale.
* ``lung_mask``, ``bone_mask``: ``{0, 1}`` projections of the lung labels and bone (2-D masks).
* ``des_soft``, ``des_bone`` (``des=True``): virtual dual-energy subtraction images (60 kVp / sample kVp),
  same scale — physically consistent DES targets.
* ``meta``: ``(5,)`` azimuth°, elevation°, kVp, photons per pixel (0 = noise-free), bone scale.
"""

from __future__ import annotations

import math
import random

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from cxrdecomp.data.loaders import make_loader
from cxrdecomp.errors import InputError
from cxrdecomp.physics.materials import LUNG_KEYS, label_ids, material_volume
from cxrdecomp.projector.conebeam import PreparedVolume, forward_project
from cxrdecomp.projector.geometry import Detector, Pose
from cxrdecomp.simulate.ct2xray import (
    SOFT_DENSITY,
    Spectrum,
    add_poisson_noise,
    dual_energy,
    log_image,
    polyenergetic_intensity,
)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def prepare_ct(ct, device=None, downsample: int = 1) -> tuple[PreparedVolume, tuple[float, float, float]]:
    """Material volume of a :class:`~cxrdecomp.io.ct.CTVolume` on ``device``, compacted for AP-ish views.

    ``downsample`` averages ``f×f×1`` voxels in X and Y (densities are additive, so line integrals are kept;
    4× fewer samples for ``f = 2``).
    """
    device = torch.device(device) if device is not None else default_device()
    hu = torch.from_numpy(ct.hu).to(device)
    vol = material_volume(hu, ct.labels, ct.label_names, device=device)
    lids = label_ids(ct.label_names, LUNG_KEYS) if ct.labels is not None else []
    if lids:
        lab = torch.from_numpy(ct.labels).to(device)
        lm = torch.isin(lab, torch.tensor(lids, device=device, dtype=lab.dtype)).float()
    else:
        lm = torch.zeros_like(hu)
    vol = torch.cat([vol, lm[None]])
    del hu
    sp = tuple(float(s) for s in ct.spacing)
    if downsample > 1:
        vol = F.avg_pool3d(vol[None], (downsample, downsample, 1), ceil_mode=True)[0]
        sp = (sp[0] * downsample, sp[1] * downsample, sp[2])
    return PreparedVolume(vol, sp).compact((1,)), sp


class OnlineDRRDataset(Dataset):
    """Random-view DRR samples rendered on the fly (map-style; ``__getitems__`` renders a whole batch at once).

    Args:
        cts: list of :class:`~cxrdecomp.io.ct.CTVolume` (HU + optional labels).
        size: detector pixels per side (``S``).
        length: samples per epoch.
        max_azimuth, max_elevation: pose ranges in degrees (±).
        kvp: tube voltages to draw from (SpekPy spectra, cached).
        filtration_mm_al: tube filtration.
        photons: ``(low, high)`` photons per pixel, drawn log-uniformly; ``None`` = noise-free.
        bone_scale: ``(low, high)`` bone-density multiplier range.
        des: also render virtual dual-energy targets.
        sdd: source-to-detector distance in mm (chest PA: 1800).
        device: where CTs live and rendering runs (default CUDA when available).
        method: projector method (default ``"shearwarp"``).
        downsample: CT in-plane downsampling factor (speed).
        seed: ``None`` = fresh random samples every call; an int = sample ``i`` is always the same (validation).

    Raises:
        InputError: no CTs.
    """

    def __init__(
        self,
        cts,
        size: int = 256,
        length: int = 1000,
        max_azimuth: float = 18.0,
        max_elevation: float = 18.0,
        kvp=(100.0, 110.0, 120.0, 130.0),
        filtration_mm_al: float = 2.5,
        photons: tuple[float, float] | None = (2e4, 1e6),
        bone_scale: tuple[float, float] = (0.8, 1.2),
        des: bool = False,
        sdd: float = 1800.0,
        device=None,
        method: str = "shearwarp",
        downsample: int = 1,
        seed: int | None = None,
        bin_kev: float = 4.0,
    ) -> None:
        if not cts:
            raise InputError("OnlineDRRDataset needs at least one CT volume")
        self.device = torch.device(device) if device is not None else default_device()
        self.size, self.length, self.method = size, length, method
        self.max_az, self.max_el = max_azimuth, max_elevation
        self.kvp, self.photons, self.bone_scale, self.des, self.seed = tuple(kvp), photons, bone_scale, des, seed
        self.spectra = {k: Spectrum.tube(k, filtration_mm_al, bin_kev) for k in self.kvp}
        self.low = Spectrum.tube(60.0, filtration_mm_al, bin_kev) if des else None
        self.volumes, self.detectors = [], []
        for ct in cts:
            pv, sp = prepare_ct(ct, self.device, downsample)
            ext = [n * s for n, s in zip(pv.shape, sp)]
            sod = sdd - (ext[1] / 2 + 50.0)
            self.volumes.append(pv)
            self.detectors.append(Detector.covering(max(ext[0], ext[2]) * 1.02, size, sdd=sdd, sod=sod))

    def __len__(self) -> int:
        return self.length

    def _params(self, index: int):
        rng = random.Random(self.seed * 1_000_003 + index) if self.seed is not None else random
        az = rng.uniform(-self.max_az, self.max_az)
        el = rng.uniform(-self.max_el, self.max_el)
        kvp = rng.choice(self.kvp)
        ph = 0.0 if self.photons is None else math.exp(rng.uniform(math.log(self.photons[0]), math.log(self.photons[1])))
        bs = rng.uniform(*self.bone_scale)
        ct = rng.randrange(len(self.volumes))
        return ct, az, el, kvp, ph, bs, rng.randrange(2**31)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices) -> list[dict[str, torch.Tensor]]:
        params = [self._params(int(i)) for i in indices]
        out: list[dict[str, torch.Tensor] | None] = [None] * len(params)
        for c in sorted({p[0] for p in params}):
            sel = [k for k, p in enumerate(params) if p[0] == c]
            pose = Pose.from_angles([params[k][1] for k in sel], [params[k][2] for k in sel], device=self.device)
            with torch.no_grad():
                t = forward_project(self.volumes[c], pose, self.detectors[c], method=self.method)  # (b, 5, S, S)
                for j, k in enumerate(sel):
                    out[k] = self._sample(t[j : j + 1], params[k])
        return out  # type: ignore[return-value]

    def _sample(self, t: torch.Tensor, p) -> dict[str, torch.Tensor]:
        _, az, el, kvp, ph, bs, noise_seed = p
        spec = self.spectra[kvp]
        th = t[:, :3].double()
        th[:, 0] *= bs
        clean = log_image(polyenergetic_intensity(th, spec))
        if ph > 0:
            g = torch.Generator().manual_seed(noise_seed)
            noisy = log_image(add_poisson_noise(polyenergetic_intensity(th, spec), ph, generator=g))
        else:
            noisy = clean
        soft_t = th.clone()
        soft_t[:, 1] += t[:, 3].double() * SOFT_DENSITY
        soft_t[:, 0] = 0
        soft = log_image(polyenergetic_intensity(soft_t, spec))
        lung_t = torch.zeros_like(th)
        lung_t[:, 2] = th[:, 2]
        lung_only = log_image(polyenergetic_intensity(lung_t, spec))
        scale = clean.amax().clamp(min=1e-6)
        d = {
            "image": (noisy / scale).clamp(0, 1),
            "soft_tissue": (soft / scale).clamp(0, 1),
            "bone": ((clean - soft) / scale).clamp(0, 1),
            "lung": (lung_only / scale).clamp(0, 1),
            "lung_mask": (t[:, 4:5] > 0.05).double(),
            "bone_mask": (t[:, 3:4] > 0.05).double(),
        }
        if self.des:
            de = dual_energy(th, self.low, spec)
            d["des_soft"] = (de["soft_tissue"] / scale).clamp(0, 1)
            d["des_bone"] = (de["bone"] / scale).clamp(-1, 1)
        res = {k: v[0].float() for k, v in d.items()}
        res["meta"] = torch.tensor([az, el, float(kvp), ph, bs], dtype=torch.float32)
        return res


class OnlineDRRDataModule(L.LightningDataModule):
    """Lightning DataModule over :class:`OnlineDRRDataset` (fresh training views, fixed validation views).

    Args:
        cts: CT volumes (default: the example CT, fetched on first use).
        batch_size: samples per step.
        train_length, val_length: samples per epoch.
        **kwargs: passed to :class:`OnlineDRRDataset` (size, pose ranges, kvp, photons, des, device, ...).

    Rendering runs in the main process (``num_workers=0``): the CTs live on the rendering device.
    """

    def __init__(self, cts=None, batch_size: int = 8, train_length: int = 2000, val_length: int = 64, val_seed: int = 1234, **kwargs) -> None:
        super().__init__()
        self.cts, self.batch_size = cts, batch_size
        self.train_length, self.val_length, self.val_seed, self.kwargs = train_length, val_length, val_seed, kwargs
        self.train_set = self.val_set = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        cts = self.cts
        if cts is None:
            from cxrdecomp.io.ct import example_ct

            cts = [example_ct()]
        self.train_set = OnlineDRRDataset(cts, length=self.train_length, seed=None, **self.kwargs)
        val = OnlineDRRDataset.__new__(OnlineDRRDataset)
        val.__dict__.update(self.train_set.__dict__)  # share the CTs held in memory
        val.length, val.seed = self.val_length, self.val_seed
        self.val_set = val

    def train_dataloader(self) -> DataLoader:
        return make_loader(self.train_set, self.batch_size, shuffle=False, drop_last=False, pin_memory=False)

    def val_dataloader(self) -> DataLoader:
        return make_loader(self.val_set, self.batch_size, shuffle=False, pin_memory=False)
