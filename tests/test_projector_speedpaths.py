"""Fast paths of the axis-aligned parallel DRR give the same numbers as the plain reductions."""

from __future__ import annotations

import pytest
import torch

from cxrdecomp.projector.conebeam import PreparedVolume, forward_project
from cxrdecomp.projector.geometry import Detector, Pose
from cxrdecomp.projector.parallel import line_integral_ap, mean_ap, parallel_projection


@pytest.mark.parametrize("shape", [(20, 17, 9), (2, 20, 17, 9), (9, 17, 20)])
def test_plane_accumulation_equals_sum(shape):
    mu = torch.rand(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = mu.sum(-2).transpose(-1, -2).flip(-2).flip(-1) * 0.25
    assert torch.allclose(line_integral_ap(mu, 2.5), ref)
    assert torch.allclose(mean_ap(mu), ref / 0.25 / shape[-2])
    # the autograd path (plain sum) gives the same values and a gradient of Δy per voxel
    g = mu.clone().requires_grad_(True)
    line_integral_ap(g, 2.5).sum().backward()
    assert torch.allclose(g.grad, torch.full_like(mu, 0.25))


@pytest.mark.parametrize("shape", [(20, 17, 9), (9, 17, 20)])
def test_prepared_volume_pa_equals_raw(shape):
    mu = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    sp = (1.0, 2.0, 3.0)
    raw = parallel_projection(mu, sp)
    prep = parallel_projection(PreparedVolume(mu, sp), sp)
    assert prep.shape == raw.shape == (1, 1, shape[2], shape[0])
    assert torch.allclose(prep, raw, atol=1e-5)


def test_prepared_volume_oblique_parallel_matches_raw():
    mu = torch.rand(16, 12, 10, generator=torch.Generator().manual_seed(2))
    sp = (1.0, 1.0, 1.0)
    det = Detector(10, 16, (1.0, 1.0))
    pose = Pose.from_angles([10.0])
    a = parallel_projection(mu, sp, pose=pose, detector=det)
    b = parallel_projection(PreparedVolume(mu, sp), sp, pose=pose, detector=det)
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(a, forward_project(mu, pose, det, sp, parallel=True), atol=1e-6)
