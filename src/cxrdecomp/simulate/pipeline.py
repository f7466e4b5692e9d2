"""The realistic CT → radiograph simulation: one pipeline, stage by stage, every stage randomised.

    anatomy variation → geometry → physics → detector → processing → targets

One :class:`Simulator` holds a prepared CT (:func:`cxrdecomp.simulate.anatomy.prepare`) and renders a
:class:`SampleParams` into a radiograph and all its targets. The same pipeline serves the offline
``cxrdecomp simulate`` (:mod:`cxrdecomp.simulate.generate`), online rendering inside training
(:mod:`cxrdecomp.data.online`) and single DRRs of a user's CT (``cxrdecomp drr``, fixed parameters).

Stages (ranges: :class:`SimulationRanges`; each documented in docs/simulation.md):

1. **Anatomy** (:mod:`cxrdecomp.simulate.anatomy`): deformation, per-axis scaling, per-structure bone
   density, lung inflation (3-D, cached per anatomy), fat layer, breast shadows, nodules (2-D).
2. **Geometry**: cone beam through the project's projector (:func:`cxrdecomp.projector.conebeam.forward_project`,
   one traversal for all material channels), PA or AP (AP: source anterior; the image is mirrored back to the
   radiological display), source–detector distance 1000–1800 mm, the detector ``air_gap_mm`` behind the body
   surface (magnification), patient rotation and tilt, shift, field of view and collimation.
3. **Physics**: polyenergetic Beer–Lambert per material (bone, soft tissue, lung, adipose; xraylib µ/ρ), SpekPy
   tube spectrum of ``kvp`` with ``filtration_mm_al`` (or a single line ``energy_kev``).
4. **Detector** (:mod:`cxrdecomp.simulate.detector`): scatter (convolution model at a scatter-to-primary
   ratio, optional grid), blur (MTF), quantum and electronic noise at a dose level; ``−ln`` (log).
5. **Processing** (:mod:`cxrdecomp.simulate.processing`): a CR/DX "for presentation" chain fitted on the
   radiograph and applied unchanged to its bone-free rendering.
6. **Targets**, for every sample (``(1, H, W)`` float32):

   * ``log``: the radiograph after the detector, attenuation domain ``−ln I`` (before processing).
   * ``image``: the radiograph, display domain ``[0, 1]`` (bone bright).
   * ``soft_tissue``: the same chain applied to the same view rendered **with bone replaced by soft tissue**
     (``target="volume"``, default: soft tissue of the bone's volume, ``t_soft += 1.03 g/cm³ × bone path``, as
     XraySyn's reverse CT2Xray; ``"mass"``: of the bone's mass, ``t_soft += t_bone``; ``"air"``: bone removed,
     the bone-extraction paper's −1024 HU). It carries the same noise realisation as the input (the noise
     of the input is added to its log image), so the bone image is free of quantum noise.
   * ``bone = image − soft_tissue`` in the display domain: ``soft_tissue = image − bone`` holds exactly.
   * ``lung``: the lung X-ray (DRR of the lung parenchyma and its nodules only; lung-structure paper Eq. 4), noise-free,
     on the image's linear window scale ``L_lung / (hi − lo)``.
   * ``lung_mask``, ``bone_mask``, ``nodule_mask``: 2-D masks ``{0, 1}`` (≥ 5 mm of lung, ≥ 0.5 mm of bone
     along the ray; the nodules' discs).
   * ``t_bone``, ``t_tissue``: mass thicknesses in g/cm² (XraySyn's t_bone and t_tissue = soft + lung + fat).
   * ``field``: the exposed (non-collimated) area.
   * ``des_soft``, ``des_bone`` (``des=True``): virtual dual-energy subtraction images (60/120 kVp,
     :func:`cxrdecomp.simulate.ct2xray.dual_energy`) on the linear window of the 120 kVp log image
     (``des_soft + des_bone`` is that image in the display domain).

Reproducible: :meth:`Simulator.sample` draws every parameter from ``numpy.random.default_rng([seed, split,
stream, index])``; training anatomies (``split="train"``) and the held-out bank of validation anatomies
(``split="val"``, ``n_val_anatomies`` of them) come from disjoint streams, so training never draws a
validation deformation.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from cxrdecomp.errors import ConfigError, InputError
from cxrdecomp.projector.conebeam import PreparedVolume, forward_project
from cxrdecomp.projector.geometry import Detector, Pose
from cxrdecomp.simulate import anatomy as A
from cxrdecomp.simulate.ct2xray import (
    SOFT_DENSITY,
    Spectrum,
    dual_energy,
    log_image,
    polyenergetic_intensity,
)
from cxrdecomp.simulate.detector import add_noise, add_scatter, gaussian_blur
from cxrdecomp.simulate.processing import (
    ProcessingParams,
    ProcessingRanges,
    apply_processing,
    draw_processing,
)
from cxrdecomp.simulate.render import display_window

TARGETS = ("volume", "mass", "air")
SPLITS = {"train": 0, "val": 1}
OUTPUTS = ("log", "image", "soft_tissue", "bone", "lung", "lung_mask", "bone_mask", "nodule_mask", "t_bone", "t_tissue", "field")
DES_OUTPUTS = ("des_soft", "des_bone")


@dataclass(frozen=True)
class GeometryParams:
    """Acquisition geometry of one view.

    Attributes:
        view: ``"PA"`` (source posterior, the standard chest view) or ``"AP"`` (source anterior: bedside).
        sdd_mm: source-to-detector distance (mm).
        air_gap_mm: detector distance behind the body surface (mm).
        azimuth, tilt, roll: patient rotation about the long axis, tilt about the left–right axis, in-plane
            rotation (degrees).
        shift_mm: ``(left–right, cranio-caudal)`` offset of the field centre from the volume centre (mm).
        fov: field of view at the isocentre as a fraction of the CT's larger X/Z extent.
        collimation: fractions of the image covered by the collimator blades ``(top, bottom, left, right)``.
    """

    view: str = "PA"
    sdd_mm: float = 1800.0
    air_gap_mm: float = 20.0
    azimuth: float = 0.0
    tilt: float = 0.0
    roll: float = 0.0
    shift_mm: tuple[float, float] = (0.0, 0.0)
    fov: float = 1.0
    collimation: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)


@dataclass(frozen=True)
class PhysicsParams:
    """Beam and detector physics of one exposure (see :mod:`cxrdecomp.simulate.detector`).

    Attributes:
        kvp, filtration_mm_al: tube voltage and total aluminium filtration of the SpekPy spectrum.
        energy_kev: > 0 for a single-energy (monochromatic) beam instead of the spectrum.
        spr, scatter_sigma_mm, grid: scatter-to-primary ratio, scatter kernel σ at the detector (mm), grid.
        mtf_sigma_px: detector blur σ in pixels.
        photons: photons per pixel of the unattenuated beam (0 = noise-free); electronic_sigma in photons.
        materials: materials rendered (subset of :data:`~cxrdecomp.simulate.anatomy.MATERIALS`); ``()`` = all.
    """

    kvp: float = 120.0
    filtration_mm_al: float = 2.5
    energy_kev: float = 0.0
    spr: float = 0.0
    scatter_sigma_mm: float = 60.0
    grid: bool = False
    mtf_sigma_px: float = 0.0
    photons: float = 0.0
    electronic_sigma: float = 0.0
    noise_seed: int = 0
    materials: tuple[str, ...] = ()


@dataclass(frozen=True)
class SampleParams:
    """Everything that defines one simulated sample (JSON round trip: :meth:`to_dict` / :meth:`from_dict`)."""

    anatomy: A.AnatomyParams = field(default_factory=A.AnatomyParams)
    geometry: GeometryParams = field(default_factory=GeometryParams)
    physics: PhysicsParams = field(default_factory=PhysicsParams)
    processing: ProcessingParams = field(default_factory=ProcessingParams)

    def to_dict(self) -> dict:
        return {"anatomy": self.anatomy.to_dict(), "geometry": asdict(self.geometry), "physics": asdict(self.physics),
                "processing": self.processing.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> SampleParams:
        g = dict(d["geometry"])
        g["shift_mm"], g["collimation"] = tuple(g["shift_mm"]), tuple(g["collimation"])
        ph = dict(d["physics"])
        ph["materials"] = tuple(ph.get("materials", ()))
        return cls(A.AnatomyParams.from_dict(d["anatomy"]), GeometryParams(**g), PhysicsParams(**ph),
                   ProcessingParams.from_dict(d["processing"]))


@dataclass(frozen=True)
class GeometryRanges:
    """Randomisation of the geometry (uniform unless noted)."""

    ap_p: float = 0.2
    sdd_mm: tuple[float, float] = (1000.0, 1800.0)
    air_gap_mm: tuple[float, float] = (10.0, 80.0)
    rotation_deg: float = 5.0
    tilt_deg: float = 5.0
    roll_deg: float = 3.0
    shift_mm: float = 15.0
    fov: tuple[float, float] = (0.85, 1.05)
    collimation_p: float = 0.3
    collimation: float = 0.08


@dataclass(frozen=True)
class PhysicsRanges:
    """Randomisation of the physics (uniform unless noted; kVp on a 10 kVp grid so spectra are cached)."""

    kvp: tuple[float, float] = (60.0, 150.0)
    filtration_mm_al: tuple[float, ...] = (1.5, 2.5, 3.5, 4.5)
    spr: tuple[float, float] = (0.3, 2.0)
    scatter_sigma_mm: tuple[float, float] = (30.0, 90.0)
    grid_p: float = 0.6
    mtf_sigma_px: tuple[float, float] = (0.0, 1.0)
    photons: tuple[float, float] = (1e4, 1e6)  # log-uniform; per detector pixel at the simulated size
    electronic_sigma: tuple[float, float] = (0.0, 5.0)


@dataclass(frozen=True)
class SimulationRanges:
    """All randomisation ranges of the pipeline (docs/simulation.md lists them)."""

    anatomy: A.AnatomyRanges = field(default_factory=A.AnatomyRanges)
    geometry: GeometryRanges = field(default_factory=GeometryRanges)
    physics: PhysicsRanges = field(default_factory=PhysicsRanges)
    processing: ProcessingRanges = field(default_factory=ProcessingRanges)


def draw_geometry(rng: np.random.Generator, r: GeometryRanges = GeometryRanges()) -> GeometryParams:
    u = lambda lo, hi: round(float(rng.uniform(lo, hi)), 4)
    coll = tuple(u(0, r.collimation) for _ in range(4)) if rng.random() < r.collimation_p else (0.0, 0.0, 0.0, 0.0)
    return GeometryParams(view="AP" if rng.random() < r.ap_p else "PA", sdd_mm=u(*r.sdd_mm), air_gap_mm=u(*r.air_gap_mm),
                          azimuth=u(-r.rotation_deg, r.rotation_deg), tilt=u(-r.tilt_deg, r.tilt_deg), roll=u(-r.roll_deg, r.roll_deg),
                          shift_mm=(u(-r.shift_mm, r.shift_mm), u(-r.shift_mm, r.shift_mm)), fov=u(*r.fov), collimation=coll)


def draw_physics(rng: np.random.Generator, r: PhysicsRanges = PhysicsRanges()) -> PhysicsParams:
    u = lambda lo, hi: round(float(rng.uniform(lo, hi)), 4)
    kvp = float(10 * round(rng.uniform(*r.kvp) / 10))
    ph = float(math.exp(rng.uniform(math.log(r.photons[0]), math.log(r.photons[1]))))
    return PhysicsParams(kvp=kvp, filtration_mm_al=float(rng.choice(r.filtration_mm_al)), spr=u(*r.spr),
                         scatter_sigma_mm=u(*r.scatter_sigma_mm), grid=bool(rng.random() < r.grid_p), mtf_sigma_px=u(*r.mtf_sigma_px),
                         photons=round(ph, 1), electronic_sigma=u(*r.electronic_sigma), noise_seed=int(rng.integers(2**31)))


def draw_sample(rng: np.random.Generator, base_anatomy: A.AnatomyParams, ranges: SimulationRanges = SimulationRanges(),
                geometry: GeometryParams | None = None) -> SampleParams:
    """One sample's parameters: the per-view habitus on top of ``base_anatomy``, then geometry (unless given),
    physics and processing."""
    g = draw_geometry(rng, ranges.geometry)
    return SampleParams(A.draw_habitus(base_anatomy, rng, ranges.anatomy), geometry or g,
                        draw_physics(rng, ranges.physics), draw_processing(rng, ranges.processing))


class Simulator:
    """Render :class:`SampleParams` of one CT into a radiograph and its targets (see module docstring).

    Args:
        ct: a :class:`~cxrdecomp.io.ct.CTVolume` (HU, RAS, mm; labels optional but recommended: bone groups,
            lungs), or an already prepared :class:`~cxrdecomp.simulate.anatomy.AnatomyVolume`.
        size: detector pixels per side (256–1024).
        device: torch device (volume and rendering).
        voxel_mm: in-plane voxel size of the prepared volume; default 1.3 × the detector pixel at the isocentre
            (the CT is averaged down by the nearest integer factor; 2.1 mm for the example CT at 256²).
        target: bone replacement of the soft-tissue target, one of :data:`TARGETS`.
        method: projector method (``"shearwarp"`` fastest on CPU; ``"joseph"`` exact rays).
        des: also render the virtual dual-energy pair.
        ranges: randomisation ranges of :meth:`sample`.
        anatomy_reuse: consecutive training samples that share one 3-D anatomy (its deformation costs ~0.5–1 s on CPU).
        view_reuse: consecutive samples that share one geometry and hence one projection (the projection is the
            costliest step left; the samples still differ in habitus, nodules, physics, detector and processing).
        n_val_anatomies: size of the held-out bank of validation anatomies.
        cache: number of deformed volumes kept in memory.

    Raises:
        ConfigError: unknown target or split; size out of range.
    """

    def __init__(self, ct, size: int = 256, *, device=None, voxel_mm: float | None = None, target: str = "volume",
                 method: str = "shearwarp", des: bool = False, ranges: SimulationRanges | None = None, anatomy_reuse: int = 32,
                 view_reuse: int = 1, n_val_anatomies: int = 8, cache: int = 2, bin_kev: float = 4.0) -> None:
        if target not in TARGETS:
            raise ConfigError(f"target must be one of {TARGETS}, not {target!r}")
        if not 16 <= int(size) <= 4096:
            raise ConfigError(f"detector size must be 16–4096 pixels, got {size}")
        self.size, self.target, self.method, self.des = int(size), target, method, bool(des)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.ranges = ranges or SimulationRanges()
        self.anatomy_reuse, self.n_val_anatomies, self.cache_size, self.bin_kev = max(1, int(anatomy_reuse)), int(n_val_anatomies), int(cache), bin_kev
        self.view_reuse = max(1, int(view_reuse))
        self._projections: OrderedDict = OrderedDict()
        if isinstance(ct, A.AnatomyVolume):
            self.av = ct
        else:
            ext = max(ct.hu.shape[0] * ct.spacing[0], ct.hu.shape[2] * ct.spacing[2])
            self.av = A.prepare(ct, self.device, voxel_mm if voxel_mm is not None else 1.3 * ext / self.size)
        self._volumes: OrderedDict = OrderedDict()
        self._spectra: dict = {}

    # ------------------------------------------------------------------ parameters
    def anatomy_params(self, index: int, seed: int = 0, split: str = "train") -> A.AnatomyParams:
        """The 3-D anatomy of sample ``index``: training anatomies change every ``anatomy_reuse`` samples; validation
        cycles through the held-out bank of ``n_val_anatomies``."""
        code = self._split(split)
        aid = index // self.anatomy_reuse if split == "train" else index % max(1, self.n_val_anatomies)
        return A.draw_volume_anatomy(np.random.default_rng([int(seed), code, 1, int(aid)]), self.ranges.anatomy)

    def sample_params(self, index: int, seed: int = 0, split: str = "train") -> SampleParams:
        """All parameters of sample ``index`` of ``split`` (reproducible from (CT, index, seed))."""
        code = self._split(split)
        rng = np.random.default_rng([int(seed), code, 0, int(index)])
        geometry = None
        if self.view_reuse > 1:  # consecutive samples share one projection: geometry from the view's own stream
            geometry = draw_geometry(np.random.default_rng([int(seed), code, 2, int(index) // self.view_reuse]), self.ranges.geometry)
        return draw_sample(rng, self.anatomy_params(index, seed, split), self.ranges, geometry)

    def sample(self, index: int, seed: int = 0, split: str = "train") -> dict[str, torch.Tensor]:
        """Render sample ``index`` (see :meth:`render`); ``out["params"]`` is the :class:`SampleParams`."""
        p = self.sample_params(index, seed, split)
        out = self.render(p)
        out["params"] = p  # type: ignore[assignment]
        return out

    @staticmethod
    def _split(split: str) -> int:
        if split not in SPLITS:
            raise ConfigError(f"split must be one of {tuple(SPLITS)}, not {split!r}")
        return SPLITS[split]

    # ------------------------------------------------------------------ stages
    def volume(self, p: A.AnatomyParams) -> PreparedVolume:
        """Stage 1 (3-D): the varied material volume, cached by :meth:`AnatomyParams.volume_key`."""
        key = p.volume_key()
        if key in self._volumes:
            self._volumes.move_to_end(key)
            return self._volumes[key]
        pv = PreparedVolume(A.vary_volume(self.av, p), self.av.spacing)
        if self.method == "shearwarp":
            pv = pv.compact((1,))
        self._volumes[key] = pv
        while len(self._volumes) > max(1, self.cache_size):
            self._volumes.popitem(last=False)
        return pv

    def detector(self, g: GeometryParams) -> tuple[Detector, Pose, float]:
        """Stage 2: detector, C-arm pose and the pixel pitch at the isocentre (mm) of a geometry."""
        if g.view not in ("PA", "AP"):
            raise ConfigError(f"view must be 'PA' or 'AP', not {g.view!r}")
        ex, _, ez = self.av.extent_mm
        fov = max(ex, ez) * g.fov
        sod = g.sdd_mm - (self.av.body_half_depth_mm + g.air_gap_mm)
        if not 0 < sod < g.sdd_mm:
            raise ConfigError(f"source–detector distance {g.sdd_mm} mm is too short for this body ({self.av.body_half_depth_mm:.0f} mm half depth)")
        det = Detector.covering(fov, self.size, sdd=g.sdd_mm, sod=sod)
        az = g.azimuth + (180.0 if g.view == "AP" else 0.0)
        pose = Pose.from_angles([az], [g.tilt], [g.roll], translation=[-g.shift_mm[0], 0.0, -g.shift_mm[1]], device=self.device)
        return det, pose, fov / self.size

    def spectrum(self, ph: PhysicsParams) -> Spectrum:
        key = (ph.energy_kev,) if ph.energy_kev > 0 else (ph.kvp, ph.filtration_mm_al)
        if key not in self._spectra:
            if ph.energy_kev > 0:
                self._spectra[key] = Spectrum([ph.energy_kev], [1.0], materials=A.MATERIALS)
            else:
                from cxrdecomp.physics.spectra import spectrum as tube

                self._spectra[key] = Spectrum(*tube(ph.kvp, ph.filtration_mm_al, self.bin_kev), materials=A.MATERIALS)
        return self._spectra[key]

    def thickness(self, p: SampleParams) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Detector]:
        """Stages 1–2: projected channels ``(1, 6, H, W)`` (g/cm² and cm, :data:`~cxrdecomp.simulate.anatomy.CHANNELS`)
        after the 2-D anatomy, the nodule mask and the nodules' soft-tissue mass ``(1, 1, H, W)``, and the detector."""
        det, pose, pix_iso = self.detector(p.geometry)
        key = (p.anatomy.volume_key(), p.geometry)
        if key in self._projections:
            t = self._projections[key]
        else:
            with torch.no_grad():
                t = forward_project(self.volume(p.anatomy), pose, det, method=self.method)
            if p.geometry.view == "AP":
                t = t.flip(-1)  # back to the radiological display (patient's right on the viewer's left)
            self._projections[key] = t
            while len(self._projections) > 2:
                self._projections.popitem(last=False)
        t = A.add_habitus(t, p.anatomy, pix_iso)
        t, nodules, nodule_mass = A.add_nodules(t, p.anatomy, pix_iso)
        return t, nodules, nodule_mass, det

    def field(self, g: GeometryParams) -> torch.Tensor:
        """Exposed area ``(1, 1, H, W)`` bool inside the collimator blades."""
        S = self.size
        top, bottom, left, right = (int(round(f * S)) for f in g.collimation)
        m = torch.zeros(1, 1, S, S, dtype=torch.bool, device=self.device)
        m[..., top : S - bottom, left : S - right] = True
        return m

    @torch.no_grad()
    def render(self, p: SampleParams) -> dict[str, torch.Tensor]:
        """All outputs of one sample (module docstring), each ``(1, H, W)`` float32 on the simulator's device."""
        t, nodules, nodule_mass, det = self.thickness(p)
        spec = self.spectrum(p.physics)
        ph = p.physics
        mats = t[:, :4]
        if ph.materials:
            unknown = set(ph.materials) - set(A.MATERIALS)
            if unknown:
                raise ConfigError(f"unknown materials {sorted(unknown)}; choose from {A.MATERIALS}")
            keep = torch.tensor([m in ph.materials for m in A.MATERIALS], dtype=mats.dtype, device=mats.device)
            mats = mats * keep.view(1, -1, 1, 1)
        soft = mats.clone()
        soft[:, 0] = 0
        if self.target == "volume":
            soft[:, 1] += t[:, 4] * SOFT_DENSITY
        elif self.target == "mass":
            soft[:, 1] += t[:, 0]
        lung_only = torch.zeros_like(mats)  # the lung X-ray: parenchyma and the nodules inserted into it
        lung_only[:, 2] = mats[:, 2]
        lung_only[:, 1] = nodule_mass[:, 0]
        primary = polyenergetic_intensity(torch.cat([mats, soft, lung_only]), spec)  # (3, 1, H, W)
        fld = self.field(p.geometry)
        exposed = primary[:2] * fld  # the blades stop the primary
        sig = gaussian_blur(add_scatter(exposed, ph.spr, ph.scatter_sigma_mm / det.spacing[1], ph.grid, fld), ph.mtf_sigma_px)
        clean_log = log_image(sig.clamp(min=1e-6))
        if ph.photons > 0:
            g = torch.Generator().manual_seed(int(ph.noise_seed))
            noisy = log_image(add_noise(sig[:1], ph.photons, ph.electronic_sigma, generator=g))
            logs = torch.cat([noisy, clean_log[1:] + (noisy - clean_log[:1])])  # same noise realisation on both
        else:
            logs = clean_log
        disp = apply_processing(logs.float(), p.processing, fld, reference=0)
        x, s = disp[:1], disp[1:2]
        lo, hi = display_window(logs[:1].float()[fld].view(1, 1, 1, -1), *p.processing.window)
        scale = (hi - lo).clamp(min=1e-6)
        out = {
            "log": logs[:1].float(),
            "image": x,
            "soft_tissue": s,
            "bone": x - s,
            "lung": (log_image(primary[2:3]).float() / scale).clamp(0, 1),
            "lung_mask": (t[:, 5:6] > 0.5).float(),
            "bone_mask": (t[:, 4:5] > 0.05).float(),
            "nodule_mask": nodules.float(),
            "t_bone": t[:, 0:1].float(),
            "t_tissue": t[:, 1:4].sum(1, keepdim=True).float(),
            "field": fld.float(),
        }
        if self.des:
            low = self.spectrum(replace(ph, kvp=60.0, filtration_mm_al=2.5, energy_kev=0.0))
            high = self.spectrum(replace(ph, kvp=120.0, filtration_mm_al=2.5, energy_kev=0.0))
            de = dual_energy(mats, low, high)
            dlo, dhi = display_window(de["high"].float()[fld].view(1, 1, 1, -1), *p.processing.window)  # the DES unit's own window
            out["des_soft"] = (de["soft_tissue"].float() - dlo) / (dhi - dlo)
            out["des_bone"] = de["bone"].float() / (dhi - dlo)
        return {k: v[0] for k, v in out.items()}


def check_ct(ct) -> None:
    """Refuse a CT the simulation cannot use, with one clear line (before anything is written).

    Raises:
        InputError: not 3-D, fewer than 2 slices along any axis, non-finite values or spacing.
    """
    hu = np.asarray(ct.hu)
    name = getattr(ct, "source", "") or "CT"
    if hu.ndim != 3:
        raise InputError(f"{name}: a CT must be a 3-D volume, got {hu.ndim}-D shape {hu.shape}")
    if min(hu.shape) < 2:
        raise InputError(f"{name}: a CT needs at least 2 voxels along every axis, got shape {hu.shape} (a single slice?)")
    if not np.all(np.isfinite(np.asarray(ct.spacing, dtype=float))) or min(ct.spacing) <= 0:
        raise InputError(f"{name}: voxel spacing must be positive and finite, got {tuple(ct.spacing)}")
    step = max(1, hu.size // 4_000_000)
    if not np.isfinite(hu.reshape(-1)[::step]).all() or not np.isfinite(hu).all():
        raise InputError(f"{name}: the CT holds NaN or infinite values; fix or crop the volume first")
