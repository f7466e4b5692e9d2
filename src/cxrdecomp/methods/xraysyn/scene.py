"""XraySyn's rendering scene: a CT in a cube, its C-arm, CT2Xray and the backprojection (paper Eq. 1–7).

Everything the XraySyn method needs between a volume and a radiograph, in one place, shared by training
(:mod:`cxrdecomp.methods.xraysyn.data`), the predictor and the view sweep:

* **Volume**: a cube of ``volume_size³`` voxels (3DPN-S: 64³; the paper: 128³) of side ``cube_mm`` centred on
  the isocentre, holding HU ``V`` and a bone mask ``m``. Its two materials for CT2Xray (paper Eq. 3, as the
  authors threshold bone): bone density ``m·ρ(V)`` and tissue density ``(1 − m)·ρ(V)`` in g/cm³, with
  ``ρ = hu_to_density`` (DeepDRR's piecewise-linear conversion).
* **C-arm**: a cone beam of ``sdd_mm`` with the isocentre ``sod_mm`` from the source, a square detector of
  ``render_size²`` pixels covering the cube's shadow; poses ``T = (azimuth, elevation)`` in degrees
  (:meth:`cxrdecomp.projector.geometry.Pose.from_angles`; paper §3.1: ±18°).
* **CT2Xray** (Eq. 3–6): thicknesses ``t = FP(ρ_m, T)`` (g/cm², the differentiable projector), polyenergetic
  transmitted fraction ``I = Σ_E w_E exp(−Σ_m µ/ρ(m, E)·t_m)`` of a ``kvp`` tube spectrum, and the
  attenuation-domain radiograph ``L = −ln I``; images are average-pooled from ``render_size²`` to
  ``view_size²`` (supersampling). The network sees ``L / LOG_SCALE`` ("display" of this scene).
  ``projection="drr"`` replaces CT2Xray by a line-integral DRR ``L = µ/ρ_soft·(t_bone + t_tissue)`` (one material,
  soft tissue's spectrum-weighted µ/ρ): the paper's 3DPN-DRR baseline, trained without the realistic physics.
* **BP** (Eq. 7): the radiograph lifted into the cube along its rays
  (:func:`cxrdecomp.projector.backproject.backproject`), so that ``FP(BP(L, T), T) ≈ L``.
* **Real radiographs** (Algorithm 1, first step): a display-domain image ``x ∈ [0, 1]`` is mapped to the
  attenuation range of the training renderings by the linear map ``L = a·x + b`` that sends its 2 % and 98 %
  body quantiles to the mean quantiles of the training radiographs at the frontal pose (:func:`calibrate`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from cxrdecomp.errors import InputError
from cxrdecomp.physics.materials import hu_to_density
from cxrdecomp.projector.backproject import backproject
from cxrdecomp.projector.conebeam import forward_project
from cxrdecomp.projector.geometry import Detector, Pose
from cxrdecomp.simulate.ct2xray import Spectrum, log_image, polyenergetic_intensity

LOG_SCALE = 5.0
"""Attenuation ``−ln I`` that the network's input and image losses divide by (chest radiographs: 0 … ~4)."""
QUANTILES = (0.02, 0.98)
"""Body quantiles that :func:`calibrate` matches between a real radiograph and the training renderings."""


