"""CT2Xray (XraySyn Eq. 3–6), beam hardening, virtual dual energy, reverse CT2Xray (Algorithm 1)."""

import pytest
import torch

from cxrdecomp.physics.materials import mass_attenuation
from cxrdecomp.projector.geometry import Detector, Pose
from cxrdecomp.simulate.ct2xray import (
    CT2Xray,
    Spectrum,
    add_poisson_noise,
    dual_energy,
    inverted_radiograph,
    log_image,
    polyenergetic_intensity,
    reverse_ct2xray,
)


def _phantom():
    hu = torch.full((24, 24, 16), -1000.0)
    hu[4:20, 4:20, 2:14] = 40.0  # soft tissue block
    hu[10:14, 8:16, 4:12] = 1200.0  # bone bar
    hu[5:9, 5:19, 3:13] = -850.0  # "lung"
    return hu


def test_polyenergetic_equals_monoenergetic_for_one_line():
    spec = Spectrum.mono(60.0)
    t = torch.rand(2, 3, 5, 5, dtype=torch.float64) * 10
    i = polyenergetic_intensity(t, spec)
    mu = torch.tensor([mass_attenuation(m, [60.0])[0] for m in ("bone", "soft_tissue", "lung")], dtype=torch.float64)
    ref = torch.exp(-(t * mu.view(1, 3, 1, 1)).sum(1, keepdim=True))
    assert torch.allclose(i, ref, rtol=1e-12)


def test_beam_hardening_at_120kvp():
    spec = Spectrum.tube(120.0, 2.5)
    t = torch.zeros(1, 3, 1, 6, dtype=torch.float64)
    t[0, 1, 0] = torch.tensor([0.5, 2, 5, 10, 20, 30])  # g/cm² soft tissue
    mu_eff = log_image(polyenergetic_intensity(t, spec))[0, 0, 0] / t[0, 1, 0]
    assert (mu_eff[1:] < mu_eff[:-1]).all()  # effective µ falls with thickness
    assert mu_eff[0] / mu_eff[-1] > 1.05


def test_ct2xray_render_and_targets():
    det = Detector(20, 20, (2.5, 2.5), sdd=1000, sod=800)
    sim = CT2Xray(_phantom(), (2.0, 2.0, 2.5), det, spectrum=Spectrum.tube(120.0, 2.5, bin_kev=5.0))
    out = sim(Pose.from_angles([0.0, 10.0]))
    assert out["thickness"].shape == (2, 4, 20, 20)
    assert out["log"].shape == out["soft_log"].shape == (2, 1, 20, 20)
    assert (out["log"] >= -1e-6).all()
    assert (out["soft_log"] <= out["log"] + 1e-6).all()  # bone → tissue attenuates less
    assert torch.allclose(out["inverted"], inverted_radiograph(out["intensity"]))
    # thickness of a bone column: density·length; length channel = mask projection (cm)
    t = out["thickness"][0]
    assert t[0].max() > 0 and t[3].max() == pytest.approx(float(t[0].max()) / 1.7, rel=0.2)


def test_poisson_noise_statistics():
    g = torch.Generator().manual_seed(0)
    i = torch.full((1, 1, 64, 64), 0.25)
    n = add_poisson_noise(i, 1e4, generator=g)
    assert n.mean().item() == pytest.approx(0.25, rel=0.01)
    assert n.std().item() == pytest.approx((0.25 / 1e4) ** 0.5, rel=0.1)


def test_dual_energy_cancels_bone_and_sums():
    low, high = Spectrum.mono(50.0), Spectrum.mono(110.0)
    t = torch.zeros(1, 3, 2, 4, dtype=torch.float64)
    t[0, 1] = 10.0  # soft tissue everywhere
    t[0, 0, :, 2:] = 2.0  # bone in the right half
    d = dual_energy(t, low, high)
    assert torch.allclose(d["soft_tissue"] + d["bone"], d["high"])
    # monoenergetic: soft-tissue image is bone-free and equals µ_s(high)·t_s
    assert torch.allclose(d["soft_tissue"][..., :2], d["soft_tissue"][..., 2:], rtol=1e-9)
    assert float(d["bone"][..., :2].abs().max()) < 1e-9 and float(d["bone"][..., 2:].min()) > 0.1
    # polyenergetic: residual bone signal in the soft image stays small (beam hardening)
    dp = dual_energy(t, Spectrum.tube(60.0), Spectrum.tube(120.0))
    leak = (dp["soft_tissue"][..., 2:] - dp["soft_tissue"][..., :2]).abs().max() / dp["bone"][..., 2:].abs().max()
    assert leak < 0.2


def test_reverse_ct2xray_reproduces_input():
    spec = Spectrum.tube(120.0, 2.5, bin_kev=5.0)
    t = torch.zeros(1, 3, 4, 4, dtype=torch.float64)
    t[0, 1] = torch.linspace(5, 20, 16).view(4, 4)
    t[0, 0] = torch.linspace(0, 3, 16).view(4, 4)
    i = polyenergetic_intensity(t, spec)
    r = reverse_ct2xray(i, t[:, :1], t[:, 1:2] * 0.7, spec)  # wrong tissue estimate on purpose
    assert float(r["residual"].abs().max()) < 1e-10
    assert torch.allclose(r["tissue"], t[:, 1:2], rtol=1e-6)  # the exact tissue is recovered
    assert (r["bone_suppressed"] >= i - 1e-12).all()
