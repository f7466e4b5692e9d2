"""Projector accuracy and properties: analytic phantoms, cone→parallel limit, gradcheck, FP∘BP, errors."""


import pytest
import torch

from cxrdecomp.errors import InputError
from cxrdecomp.projector.backproject import backproject
from cxrdecomp.projector.conebeam import PreparedVolume, forward_project
from cxrdecomp.projector.geometry import Detector, Pose, cone_rays, detector_frame
from cxrdecomp.projector.parallel import line_integral_ap, parallel_projection

torch.set_num_threads(1)
METHODS = ["joseph", "shearwarp", "trilinear"]


def _grid(shape, spacing):
    ax = [(torch.arange(n, dtype=torch.float64) - (n - 1) / 2) * s for n, s in zip(shape, spacing)]
    return torch.meshgrid(*ax, indexing="ij")


def _smooth_ball(shape, spacing, centre, radius):
    """µ(r) = (1 − r²/R²)² inside the ball; its line integral at impact distance p is (16/15)·L·A²."""
    x, y, z = _grid(shape, spacing)
    r2 = ((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2) / radius**2
    return ((1 - r2).clamp(min=0) ** 2).float()


def _ball_analytic(src, d, centre, radius):
    d = d / d.norm(dim=-1, keepdim=True)
    oc = src - torch.tensor(centre, dtype=src.dtype)
    b = (d * oc).sum(-1)
    p2 = ((oc * oc).sum(-1) - b * b).clamp(min=0)
    L = (radius**2 - p2).clamp(min=0).sqrt()
    a = L**2 / radius**2
    return 16 / 15 * L * a**2 / 10.0  # cm


def _cone(det, pose):
    src, pix = cone_rays(det, pose)
    return src[:, None, None].expand_as(pix), pix - src[:, None, None]


def _parallel_rays(det, pose):
    o, ec, er = detector_frame(det, pose, parallel=True)
    r = torch.arange(det.height, dtype=torch.float32)
    c = torch.arange(det.width, dtype=torch.float32)
    pix = o[:, None, None] + c[None, None, :, None] * ec[:, None, None] + r[None, :, None, None] * er[:, None, None]
    d = pose.rotate(torch.tensor([0.0, 1.0, 0.0]).expand(len(pose), 1, 3))[:, 0]
    return pix, d[:, None, None].expand_as(pix)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("parallel", [False, True])
def test_smooth_ball_off_centre_oblique(method, parallel):
    shape, spacing = (64, 72, 48), (1.5, 1.25, 2.0)
    centre, radius = (6.0, -5.0, 4.0), 30.0
    vol = _smooth_ball(shape, spacing, centre, radius)
    det = Detector(40, 40, (2.5, 2.5), sdd=1000, sod=700)
    pose = Pose.from_angles([0.0, 15.0, -17.0], [0.0, -10.0, 12.0])
    img = forward_project(vol, pose, det, spacing, parallel=parallel, method=method, n_samples=256, oversample=2.0)[:, 0]
    o, d = (_parallel_rays if parallel else _cone)(det, pose)
    ref = _ball_analytic(o.double(), d.double(), centre, radius).float()
    m = ref > 0.3 * ref.max()  # rays well inside the ball (its voxelisation dominates at the silhouette)
    assert m.sum() > 200
    err = ((img - ref).abs() / ref)[m]
    assert err.max() < 0.005, err.max()


@pytest.mark.parametrize("method", METHODS)
def test_uniform_box_oblique(method):
    shape, spacing = (60, 60, 40), (1.0, 1.0, 1.5)
    x, y, z = _grid(shape, spacing)
    lo, hi = torch.tensor([-14.0, -10.0, -12.0]), torch.tensor([9.0, 15.0, 7.5])  # faces on voxel boundaries
    vol = ((x > lo[0]) & (x < hi[0]) & (y > lo[1]) & (y < hi[1]) & (z > lo[2]) & (z < hi[2])).float() * 0.3
    det = Detector(32, 32, (2.0, 2.0), sdd=1000, sod=700)
    pose = Pose.from_angles([10.0], [-7.0])
    img = forward_project(vol, pose, det, spacing, method=method, n_samples=256, oversample=2.0)[:, 0]
    src, d = _cone(det, pose)
    src, d = src.double(), d.double()
    t0, t1 = (lo.double() - src) / d, (hi.double() - src) / d
    length = (torch.minimum(t0, t1).amax(-1) - torch.maximum(t0, t1).amin(-1)).neg().clamp(min=0) * d.norm(dim=-1)
    ref = (length * 0.3 / 10).float()
    # rays that cross the box away from its edges (whose voxelisation is a half-voxel ramp)
    m = -torch.nn.functional.max_pool2d(-(ref > 0.8 * ref.max()).float()[None], 5, 1, 2)[0] > 0
    err = ((img - ref).abs() / ref)[m]
    assert m.sum() > 50 and err.max() < 0.005, err.max()


@pytest.mark.parametrize("method", ["joseph", "shearwarp"])
def test_smooth_cylinder_azimuth(method):
    shape, spacing = (64, 64, 40), (1.5, 1.5, 3.0)
    x, y, z = _grid(shape, spacing)
    R = 35.0
    vol = ((1 - ((x - 5) ** 2 + (y + 3) ** 2) / R**2).clamp(min=0) ** 2).float()
    det = Detector(24, 40, (2.0, 2.5), sdd=1000, sod=700)
    pose = Pose.from_angles([0.0, 25.0], [0.0, 0.0])
    img = forward_project(vol, pose, det, spacing, method=method, oversample=2.0)[:, 0]
    src, d = _cone(det, pose)
    src, d = src.double(), d.double()
    dxy = d[..., :2]
    ref = _ball_analytic(
        torch.cat([src[..., :2], torch.zeros_like(src[..., :1])], -1),
        torch.cat([dxy, torch.zeros_like(d[..., :1])], -1),
        (5.0, -3.0, 0.0),
        R,
    ) * (d.norm(dim=-1) / dxy.norm(dim=-1))
    m = ref > 0.2 * ref.max()
    err = ((img - ref.float()).abs() / ref.float())[m]
    assert err.max() < 0.005, err.max()


def test_parallel_identity_is_the_ap_line_integral():
    """PA projection of point and line phantoms: value µ·Δy (cm) at the radiological-display pixel (top row =
    superior, left column = patient right), through the tensor and the PreparedVolume paths; the ray-marching
    methods on the voxel-grid detector agree with it on a random volume."""
    sp = (1.0, 2.0, 3.0)
    pts = torch.zeros(20, 24, 16)
    pts[3, 5, 11] = 2.0  # one voxel
    pts[7, :, 2] = 0.5  # a full anterior-posterior line
    want = torch.zeros(16, 20)
    want[16 - 1 - 11, 20 - 1 - 3] = 2.0 * 0.2
    want[16 - 1 - 2, 20 - 1 - 7] = 0.5 * 24 * 0.2
    assert torch.allclose(parallel_projection(pts, sp)[0, 0], want)
    assert torch.allclose(line_integral_ap(pts, sp[1]), want)
    assert torch.allclose(parallel_projection(PreparedVolume(pts, sp), sp)[0, 0], want)
    mu = torch.rand(20, 24, 16)
    a = parallel_projection(mu, sp)
    det = Detector(16, 20, (3.0, 1.0))
    for m in METHODS:
        b = parallel_projection(mu, sp, pose=Pose.identity(), detector=det, method=m, n_samples=2000)
        assert torch.allclose(a, b, atol=1e-4 if m != "trilinear" else 2e-3), m


def test_cone_tends_to_parallel():
    shape, sp = (32, 32, 24), (2.0, 2.0, 2.5)
    vol = _smooth_ball(shape, sp, (3.0, 2.0, -4.0), 25.0)
    pose = Pose.from_angles([12.0], [-6.0])
    par = forward_project(vol, pose, Detector(24, 24, (2.5, 2.5)), sp, parallel=True, method="joseph")
    errs = []
    for sod in [500.0, 5000.0, 50000.0]:
        det = Detector(24, 24, (2.5 * 1.0005, 2.5 * 1.0005), sdd=sod * 1.0005, sod=sod)  # unit magnification at iso
        cone = forward_project(vol, pose, det, sp, method="joseph")
        errs.append(float((cone - par).abs().max() / par.max()))
    assert errs[0] > errs[1] > errs[2] and errs[2] < 2e-3, errs


def test_methods_agree_on_random_volume():
    torch.manual_seed(0)
    vol = torch.rand(2, 24, 28, 20)
    det = Detector(20, 20, (2.0, 2.0), sdd=900, sod=600)
    pose = Pose.from_angles([0.0, 9.0], [5.0, -3.0])
    j = forward_project(vol, pose, det, (1.5, 1.5, 2.0), method="joseph")
    s = forward_project(vol, pose, det, (1.5, 1.5, 2.0), method="shearwarp", oversample=2.0)
    assert j.shape == (2, 2, 20, 20)
    assert float((j - s).abs().mean() / j.abs().mean()) < 0.02


@pytest.mark.parametrize("method", ["joseph", "shearwarp", "trilinear"])
def test_gradcheck_volume(method):
    torch.manual_seed(1)
    vol = torch.rand(5, 6, 4, dtype=torch.float64, requires_grad=True)
    det = Detector(3, 4, (4.0, 4.0), sdd=500, sod=300)
    pose = Pose.from_angles([7.0], [4.0], dtype=torch.float64)
    f = lambda v: forward_project(v, pose, det, (3.0, 3.0, 4.0), method=method, n_samples=16)
    assert torch.autograd.gradcheck(f, (vol,), eps=1e-6, atol=1e-6)


def test_gradcheck_pose_joseph():
    torch.manual_seed(2)
    vol = torch.rand(6, 6, 5, dtype=torch.float64)
    det = Detector(3, 3, (4.0, 4.0), sdd=500, sod=300)
    ang = torch.tensor([7.3, 4.1], dtype=torch.float64, requires_grad=True)
    f = lambda a: forward_project(vol, Pose.from_angles(a[0], a[1], dtype=torch.float64), det, (3.0, 3.0, 4.0), method="joseph")
    assert torch.autograd.gradcheck(f, (ang,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("parallel", [False, True])
@pytest.mark.parametrize("method", ["joseph", "shearwarp"])
def test_fp_bp_identity(parallel, method):
    shape, sp = (48, 48, 40), (2.0, 2.0, 2.5)
    det = Detector(24, 24, (3.0, 3.0), sdd=1000, sod=600)
    pose = Pose.from_angles([0.0, 12.0], [0.0, -8.0])
    r, c = torch.meshgrid(torch.linspace(-1, 1, 24), torch.linspace(-1, 1, 24), indexing="ij")
    img = (1 + torch.exp(-(r**2 + c**2) / 0.3))[None, None].repeat(2, 1, 1, 1)
    vol = backproject(img, pose, det, shape, sp, parallel=parallel, method=method)
    assert vol.shape == (2, 1, *shape)
    for i in range(2):
        back = forward_project(vol[i], Pose(pose.rotation[i : i + 1]), det, sp, parallel=parallel, method=method)
        rel = (back[0] - img[i]).abs() / img[i]
        assert rel.mean() < 0.01 and rel.max() < 0.05, (rel.mean(), rel.max())


def test_prepared_volume_and_batch_consistency():
    vol = torch.rand(16, 20, 12)
    pv = PreparedVolume(vol, (2.0, 2.0, 3.0))
    det = Detector(12, 12, (3.0, 3.0), sdd=800, sod=500)
    pose = Pose.from_angles([0.0, 10.0, -15.0], [3.0, 0.0, 5.0])
    batch = forward_project(pv, pose, det)
    for i in range(3):
        one = forward_project(vol, Pose(pose.rotation[i : i + 1]), det, (2.0, 2.0, 3.0))
        assert torch.allclose(batch[i], one[0], atol=1e-5)


def test_errors():
    det = Detector(4, 4, (1.0, 1.0), sdd=100, sod=50)
    with pytest.raises(InputError, match=r"volume must be \(X, Y, Z\) or \(C, X, Y, Z\), got shape \(2, 3\)"):
        forward_project(torch.rand(2, 3), Pose.identity(), det, (1, 1, 1))
    with pytest.raises(InputError, match="unknown projector method 'siddon'"):
        forward_project(torch.rand(4, 4, 4), Pose.identity(), det, (1, 1, 1), method="siddon")
    with pytest.raises(InputError, match="source lies inside the volume; increase sod"):  # source inside a 200 mm volume
        forward_project(torch.rand(100, 100, 4), Pose.identity(), det, (2, 2, 2))
    with pytest.raises(InputError, match="need 0 < sod < sdd, got sod=150"):
        Detector(4, 4, (1.0, 1.0), sdd=100, sod=150)
    with pytest.raises(InputError, match=r"image must be \(B, C, 4, 4\) with B = 1 poses, got \(1, 1, 3, 3\)"):
        backproject(torch.rand(1, 1, 3, 3), Pose.identity(), det, (4, 4, 4), (1, 1, 1))
