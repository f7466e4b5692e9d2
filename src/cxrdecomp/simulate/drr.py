"""DRRs of a user's CT with fixed, user-given parameters, through the one simulation pipeline (``cxrdecomp drr``).

Every view is one :meth:`cxrdecomp.simulate.pipeline.Simulator.render` of a :class:`~cxrdecomp.simulate.pipeline.SampleParams`
with the **identity anatomy** (:class:`~cxrdecomp.simulate.anatomy.AnatomyParams` defaults: the CT as it is), the
geometry, physics and processing given here, and nothing drawn at random (quantum noise only when ``photons > 0``,
from ``seed + view index``). So a DRR made here and a training sample rendered by ``cxrdecomp simulate`` with the
same parameters are the same image (docs/drr.md, docs/simulation.md).

Two functions, the same shape as the command line::

    from cxrdecomp.io.drr_out import write_drr
    from cxrdecomp.simulate.drr import render_drr
    views = render_drr("chest.nii.gz", size=512, kvp=120, sweep=[-10, 0, 10])   # one dict per view
    views[0]["image"]          # (H, W) float32, display domain [0, 1], bone bright, patient right on the left
    views[0]["log"]            # (H, W) float32, attenuation domain −ln I
    write_drr(views, "out", formats=("png16", "dicom"))

Outputs per view (:data:`~cxrdecomp.io.drr_out.OUTPUT_DOMAINS`): ``image``, ``soft_tissue`` and ``bone = image − soft_tissue`` (display
domain), ``log`` (attenuation domain), ``lung`` (lung-only DRR on the image's window), masks ``lung_mask``,
``bone_mask``, ``field`` ({0, 1}) and mass thicknesses ``t_bone``, ``t_tissue`` (g/cm²).

Files: :func:`cxrdecomp.io.drr_out.write_drr` (16-bit PNG, float TIFF, NIfTI, DICOM DX; staged, ``drr.json`` last).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch

from cxrdecomp.errors import ConfigError, InputError
from cxrdecomp.io.drr_out import OUTPUT_DOMAINS
from cxrdecomp.simulate import anatomy as A
from cxrdecomp.simulate.ct2xray import Spectrum
from cxrdecomp.simulate.pipeline import (
    TARGETS,
    GeometryParams,
    PhysicsParams,
    SampleParams,
    Simulator,
    check_ct,
)
from cxrdecomp.simulate.processing import NONE, PRESENTATION

VIEWS = ("PA", "AP")
PROCESSING = ("none", "presentation")
METHODS = ("joseph", "shearwarp")
MATERIALS = A.MATERIALS
"""Materials of ``materials=`` (:data:`cxrdecomp.simulate.anatomy.MATERIALS`)."""
DEFAULT_OUTPUTS = ("image", "log", "bone", "soft_tissue")



def _floats(values, what: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be numbers, got {values!r}") from None
    if not all(math.isfinite(v) for v in out):
        raise ConfigError(f"{what} must be finite numbers, got {values!r}")
    return out


@dataclass(frozen=True)
class DRRParams:
    """Every setting of a DRR (one or a sweep of views); validated on construction.

    Attributes:
        size: detector pixels per side (16–4096).
        view: ``"PA"`` (source posterior) or ``"AP"`` (source anterior; mirrored back to the radiological display,
            so both show the patient's right on the image's left).
        sdd_mm: source-to-detector distance (mm). air_gap_mm: detector distance behind the body surface (mm).
        fov: field of view at the isocentre, fraction of the CT's larger left–right / cranio-caudal extent.
        azimuth, tilt, roll: rotation about the patient's long axis, tilt about the left–right axis, in-plane
            rotation (degrees). sweep: azimuths of a series of views (replaces ``azimuth``).
        kvp, filtration_mm_al: SpekPy tube spectrum (30–150 kVp; energy-weighted, 4 keV bins).
        energy_kev: > 0: a monochromatic beam of that energy instead. spectrum: ``(energies_keV, weights)``: a
            spectrum of your own instead (both > 0; weights are normalised).
        materials: materials rendered, a subset of :data:`MATERIALS` (``()`` = all).
        spr, scatter_sigma_mm, grid: scatter-to-primary ratio (0 = no scatter), kernel σ at the detector, grid.
        photons, electronic_sigma, seed: quantum noise (photons per pixel of the open beam; 0 = noise-free),
            electronic noise σ in photons, noise seed (view ``k`` uses ``seed + k``).
        mtf_sigma_px: detector blur σ in pixels.
        processing: ``"none"`` (linear window, 0.5–99.5 % quantiles) or ``"presentation"``
            (:data:`cxrdecomp.simulate.processing.PRESENTATION`).
        target: how bone is removed from the ``soft_tissue`` output (:data:`cxrdecomp.simulate.pipeline.TARGETS`).
        outputs: outputs kept per view (keys of :data:`~cxrdecomp.io.drr_out.OUTPUT_DOMAINS`).
        device: torch device (``cpu``, ``cuda``, ``cuda:1`` ...). method: projector (``joseph`` exact rays;
            ``shearwarp`` faster on CPU, views within 45° of PA/AP only).
        voxel_mm: in-plane voxel size the CT is averaged down to (None: ≈ the detector pixel at the isocentre).

    Raises:
        ConfigError: any value out of range, with what is allowed.
    """

    size: int = 512
    view: str = "PA"
    sdd_mm: float = 1800.0
    air_gap_mm: float = 20.0
    fov: float = 1.0
    azimuth: float = 0.0
    tilt: float = 0.0
    roll: float = 0.0
    sweep: tuple[float, ...] | None = None
    kvp: float = 120.0
    filtration_mm_al: float = 2.5
    energy_kev: float = 0.0
    spectrum: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    materials: tuple[str, ...] = ()
    spr: float = 0.0
    scatter_sigma_mm: float = 60.0
    grid: bool = False
    photons: float = 0.0
    electronic_sigma: float = 0.0
    seed: int = 0
    mtf_sigma_px: float = 0.0
    processing: str = "none"
    target: str = "volume"
    outputs: tuple[str, ...] = DEFAULT_OUTPUTS
    device: str = "cpu"
    method: str = "joseph"
    voxel_mm: float | None = None

    def __post_init__(self) -> None:
        put = lambda k, v: object.__setattr__(self, k, v)

        if isinstance(self.size, bool) or not isinstance(self.size, (int, np.integer)) or not 16 <= int(self.size) <= 4096:
            raise ConfigError(f"size must be an integer number of pixels in 16–4096, got {self.size!r}")
        put("size", int(self.size))
        view = str(self.view).upper()
        if view not in VIEWS:
            raise ConfigError(f"view must be PA or AP, not {self.view!r}")
        put("view", view)
        for name in ("sdd_mm", "air_gap_mm", "fov", "azimuth", "tilt", "roll", "kvp", "filtration_mm_al", "energy_kev", "spr",
                     "scatter_sigma_mm", "photons", "electronic_sigma", "mtf_sigma_px"):
            put(name, _floats([getattr(self, name)], name)[0])
        if self.sdd_mm <= 0:
            raise ConfigError(f"sdd_mm (source-to-detector distance) must be > 0 mm, got {self.sdd_mm}")
        if self.air_gap_mm < 0:
            raise ConfigError(f"air_gap_mm must be ≥ 0 mm, got {self.air_gap_mm}")
        if not 0 < self.fov <= 4:
            raise ConfigError(f"fov must be a fraction of the CT extent in (0, 4], got {self.fov}")
        if self.sweep is not None:
            sweep = _floats(self.sweep, "sweep azimuths")
            if not sweep:
                raise ConfigError("sweep needs at least one azimuth")
            if self.azimuth != 0:
                raise ConfigError("give azimuth or sweep, not both (sweep lists every view's azimuth)")
            put("sweep", sweep)
        if self.spectrum is not None:
            if self.energy_kev > 0:
                raise ConfigError("give energy_kev (monochromatic) or spectrum, not both")
            try:
                e, w = self.spectrum
            except (TypeError, ValueError):
                raise ConfigError("spectrum must be (energies_keV, weights)") from None
            e, w = _floats(e, "spectrum energies"), _floats(w, "spectrum weights")
            if not e or len(e) != len(w) or min(e) < 1 or max(e) > 1000 or min(w) < 0 or sum(w) <= 0:
                raise ConfigError("spectrum needs as many weights (≥ 0, not all 0) as energies (1–1000 keV)")
            put("spectrum", (e, w))
        elif self.energy_kev > 0:
            if not 1 <= self.energy_kev <= 1000:
                raise ConfigError(f"energy_kev must lie in 1–1000 keV (0 = the tube spectrum), got {self.energy_kev}")
        elif self.energy_kev < 0:
            raise ConfigError(f"energy_kev must be ≥ 0 (0 = the tube spectrum), got {self.energy_kev}")
        elif not 30 <= self.kvp <= 150:
            raise ConfigError(f"kvp must lie in 30–150 kVp (SpekPy), got {self.kvp:g}")
        if self.filtration_mm_al < 0:
            raise ConfigError(f"filtration_mm_al must be ≥ 0 mm, got {self.filtration_mm_al}")
        mats = (self.materials,) if isinstance(self.materials, str) else tuple(self.materials)
        unknown = [m for m in mats if m not in MATERIALS]
        if unknown:
            raise ConfigError(f"unknown material(s) {', '.join(map(repr, unknown))}; choose from {', '.join(MATERIALS)}")
        put("materials", tuple(dict.fromkeys(mats)))
        for name in ("spr", "scatter_sigma_mm", "photons", "electronic_sigma", "mtf_sigma_px"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be ≥ 0, got {getattr(self, name)}")
        if self.scatter_sigma_mm <= 0:
            raise ConfigError(f"scatter_sigma_mm must be > 0 mm, got {self.scatter_sigma_mm}")
        put("grid", bool(self.grid))
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ConfigError(f"seed must be an integer ≥ 0, got {self.seed!r}")
        put("seed", int(self.seed))
        if self.processing not in PROCESSING:
            raise ConfigError(f"processing must be one of {', '.join(PROCESSING)}, not {self.processing!r}")
        if self.target not in TARGETS:
            raise ConfigError(f"target must be one of {', '.join(TARGETS)}, not {self.target!r}")
        outs = (self.outputs,) if isinstance(self.outputs, str) else tuple(self.outputs)
        unknown = [o for o in outs if o not in OUTPUT_DOMAINS]
        if unknown or not outs:
            raise ConfigError(f"unknown output(s) {', '.join(map(repr, unknown)) or '(none given)'}; choose from {', '.join(OUTPUT_DOMAINS)}")
        put("outputs", tuple(dict.fromkeys(outs)))
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}, not {self.method!r}")
        _check_device(self.device)
        if self.voxel_mm is not None:
            v = _floats([self.voxel_mm], "voxel_mm")[0]
            if v <= 0:
                raise ConfigError(f"voxel_mm must be > 0 mm, got {v}")
            put("voxel_mm", v)

    @property
    def azimuths(self) -> tuple[float, ...]:
        """Azimuth of every view (degrees)."""
        return self.sweep if self.sweep is not None else (self.azimuth,)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable settings (tuples as lists); ``DRRParams(**d)`` rebuilds them."""
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = [list(x) if isinstance(x, tuple) else x for x in v]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DRRParams:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown DRR settings {unknown}; known: {sorted(known)}")
        d = dict(d)
        for k in ("sweep", "materials", "outputs"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        if d.get("spectrum") is not None:
            d["spectrum"] = tuple(tuple(x) for x in d["spectrum"])
        return cls(**d)

    def sample_params(self, k: int = 0):
        """The pipeline's :class:`~cxrdecomp.simulate.pipeline.SampleParams` of view ``k``."""
        g = GeometryParams(view=self.view, sdd_mm=self.sdd_mm, air_gap_mm=self.air_gap_mm, azimuth=self.azimuths[k],
                           tilt=self.tilt, roll=self.roll, fov=self.fov)
        ph = PhysicsParams(kvp=self.kvp, filtration_mm_al=self.filtration_mm_al, energy_kev=self.energy_kev, spr=self.spr,
                           scatter_sigma_mm=self.scatter_sigma_mm, grid=self.grid, mtf_sigma_px=self.mtf_sigma_px,
                           photons=self.photons, electronic_sigma=self.electronic_sigma, noise_seed=self.seed + k,
                           materials=self.materials)
        return SampleParams(A.AnatomyParams(), g, ph, PRESENTATION if self.processing == "presentation" else NONE)


def _check_device(device: str) -> None:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device must be cpu, cuda or cuda:N, not {device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r}: CUDA is not available on this machine; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise ConfigError(f"device must be cpu, cuda or cuda:N, not {device!r}")


def parse_sweep(text: str) -> tuple[float, ...]:
    """``"A:B:N"`` → N azimuths evenly spaced from A to B degrees, both included (``"0:350:36"``: a full turn).

    Raises:
        ConfigError: not three fields, or N not a positive integer.
    """
    parts = str(text).split(":")
    try:
        a, b, n = float(parts[0]), float(parts[1]), int(parts[2])
        if len(parts) != 3 or n < 1 or not (math.isfinite(a) and math.isfinite(b)):
            raise ValueError
    except (ValueError, IndexError):
        raise ConfigError(f"sweep must be START:STOP:N (degrees, N ≥ 1 views), e.g. -30:30:7, not {text!r}") from None
    return tuple(float(round(v, 6)) for v in np.linspace(a, b, n))


def _as_ct(ct):
    from cxrdecomp.io.ct import CTVolume, read_ct

    if isinstance(ct, (str, os.PathLike)):
        return read_ct(ct)
    if not isinstance(ct, CTVolume):
        raise InputError(f"expected a CTVolume (cxrdecomp.io.ct.read_ct) or a path, got {type(ct).__name__}")
    return ct


class DRRRenderer:
    """The views of :class:`DRRParams` of one CT, rendered on demand (``len``, iteration, :meth:`render`).

    Preparing the CT (materials, densities, :func:`cxrdecomp.simulate.anatomy.prepare`) is done once, here; then every
    view's geometry is checked, so that an impossible view is refused before any rendering.

    Args:
        ct: a :class:`~cxrdecomp.io.ct.CTVolume` (HU, RAS, mm; labels optional: bones and lungs from labels, else
            from HU) or a path for :func:`~cxrdecomp.io.ct.read_ct`.
        params: the settings.

    Raises:
        InputError: a CT the pipeline cannot use (:func:`cxrdecomp.simulate.pipeline.check_ct`).
        ConfigError: a view whose source would lie inside the CT, or one ``shearwarp`` cannot render.
    """

    def __init__(self, ct, params: DRRParams | None = None) -> None:
        self.ct = _as_ct(ct)
        check_ct(self.ct)
        self.params = params or DRRParams()
        p = self.params
        self.sim = DRRSimulator(self.ct, p.size, device=p.device, voxel_mm=p.voxel_mm, target=p.target, method=p.method)
        if p.spectrum is not None:
            self.sim.custom_spectrum = Spectrum(*p.spectrum, materials=A.MATERIALS)
        self._geometry = [self._check_view(k) for k in range(len(self))]

    def __len__(self) -> int:
        return len(self.params.azimuths)

    def _check_view(self, k: int) -> dict[str, Any]:
        sp = self.params.sample_params(k)
        g = sp.geometry
        det, pose, pix_iso = self.sim.detector(g)
        ext = np.asarray(self.sim.av.extent_mm)
        src = pose.apply(pose.rotation.new_tensor([[[0.0, -det.sod, 0.0]]]))[0, 0].cpu().numpy()
        if np.all(np.abs(src) <= ext / 2):
            raise ConfigError(f"view {k} (azimuth {g.azimuth:g}°): the source lies inside the CT volume at sdd {g.sdd_mm:g} mm; "
                              f"increase the source-to-detector distance (--sdd)")
        if self.params.method == "shearwarp" and int(np.argmax(np.abs(pose.rotation[0, :, 1].cpu().numpy()))) != 1:
            raise ConfigError(f"view {k} (azimuth {g.azimuth:g}°, tilt {g.tilt:g}°) is more than 45° from PA/AP; "
                              "the shearwarp projector renders those views only: use --method joseph")
        half = self.sim.av.body_half_depth_mm
        return {
            "rows": det.height, "columns": det.width,
            "pixel_spacing_mm": [float(det.spacing[0]), float(det.spacing[1])],
            "pixel_spacing_isocentre_mm": float(pix_iso),
            "sdd_mm": float(det.sdd), "sod_mm": float(det.sod),
            "source_to_surface_mm": float(det.sod - half),
            "source_to_support_mm": float(det.sdd - self.params.air_gap_mm),
            "magnification": float(det.sdd / det.sod),
        }

    def spectrum_dict(self) -> dict[str, list[float]]:
        s = self.sim.spectrum(self.params.sample_params(0).physics)
        return {"energies_kev": [round(float(e), 4) for e in s.energies], "weights": [float(w) for w in s.weights]}

    def ct_dict(self) -> dict[str, Any]:
        ct = self.ct
        return {"source": str(ct.source), "shape": list(ct.shape), "spacing_mm": [float(s) for s in ct.spacing],
                "labels": ct.labels is not None, "label_names": len(ct.label_names),
                "prepared_voxel_mm": [float(s) for s in self.sim.av.spacing]}

    def render(self, k: int) -> dict[str, Any]:
        """View ``k``: the outputs as ``(H, W)`` float32 numpy arrays and ``"params"`` (JSON-serialisable)."""
        if not 0 <= k < len(self):
            raise IndexError(k)
        sp = self.params.sample_params(k)
        out = self.sim.render(sp)
        view: dict[str, Any] = {name: out[name][0].detach().float().cpu().numpy() for name in self.params.outputs}
        view["params"] = {
            "index": k, "azimuth": sp.geometry.azimuth, "view": sp.geometry.view, "detector": dict(self._geometry[k]),
            "sample": sp.to_dict(), "settings": self.params.to_dict(), "spectrum": self.spectrum_dict(), "ct": self.ct_dict(),
        }
        return view

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for k in range(len(self)):
            yield self.render(k)


class DRRSimulator(Simulator):
    """The pipeline's :class:`~cxrdecomp.simulate.pipeline.Simulator`, with an optional spectrum of the user's own
    (``custom_spectrum``, a :class:`~cxrdecomp.simulate.ct2xray.Spectrum`) replacing the SpekPy tube spectrum."""

    custom_spectrum: Spectrum | None = None

    def spectrum(self, ph: PhysicsParams) -> Spectrum:
        if self.custom_spectrum is not None and ph.energy_kev <= 0:
            return self.custom_spectrum
        return super().spectrum(ph)


def render_drr(ct, params: DRRParams | None = None, **settings) -> list[dict[str, Any]]:
    """Render the DRR view(s) of a CT through the simulation pipeline (fixed parameters, identity anatomy).

    Args:
        ct: :class:`~cxrdecomp.io.ct.CTVolume` (``(X, Y, Z)`` HU, RAS, mm) or a path (NIfTI, NRRD/MHA, DICOM folder).
        params: a :class:`DRRParams`, or give its fields as keywords: ``size=512, view="PA", sdd_mm=1800.,
            azimuth=0., tilt=0., roll=0., sweep=None`` (list of azimuths), ``kvp=120., filtration_mm_al=2.5,
            energy_kev=0.`` (monochromatic if > 0), ``spectrum=None, materials=(), spr=0., grid=False, photons=0.,
            mtf_sigma_px=0., processing="none"|"presentation", target="volume", device="cpu", method="joseph",
            outputs=("image", "log", "bone", "soft_tissue")``.

    Returns:
        One dict per view: each output an ``(H, W)`` float32 array (``image``, ``soft_tissue``, ``bone``: display
        domain, bone bright, patient's right on the image's left; ``log``: attenuation domain ``−ln I``; see
        :data:`~cxrdecomp.io.drr_out.OUTPUT_DOMAINS`) and ``"params"``: the view's settings, detector geometry (pitch, sdd, sod,
        magnification), pipeline :class:`~cxrdecomp.simulate.pipeline.SampleParams` and spectrum.

    Raises:
        InputError: unusable CT (not 3-D, one slice, NaN, ...). ConfigError: a setting out of range.

    Example:
        >>> views = render_drr(read_ct("chest.nii.gz"), size=256, energy_kev=60)
        >>> views[0]["log"].shape
        (256, 256)
    """
    if params is not None and settings:
        raise ConfigError("give a DRRParams or keyword settings, not both")
    return list(DRRRenderer(ct, params if params is not None else DRRParams(**settings)))


__all__ = [
    "MATERIALS",
    "OUTPUT_DOMAINS",
    "DRRParams",
    "DRRRenderer",
    "parse_sweep",
    "render_drr",
]
