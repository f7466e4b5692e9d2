"""Render a CT case into a training sample: DRR, bone DRR and soft-tissue DRR (parallel AP beam).

Bone-extraction paper (Gozes & Greenspan, ISBI 2019) §2.1–2.2, two variants of the DRR:

* **Paper variant** (as published): ``µ = µ_water (HU + 1000)/1000`` with ``µ_water = 0.2 cm⁻¹``
  (HU below −1000 clipped), Eq. 2 ``µ_av = (1/N) Σ_i µ_i`` over the N voxels of a ray and
  Eq. 3 ``I_DRR = exp(β µ_av)`` with ``β = 0.02`` (:func:`drr_paper`).
* **Physical variant**: the line integral ``L = Σ_i µ_i Δy`` (Δy in cm; the *attenuation domain*) and
  Beer–Lambert ``I = exp(−L)`` (air bright, :func:`intensity_physical`), displayed bone-bright.

How they relate: for a parallel beam every ray crosses the same N samples of length Δy, so
``µ_av = L / (N Δy)`` with ``N Δy`` the ray length ``ℓ`` (constant per image) and
``I_DRR = exp(β L / ℓ)``. With β = 0.02 and µ_av ≤ 0.4 cm⁻¹ the exponent is < 0.008, so
``I_DRR ≈ 1 + β L/ℓ`` to better than 0.4 %: after the per-image rescaling to [0, 1] the paper's DRR is,
to that accuracy, a *linear* window of the line integral L — the same image as the physical variant
seen after a log transform (``−log I = L``), which is what a CR/DX reader does before its LUT.
Both variants therefore share the display mapping :func:`to_display` used for training.

Geometry: a :class:`CTRenderer` holds µ of the bone and soft-tissue voxels on a torch device. Per
sample it rotates the volume (small angles about X, Y, Z), resamples it (trilinear, ``grid_sample``)
on an axis-aligned grid with square detector pixels (the cranio-caudal axis is resampled so anatomy is
not squashed) and projects it with :func:`cxrdecomp.projector.parallel.line_integral_ap`. Because
resampling and projection are linear, ``L_total = L_bone + L_soft`` holds exactly (to float
rounding) for every sample. Left–right flips flip the projection (equivalent for a parallel beam);
bone-density scaling multiplies the bone µ by a factor.

Images are ``(Z, X)`` = rows head→feet, columns patient right→left (radiological display).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cxrdecomp.projector.parallel import line_integral_ap, mean_ap
from cxrdecomp.simulate import targets

BETA = 0.02
"""β of the paper's Eq. 3 (as published)."""


# --------------------------------------------------------------------------- intensity models
def drr_paper(mu_av: torch.Tensor, beta: float = BETA) -> torch.Tensor:
    """Paper Eq. 3: ``I_DRR = exp(β µ_av)``; ``µ_av`` in cm⁻¹ (Eq. 2). Bone bright, not normalised."""
    return torch.exp(beta * mu_av)


def drr_paper_from_hu(hu: torch.Tensor, beta: float = BETA, mu_water: float = targets.MU_WATER_PER_CM) -> torch.Tensor:
    """The paper's DRR of an axis-aligned ``(X, Y, Z)`` HU volume exactly as published (Eq. 1–3).

    ``µ`` from HU (§2.1), ``µ_av`` = mean over the N voxels of each AP ray (Eq. 2,
    :func:`cxrdecomp.projector.parallel.mean_ap`), ``exp(β µ_av)`` (Eq. 3). Returns ``(Z, X)``.
    """
    return drr_paper(mean_ap(targets.hu_to_mu(hu, mu_water)), beta)


def intensity_physical(L: torch.Tensor) -> torch.Tensor:
    """Beer–Lambert detector intensity ``I/I0 = exp(−L)`` of line integrals ``L`` (air bright)."""
    return torch.exp(-L)


