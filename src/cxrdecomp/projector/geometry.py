"""Projection geometry: detector model, C-arm poses and rays (XraySyn Eq. 1–2).

Frames (all distances in mm):

* **World / volume frame**: RAS axes of the CT ``(X, Y, Z)`` array (X → patient right, Y → anterior,
  Z → superior) with the origin at the volume centre (the isocentre). A voxel with integer index
  ``q`` has its centre at ``p = (q − (N − 1)/2) · spacing``.
* **Canonical C-arm** (identity pose) is a PA chest view: the source sits posterior at
  ``(0, −sod, 0)``, the detector plane is perpendicular to Y at ``y = sdd − sod`` (anterior), detector
  columns run along −X (RAS +X points to the patient's right, so columns go from the patient's
  right to left: radiological display, as :func:`~cxrdecomp.projector.parallel.line_integral_ap`) and rows along −Z (head at the top).
  With unit magnification this matches :func:`cxrdecomp.projector.parallel.line_integral_ap`.
* **Pose** ``T = (R, t)`` moves the C-arm: every canonical point ``p`` goes to ``R p + t``. Moving the
  volume by a rigid transform ``M`` instead is the same as the C-arm pose ``M⁻¹``
  (:meth:`Pose.inverse`). XraySyn's azimuth/elevation (camera orbiting the patient) are
  ``R = R_z(azimuth) · R_x(elevation)``: azimuth turns about the patient's long (Z) axis, elevation tilts
  about the left–right (X) axis.

Reference: Peng et al., "XraySyn: Realistic View Synthesis From a Single Radiograph Through CT Priors",
AAAI 2021, Eq. 1–2 (camera model) and §3.1 (pose sampling ±18°).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from cxrdecomp.errors import InputError


@dataclass
class Detector:
    """A flat-panel detector and its source.

    Attributes:
        height: rows ``H``.
        width: columns ``W``.
        spacing: ``(row, column)`` pixel pitch in mm.
        sdd: source-to-detector distance in mm (ignored for parallel beam).
        sod: source-to-isocentre distance in mm (the volume centre lies on the central ray at this
            distance from the source for the identity pose).
        principal_point: ``(row, column)`` offset in mm of the principal point (foot of the
            perpendicular from the source) from the detector centre.
    """

    height: int = 256
    width: int = 256
    spacing: tuple[float, float] = (1.6, 1.6)
    sdd: float = 1020.0
    sod: float = 850.0
    principal_point: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise InputError(f"detector size must be positive, got {self.height}x{self.width}")
        if min(self.spacing) <= 0:
            raise InputError(f"detector pixel spacing must be positive, got {self.spacing}")
        if self.sdd <= 0 or self.sod <= 0 or self.sod >= self.sdd:
            raise InputError(f"need 0 < sod < sdd, got sod={self.sod} sdd={self.sdd}")

    @property
    def magnification(self) -> float:
        return self.sdd / self.sod

    @classmethod
    def covering(cls, extent_mm: float, size: int = 256, sdd: float = 1020.0, sod: float = 850.0) -> "Detector":
        """A square detector whose field of view at the isocentre is ``extent_mm`` wide."""
        pitch = extent_mm * (sdd / sod) / size
        return cls(size, size, (pitch, pitch), sdd, sod)

    def pixel_coords(self, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """``(u, v)`` of pixel centres in mm, each ``(H, W)``: u along columns, v along rows (down)."""
        r = (torch.arange(self.height, device=device, dtype=dtype) - (self.height - 1) / 2) * self.spacing[0]
        c = (torch.arange(self.width, device=device, dtype=dtype) - (self.width - 1) / 2) * self.spacing[1]
        v, u = torch.meshgrid(r - self.principal_point[0], c - self.principal_point[1], indexing="ij")
        return u, v


def _rot_x(a: torch.Tensor) -> torch.Tensor:
    c, s, o, z = torch.cos(a), torch.sin(a), torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([o, z, z, z, c, -s, z, s, c], -1).reshape(*a.shape, 3, 3)


def _rot_y(a: torch.Tensor) -> torch.Tensor:
    c, s, o, z = torch.cos(a), torch.sin(a), torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([c, z, s, z, o, z, -s, z, c], -1).reshape(*a.shape, 3, 3)


def _rot_z(a: torch.Tensor) -> torch.Tensor:
    c, s, o, z = torch.cos(a), torch.sin(a), torch.ones_like(a), torch.zeros_like(a)
    return torch.stack([c, -s, z, s, c, z, z, z, o], -1).reshape(*a.shape, 3, 3)


@dataclass
class Pose:
    """Batched rigid C-arm poses: ``rotation (B, 3, 3)``, ``translation (B, 3)`` in mm.

    Differentiable: build it from tensors with ``requires_grad`` to get gradients w.r.t. the pose.
    """

    rotation: torch.Tensor
    translation: torch.Tensor = field(default=None)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.rotation.ndim == 2:
            self.rotation = self.rotation[None]
        if self.rotation.shape[-2:] != (3, 3):
            raise InputError(f"rotation must be (B, 3, 3), got {tuple(self.rotation.shape)}")
        if self.translation is None:
            self.translation = self.rotation.new_zeros(self.rotation.shape[0], 3)
        if self.translation.ndim == 1:
            self.translation = self.translation[None].expand(self.rotation.shape[0], 3)

    def __len__(self) -> int:
        return self.rotation.shape[0]

    @classmethod
    def identity(cls, batch: int = 1, device=None, dtype=torch.float32) -> "Pose":
        return cls(torch.eye(3, device=device, dtype=dtype).expand(batch, 3, 3).clone())

    @classmethod
    def from_angles(
        cls,
        azimuth,
        elevation=0.0,
        roll=0.0,
        translation=None,
        degrees: bool = True,
        device=None,
        dtype=torch.float32,
    ) -> "Pose":
        """XraySyn-style pose ``R = R_z(azimuth) R_x(elevation) R_y(roll)`` (angles broadcast to ``B``).

        Args:
            azimuth: rotation about the patient's long axis Z (scalar, sequence or tensor).
            elevation: tilt about the left–right axis X.
            roll: in-plane rotation about the central ray (Y).
            translation: ``(3,)`` or ``(B, 3)`` C-arm shift in mm.
            degrees: angles in degrees (default) or radians.
        """
        az, el, ro = (torch.as_tensor(a, device=device, dtype=dtype) for a in (azimuth, elevation, roll))
        az, el, ro = torch.broadcast_tensors(az.reshape(-1), el.reshape(-1), ro.reshape(-1))
        if degrees:
            az, el, ro = az * (math.pi / 180), el * (math.pi / 180), ro * (math.pi / 180)
        rot = _rot_z(az) @ _rot_x(el) @ _rot_y(ro)
        t = None if translation is None else torch.as_tensor(translation, device=device, dtype=dtype)
        if t is not None and t.ndim == 1:
            t = t[None].expand(rot.shape[0], 3)
        return cls(rot, t)

    @classmethod
    def from_matrix(cls, matrix: torch.Tensor) -> "Pose":
        """From ``(B, 4, 4)`` or ``(4, 4)`` homogeneous C-arm transforms (mm)."""
        m = matrix if matrix.ndim == 3 else matrix[None]
        return cls(m[:, :3, :3], m[:, :3, 3])

    def inverse(self) -> "Pose":
        """The inverse transform (volume motion ↔ C-arm motion)."""
        rt = self.rotation.transpose(-1, -2)
        return Pose(rt, -(rt @ self.translation[..., None])[..., 0])

    def to(self, device=None, dtype=None) -> "Pose":
        return Pose(self.rotation.to(device=device, dtype=dtype), self.translation.to(device=device, dtype=dtype))

    def apply(self, p: torch.Tensor) -> torch.Tensor:
        """Apply to points ``(B, ..., 3)`` (canonical → world)."""
        shape = p.shape
        flat = p.reshape(shape[0], -1, 3)
        out = flat @ self.rotation.transpose(-1, -2) + self.translation[:, None, :]
        return out.reshape(shape)

    def rotate(self, v: torch.Tensor) -> torch.Tensor:
        shape = v.shape
        return (v.reshape(shape[0], -1, 3) @ self.rotation.transpose(-1, -2)).reshape(shape)


def cone_rays(detector: Detector, pose: Pose, device=None, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """World positions of the source ``(B, 3)`` and of the pixel centres ``(B, H, W, 3)`` in mm."""
    device = device if device is not None else pose.rotation.device
    pose = pose.to(device=device, dtype=dtype)
    b = len(pose)
    u, v = detector.pixel_coords(device, dtype)
    y = torch.full_like(u, detector.sdd - detector.sod)
    pix = torch.stack([-u, y, -v], -1)  # canonical: columns −X (RAS: toward patient left), rows −Z
    src = torch.tensor([0.0, -detector.sod, 0.0], device=device, dtype=dtype)
    return pose.apply(src.expand(b, 1, 3))[:, 0], pose.apply(pix.expand(b, *pix.shape))


def detector_frame(detector: Detector, pose: Pose, device=None, dtype=torch.float32, parallel: bool = False):
    """World ``(origin, e_col, e_row)`` of the detector: pixel (r, c) centre = origin + c·e_col + r·e_row.

    ``origin`` is the centre of pixel (0, 0); ``e_col`` / ``e_row`` are one pixel pitch long. ``(B, 3)`` each.
    For ``parallel`` the detector plane passes through the isocentre (distances unused).
    """
    device = device if device is not None else pose.rotation.device
    pose = pose.to(device=device, dtype=dtype)
    b = len(pose)
    du, dv = detector.spacing[1], detector.spacing[0]
    y0 = 0.0 if parallel else detector.sdd - detector.sod
    u0 = -(detector.width - 1) / 2 * du - detector.principal_point[1]
    v0 = -(detector.height - 1) / 2 * dv - detector.principal_point[0]
    o = torch.tensor([-u0, y0, -v0], device=device, dtype=dtype).expand(b, 1, 3)
    ec = torch.tensor([-du, 0.0, 0.0], device=device, dtype=dtype).expand(b, 1, 3)
    er = torch.tensor([0.0, 0.0, -dv], device=device, dtype=dtype).expand(b, 1, 3)
    return pose.apply(o)[:, 0], pose.rotate(ec)[:, 0], pose.rotate(er)[:, 0]


def random_poses(
    n: int,
    max_azimuth: float = 18.0,
    max_elevation: float = 18.0,
    generator: torch.Generator | None = None,
    device=None,
    dtype=torch.float32,
) -> Pose:
    """``n`` poses with azimuth/elevation uniform in ``±max`` degrees (XraySyn §3.1 samples ±18°)."""
    r = torch.rand(2, n, generator=generator) * 2 - 1
    return Pose.from_angles(r[0] * max_azimuth, r[1] * max_elevation, device=device, dtype=dtype)
