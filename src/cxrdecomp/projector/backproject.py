"""Single-view backprojector BP(I, T) (XraySyn Eq. 7).

Each voxel takes the value of the detector ray that passes through it, divided by that ray's length
through the volume, so that projecting the result along the same view returns the image:
``FP(BP(I, T), T) ≈ I`` (exact for rays through pixel centres up to the bilinear interpolation of ``I``
between neighbouring rays). Used by XraySyn to lift a radiograph (or per-material thickness maps) into
a volume along its rays before 3-D refinement.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cxrdecomp.errors import InputError
from cxrdecomp.projector.conebeam import PreparedVolume, forward_project
from cxrdecomp.projector.geometry import Detector, Pose, detector_frame


def backproject(
    image: torch.Tensor,
    pose: Pose,
    detector: Detector,
    shape: tuple[int, int, int],
    spacing,
    *,
    parallel: bool = False,
    method: str = "joseph",
    normalize: bool = True,
    chunk_slices: int = 32,
) -> torch.Tensor:
    """Place a radiograph into a volume along its rays (XraySyn Eq. 7).

    Args:
        image: ``(B, C, H, W)`` attenuation-domain image (line integrals) for ``B`` poses.
        pose: ``B`` poses (:class:`Pose`), as used by the forward projector.
        detector: the detector that recorded ``image``.
        shape: volume shape ``(X, Y, Z)``.
        spacing: voxel size ``(sx, sy, sz)`` mm.
        parallel: parallel-beam geometry.
        method: forward projector used for the ray lengths ``L = FP(1)`` (use the one you will project with).
        normalize: divide by ``L`` so that ``FP(BP(I)) = I`` (otherwise plain smearing ``V = I``).
        chunk_slices: X-slices processed at once (memory bound).

    Returns:
        ``(B, C, X, Y, Z)`` volume (units of ``image`` per cm).

    Raises:
        InputError: image shape not matching the detector or pose batch.
    """
    if image.ndim != 4 or image.shape[-2:] != (detector.height, detector.width) or image.shape[0] != len(pose):
        raise InputError(
            f"image must be (B, C, {detector.height}, {detector.width}) with B = {len(pose)} poses, got {tuple(image.shape)}"
        )
    dev, dt = image.device, image.dtype
    pose = pose.to(dev, dt)
    b, c = image.shape[:2]
    src_img = image
    if normalize:
        ones = PreparedVolume(torch.ones(shape, device=dev, dtype=dt), spacing)
        length = forward_project(ones, pose, detector, parallel=parallel, method=method)  # (B, 1, H, W) cm
        # rays that graze the volume (chord under one voxel) would put I / L ≫ the interior values into the voxels
        # their neighbours cross; their chord is taken as at least one voxel (FP∘BP = I then holds wherever L ≥ a voxel)
        floor = min(float(s) for s in spacing) / 10.0  # one voxel in cm
        src_img = torch.where(length > 1e-6, image / length.clamp(min=floor), torch.zeros_like(image))
    o, ec, er = detector_frame(detector, pose, dev, dt, parallel=parallel)
    nrm = torch.cross(ec, er, dim=-1)
    sp = torch.tensor(spacing, device=dev, dtype=dt)
    n = torch.tensor(shape, device=dev, dtype=dt)
    axes = [(torch.arange(int(k), device=dev, dtype=dt) - (n[i] - 1) / 2) * sp[i] for i, k in enumerate(shape)]
    if parallel:
        d = pose.rotate(torch.tensor([0.0, 1.0, 0.0], device=dev, dtype=dt).expand(b, 1, 3))[:, 0]
    else:
        src = pose.apply(torch.tensor([0.0, -detector.sod, 0.0], device=dev, dtype=dt).expand(b, 1, 3))[:, 0]
    out = []
    for x0 in range(0, shape[0], chunk_slices):
        xs = axes[0][x0 : x0 + chunk_slices]
        P = torch.stack(torch.meshgrid(xs, axes[1], axes[2], indexing="ij"), -1)  # (x, Y, Z, 3)
        P = P[None].expand(b, *P.shape)
        bb = (slice(None),) + (None,) * 3
        if parallel:
            dd = d[bb]
            t = ((o[bb] - P) * nrm[bb]).sum(-1) / (dd * nrm[bb]).sum(-1)
        else:
            dd = P - src[bb]
            t = ((o[bb] - src[bb]) * nrm[bb]).sum(-1) / (dd * nrm[bb]).sum(-1)
            P = src[bb].expand_as(P)
        hit = P + t[..., None] * dd - o[bb]
        col = (hit * ec[bb]).sum(-1) / (ec * ec).sum(-1)[bb]
        row = (hit * er[bb]).sum(-1) / (er * er).sum(-1)[bb]
        gx = 2 * col / max(detector.width - 1, 1) - 1
        gy = 2 * row / max(detector.height - 1, 1) - 1
        grid = torch.stack([gx, gy], -1).reshape(b, -1, shape[2], 2)
        v = F.grid_sample(src_img, grid, mode="bilinear", padding_mode="border", align_corners=True)
        m = 1.5  # voxels whose footprint still overlaps the detector keep the border value
        inside = (col >= -m) & (col <= detector.width - 1 + m) & (row >= -m) & (row <= detector.height - 1 + m) & ((t > 0) | parallel)
        v = v * inside.reshape(b, 1, -1, shape[2]).to(v.dtype)
        out.append(v.reshape(b, c, -1, shape[1], shape[2]))
    return torch.cat(out, 2)