def display_window(L: torch.Tensor, q_lo: float = 0.005, q_hi: float = 0.995) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image window ``(lo, hi)`` = quantiles of the line integrals ``L`` ``(B, 1, H, W)`` → ``(B, 1, 1, 1)`` each."""
    flat = L.flatten(1).float()
    if flat.shape[1] > 65536:  # quantile on a strided subsample: same result to < 0.1 %, much faster
        flat = flat[:, :: flat.shape[1] // 65536 + 1]
    q = torch.quantile(flat, torch.tensor([q_lo, q_hi], device=flat.device, dtype=flat.dtype), dim=1)
    lo, hi = q[0], q[1]
    hi = torch.maximum(hi, lo + 1e-6)
    return lo.view(-1, 1, 1, 1), hi.view(-1, 1, 1, 1)


def to_display(L: torch.Tensor, lo: torch.Tensor | float, hi: torch.Tensor | float) -> torch.Tensor:
    """Attenuation domain → display domain: the linear window ``(L − lo)/(hi − lo)`` (not clipped).

    Linear, so ``to_display(L_soft) + (L_bone / (hi − lo)) == to_display(L_total)``: the display-domain
    bone image of a pair is ``L_bone / (hi − lo)``. This is the "log" display of a radiograph
    (``−log I``), which real CR/DX images resemble before their tone curve (LUT).
    """
    return (L - lo) / (hi - lo)


# --------------------------------------------------------------------------- geometry
def rotation_matrix(rx_deg: float, ry_deg: float, rz_deg: float) -> np.ndarray:
    """``R = Rz · Ry · Rx`` for rotations (degrees) about the RAS X, Y and Z axes."""
    ax, ay, az = (math.radians(a) for a in (rx_deg, ry_deg, rz_deg))
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


@dataclass
class Sample:
    """One rendered training sample, attenuation domain.

    Attributes:
        total, bone, soft: ``(1, S, S)`` float32 line integrals (unitless, ≥ 0 for the paper's bone
            definition); ``total = bone + soft``.
        pixel_mm: detector pixel size (square) in mm.
        ray_length_cm: ``N Δy`` of every ray (for the paper's ``µ_av = L / ray_length_cm``).
        params: the variation parameters (rotations in degrees, flip, bone density).
    """

    total: torch.Tensor
    bone: torch.Tensor
    soft: torch.Tensor
    pixel_mm: float
    ray_length_cm: float
    params: dict[str, Any] = field(default_factory=dict)

    def stacked(self) -> np.ndarray:
        """``(3, S, S)`` float32 numpy array ``[total, bone, soft]`` (the on-disk format)."""
        return torch.cat([self.total, self.bone, self.soft]).detach().cpu().numpy().astype(np.float32)

    def paper_drr(self, beta: float = BETA) -> torch.Tensor:
        """The paper's DRR (Eq. 2–3) of this sample: ``exp(β · total / ray_length_cm)``, ``(1, S, S)``."""
        return drr_paper(self.total / self.ray_length_cm, beta)


class CTRenderer:
    """Render DRR / bone / soft-tissue line integrals of one CT (fast, torch, any device).

    Args:
        ct: a :class:`cxrdecomp.io.ct.CTVolume` (``(X, Y, Z)`` HU, RAS, spacing mm).
        mask: optional ``(X, Y, Z)`` bool bone mask; default :func:`targets.bone_mask` with ``bone``.
        bone: ``"auto"`` | ``"labels"`` | ``"hu"`` (see :func:`targets.bone_mask`).
        hu_window: bone HU window for ``bone="hu"`` (paper: 300–700).
        soft_fill_hu: ``None`` = paper (bone voxels −1024 HU in the soft-tissue volume), or a HU value
            (see :func:`targets.split_mu`).
        size: detector size S (square pixels), default 512.
        fov_mm: detector field of view (mm); default the larger of the CT's X and Z extents.
        ray_step_mm: sample spacing along each ray; default the CT's Y spacing.
        device: torch device the volume lives and is rendered on.
        max_points: resampling chunk size (points per ``grid_sample`` call; bounds memory).

    Raises:
        InputError: from :func:`targets.bone_mask`.
    """

    def __init__(
        self,
        ct,
        mask: np.ndarray | None = None,
        *,
        bone: str = "auto",
        hu_window: tuple[float, float] = targets.PAPER_BONE_HU,
        soft_fill_hu: float | None = None,
        size: int = 512,
        fov_mm: float | None = None,
        ray_step_mm: float | None = None,
        device: str | torch.device = "cpu",
        max_points: int = 8_000_000,
    ):
        self.device = torch.device(device)
        if mask is None:
            mask = targets.bone_mask(ct, method=bone, hu_window=hu_window)
        hu = torch.from_numpy(np.ascontiguousarray(ct.hu, dtype=np.float32)).to(self.device)
        m = torch.from_numpy(np.ascontiguousarray(mask)).to(self.device)
        mu_b, mu_s = targets.split_mu(hu, m, soft_fill_hu=soft_fill_hu)
        del hu, m
        self.vol = torch.stack([mu_b, mu_s])[None].contiguous()  # (1, 2, X, Y, Z)
        self.shape = tuple(ct.hu.shape)
        self.spacing = tuple(float(s) for s in ct.spacing)
        self.size = int(size)
        ext = [n * s for n, s in zip(self.shape, self.spacing)]
        self.fov_mm = float(fov_mm or max(ext[0], ext[2]))
        self.pixel_mm = self.fov_mm / self.size
        self.ray_step_mm = float(ray_step_mm or self.spacing[1])
        self.max_points = int(max_points)
        self.soft_fill_hu = soft_fill_hu

    @staticmethod
    def random_params(rng: np.random.Generator, max_rot_deg: float = 10.0, flip_p: float = 0.5, density: tuple[float, float] = (0.8, 1.2)) -> dict[str, Any]:
        """Draw per-sample variations: rotations ``U(±max_rot_deg)`` per axis, flip, bone density factor."""
        r = rng.uniform(-max_rot_deg, max_rot_deg, size=3)
        return {
            "rot_x": float(r[0]),
            "rot_y": float(r[1]),
            "rot_z": float(r[2]),
            "flip": bool(rng.random() < flip_p),
            "bone_density": float(rng.uniform(*density)),
        }

    @torch.no_grad()
    def render(self, rot_x: float = 0.0, rot_y: float = 0.0, rot_z: float = 0.0, flip: bool = False, bone_density: float = 1.0) -> Sample:
        """Render one sample (attenuation domain).

        Args:
            rot_x, rot_y, rot_z: volume rotation in degrees about the RAS axes (about the volume centre).
            flip: mirror left–right.
            bone_density: factor on the bone µ (bone-density variation).

        Returns:
            A :class:`Sample` with ``(1, S, S)`` line integrals on the renderer's device.
        """
        S = self.size
        dev = self.device
        nx, ny, nz = self.shape
        sx, sy, sz = self.spacing
        R = rotation_matrix(rot_x, rot_y, rot_z)
        half = np.array([nx * sx, ny * sy, nz * sz]) / 2.0
        # half-length of the rotated volume along the (output) Y axis → number of ray samples
        y_half = float(np.abs(R[1]) @ half)
        ny_out = max(2, int(math.ceil(2 * y_half / self.ray_step_mm)))
        step = self.ray_step_mm
        coords = torch.arange(S, device=dev, dtype=torch.float32)
        xs = (coords - (S - 1) / 2) * self.pixel_mm  # detector columns ↔ X (RAS), ascending
        zs = (coords - (S - 1) / 2) * self.pixel_mm  # detector rows ↔ Z, ascending (flipped by the projector)
        ys = (torch.arange(ny_out, device=dev, dtype=torch.float32) - (ny_out - 1) / 2) * step
        Rt = torch.tensor(R.T, dtype=torch.float32, device=dev)  # sample the source at R^T q
        # normalisation of grid_sample (align_corners=True): index-space half-extent in mm
        hn = torch.tensor([(nx - 1) / 2 * sx, (ny - 1) / 2 * sy, (nz - 1) / 2 * sz], device=dev, dtype=torch.float32)
        zc = max(1, self.max_points // (S * ny_out))
        parts = []
        for k0 in range(0, S, zc):
            z = zs[k0 : k0 + zc]
            X = xs.view(-1, 1, 1)
            Y = ys.view(1, -1, 1)
            Z = z.view(1, 1, -1)
            p = [Rt[i, 0] * X + Rt[i, 1] * Y + Rt[i, 2] * Z for i in range(3)]  # source mm, each (S, Ny, zc)
            grid = torch.stack([p[2] / hn[2], p[1] / hn[1], p[0] / hn[0]], dim=-1)[None]  # (1,S,Ny,zc,3) → (W,H,D)=(z,y,x)
            res = F.grid_sample(self.vol, grid, mode="bilinear", padding_mode="zeros", align_corners=True)[0]  # (2,S,Ny,zc)
            parts.append(line_integral_ap(res, step))  # (2, zc, S), rows flipped within the chunk
        img = torch.cat(parts[::-1], dim=-2)  # (2, S, S), superior at the top
        bone, soft = img[0:1] * bone_density, img[1:2]
        if flip:
            bone, soft = bone.flip(-1), soft.flip(-1)
        total = bone + soft
        params = {"rot_x": rot_x, "rot_y": rot_y, "rot_z": rot_z, "flip": bool(flip), "bone_density": bone_density}
        return Sample(total=total, bone=bone, soft=soft, pixel_mm=self.pixel_mm, ray_length_cm=ny_out * step / 10.0, params=params)


def render_ct(ct, size: int = 512, device: str = "cpu", **params) -> Sample:
    """Convenience: one sample of ``ct`` with default renderer settings (see :class:`CTRenderer`)."""
    return CTRenderer(ct, size=size, device=device).render(**params)