@dataclass(frozen=True)
class SceneConfig:
    """Geometry and physics of the XraySyn scene (module docstring). Stored in ``config.json["model"]["scene"]``.

    Attributes:
        volume_size: voxels per side of the cube (must divide by ``2**levels`` of the 3DPN).
        cube_mm: side of the cube in mm (default: fitted to the CT by the data module).
        render_size: detector pixels per side that CT2Xray renders.
        view_size: pixels per side after average pooling (what the losses and the 2DRN's input see).
        sdd_mm, sod_mm: source–detector and source–isocentre distances.
        kvp, filtration_mm_al: the tube spectrum (SpekPy).
        calibration: ``(q_lo, q_hi)``, mean attenuation-domain body quantiles (:data:`QUANTILES`) of the training
            radiographs at the frontal pose; used by :func:`calibrate`.
        projection: ``"ct2xray"`` (polyenergetic, Eq. 3–6) or ``"drr"`` (line integral; the 3DPN-DRR baseline).
    """

    volume_size: int = 64
    cube_mm: float = 360.0
    render_size: int = 128
    view_size: int = 64
    sdd_mm: float = 1500.0
    sod_mm: float = 1250.0
    kvp: float = 120.0
    filtration_mm_al: float = 2.5
    calibration: tuple[float, float] = (0.3, 2.5)
    projection: str = "ct2xray"

    def __post_init__(self) -> None:
        if self.projection not in ("ct2xray", "drr"):
            raise InputError(f"projection must be ct2xray or drr, not {self.projection!r}")
        if self.render_size % self.view_size:
            raise InputError(f"render_size {self.render_size} must be a multiple of view_size {self.view_size}")
        if not (self.sod_mm > self.cube_mm * 0.9 and self.sod_mm < self.sdd_mm):
            raise InputError(f"the source ({self.sod_mm} mm from the isocentre) must lie outside the {self.cube_mm} mm cube")

    def to_json(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict | None) -> "SceneConfig":
        d = dict(d or {})
        if "calibration" in d:
            d["calibration"] = tuple(float(v) for v in d["calibration"])
        return cls(**d)


class Scene:
    """CT2Xray and BP of one :class:`SceneConfig` (module docstring); stateless apart from cached spectra.

    Volumes are ``(B, C, N, N, N)`` on RAS axes (X right, Y anterior, Z superior), voxel ``cube_mm / N``.
    """

    def __init__(self, config: SceneConfig) -> None:
        self.config = c = config
        self.voxel_mm = c.cube_mm / c.volume_size
        # field of view at the isocentre: the cube's face nearest the source, magnified most, with a 2 % margin
        fov = 1.02 * c.cube_mm * c.sod_mm / (c.sod_mm - c.cube_mm / 2)
        self.detector = Detector.covering(fov, c.render_size, sdd=c.sdd_mm, sod=c.sod_mm)
        self.spectrum = Spectrum.tube(c.kvp, c.filtration_mm_al, bin_kev=4.0)
        self.pool = c.render_size // c.view_size

    # ------------------------------------------------------------------ poses
    @staticmethod
    def pose(angles: torch.Tensor) -> Pose:
        """Poses of ``(B, 2)`` (azimuth, elevation) in degrees."""
        a = torch.as_tensor(angles, dtype=torch.float32).reshape(-1, 2)
        return Pose.from_angles(a[:, 0], a[:, 1], device=a.device)

    # ------------------------------------------------------------------ CT2Xray
    def densities(self, hu: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Bone and tissue densities ``(B, 2, N, N, N)`` g/cm³ of HU and bone mask ``(B, 1, N, N, N)`` (Eq. 3)."""
        rho = hu_to_density(hu)
        return torch.cat([mask * rho, (1.0 - mask) * rho], 1)

    def thickness(self, densities: torch.Tensor, angles: torch.Tensor, pool: bool = True) -> torch.Tensor:
        """Material mass thicknesses ``(B, 2, view, view)`` g/cm² (bone, tissue) of ``(B, 2, N³)`` densities seen
        from ``(B, 2)`` angles (Eq. 1 and 3; rendered at ``render_size`` and average-pooled; ``pool=False``: at
        ``render_size``, the 2DRN's resolution)."""
        if densities.ndim != 5 or densities.shape[1] != 2:
            raise InputError(f"densities must be (B, 2, N, N, N), got {tuple(densities.shape)}")
        angles = torch.as_tensor(angles, dtype=densities.dtype, device=densities.device).reshape(-1, 2)
        out = []
        sp = (self.voxel_mm,) * 3
        for b in range(densities.shape[0]):
            t = forward_project(densities[b], self.pose(angles[b : b + 1]).to(densities.device, densities.dtype), self.detector, sp,
                                method="joseph")
            out.append(t)
        t = torch.cat(out)
        return F.avg_pool2d(t, self.pool) if pool and self.pool > 1 else t

    def reproject(self, volume: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        """Line integrals ``(B, 1, view, view)`` (value·cm) of a one-channel volume ``(B, 1, N, N, N)`` at ``(B, 2)``
        angles, as :meth:`thickness` (``FP(BP(L, T), T′)`` of the 2D Refiner baseline)."""
        if volume.ndim != 5 or volume.shape[1] != 1:
            raise InputError(f"volume must be (B, 1, N, N, N), got {tuple(volume.shape)}")
        return self.thickness(torch.cat([volume, torch.zeros_like(volume)], 1), angles)[:, :1]

    def radiograph(self, thickness: torch.Tensor) -> torch.Tensor:
        """Attenuation-domain radiograph ``L = −ln I`` ``(B, 1, H, W)`` of bone/tissue thicknesses ``(B, 2, H, W)``
        (Eq. 4–6; tissue attenuates as ICRP soft tissue; ``projection="drr"``: the line integral
        ``µ/ρ_soft·(t_bone + t_tissue)``)."""
        if self.config.projection == "drr":
            mu = float(self.spectrum.effective_mu_rho()[self.spectrum.materials.index("soft_tissue")])
            return mu * thickness.sum(1, keepdim=True)
        t3 = torch.cat([thickness, torch.zeros_like(thickness[:, :1])], 1)  # (bone, soft tissue, lung = 0)
        return log_image(polyenergetic_intensity(t3, self.spectrum))

    def render(self, hu: torch.Tensor, mask: torch.Tensor, angles: torch.Tensor, high_res: bool = False) -> dict[str, torch.Tensor]:
        """CT2Xray of a volume at poses: ``{"thickness": (B, 2, h, h), "log": (B, 1, h, h)}`` at the view size
        (differentiable); ``high_res`` adds ``thickness_hr`` and ``log_hr`` at the render size (the 2DRN's targets), from
        the same projection."""
        t_hr = self.thickness(self.densities(hu, mask), angles, pool=False)
        t = F.avg_pool2d(t_hr, self.pool) if self.pool > 1 else t_hr
        out = {"thickness": t, "log": self.radiograph(t)}
        if high_res:
            out.update(thickness_hr=t_hr, log_hr=self.radiograph(t_hr))
        return out

    # ------------------------------------------------------------------ BP
    def backproject(self, log: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
        """Eq. 7: ``(B, 1, view, view)`` attenuation-domain radiographs → ``(B, 1, N, N, N)`` network input
        (BP of ``L / LOG_SCALE``, per cm, ×10 so that chest values are of order 1)."""
        c = self.config
        up = F.interpolate(log, size=(c.render_size, c.render_size), mode="bilinear", align_corners=False) if self.pool > 1 else log
        n = c.volume_size
        angles = torch.as_tensor(angles, dtype=log.dtype, device=log.device).reshape(-1, 2)
        v = backproject(up / LOG_SCALE, self.pose(angles).to(log.device, log.dtype), self.detector, (n, n, n), (self.voxel_mm,) * 3)
        return v * 10.0


def calibrate(x: torch.Tensor, config: SceneConfig, body: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 1, first step: the affine map ``L = a·x + b`` per image from display domain to attenuation.

    Args:
        x: ``(B, 1, H, W)`` display-domain radiographs in ``[0, 1]`` (bone bright).
        config: the scene (its ``calibration`` quantiles of the training renderings).
        body: optional ``(B, 1, H, W)`` bool mask of the pixels to take quantiles over (default all).

    Returns:
        ``(a, b)``, each ``(B, 1, 1, 1)``; ``a > 0``.
    """
    lo_t, hi_t = config.calibration
    qs = []
    for i in range(x.shape[0]):
        v = x[i].flatten() if body is None else x[i][body[i]].flatten()
        if v.numel() < 2:
            v = x[i].flatten()
        qs.append(torch.quantile(v.float(), torch.tensor(QUANTILES, dtype=torch.float32, device=x.device)))
    q = torch.stack(qs).to(x.dtype)
    a = (hi_t - lo_t) / (q[:, 1] - q[:, 0]).clamp(min=1e-3)
    b = lo_t - a * q[:, 0]
    return a.view(-1, 1, 1, 1), b.view(-1, 1, 1, 1)


def uncalibrate(log: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Back from attenuation to the input's display domain: ``x = (L − b) / a``, the inverse of :func:`calibrate`'s map."""
    return (log - b) / a
