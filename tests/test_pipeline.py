"""The realistic simulation pipeline: anatomy, detector physics, targets, reproducibility (analytic phantoms)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from _phantoms import chest_phantom, water_cylinder

from cxrdecomp.errors import ConfigError, InputError
from cxrdecomp.physics.materials import mass_attenuation
from cxrdecomp.simulate import anatomy as A
from cxrdecomp.simulate.detector import add_noise, add_scatter
from cxrdecomp.simulate.pipeline import (
    TARGETS,
    GeometryParams,
    PhysicsParams,
    SampleParams,
    Simulator,
    check_ct,
)
from cxrdecomp.simulate.processing import ProcessingParams

LINEAR = ProcessingParams(window=(0.0, 1.0))


def _plain(**physics) -> SampleParams:
    return SampleParams(geometry=GeometryParams(sdd_mm=1800.0), physics=PhysicsParams(**physics), processing=LINEAR)


@pytest.fixture(scope="module")
def chest_sim():
    return Simulator(chest_phantom(40, 2.5), size=48, method="joseph")


def test_monochromatic_water_cylinder_beer_lambert():
    """One energy line: −ln I on the central ray = µ/ρ(E) · ρ · chord (water cylinder, 40 mm diameter)."""
    sim = Simulator(water_cylinder(64, 1.0, 20.0), size=64, method="joseph", voxel_mm=1.0)
    out = sim.render(_plain(energy_kev=60.0))
    det, _, _ = sim.detector(GeometryParams(sdd_mm=1800.0))
    rho = 1.03  # DeepDRR's density at 0 HU
    expected = mass_attenuation("soft_tissue", [60.0])[0] * rho * 4.0  # 40 mm chord, in cm
    centre = out["log"][0, 31:33, 31:33].mean().item()
    assert centre == pytest.approx(expected, rel=0.01)
    assert det.magnification > 1


def test_polyenergetic_single_line_equals_monochromatic(chest_sim):
    mono = chest_sim.render(_plain(energy_kev=70.0))["log"]
    line = chest_sim.render(_plain(kvp=120.0, energy_kev=0.0))["log"]
    # a one-line "spectrum" built the other way: through the Spectrum class of the pipeline
    from cxrdecomp.simulate.ct2xray import Spectrum

    chest_sim._spectra[(120.0, 2.5)] = Spectrum([70.0], [1.0], materials=A.MATERIALS)
    forced = chest_sim.render(_plain(kvp=120.0))["log"]
    chest_sim._spectra.clear()
    assert torch.allclose(forced, mono, atol=1e-5)
    assert not torch.allclose(line, mono, atol=1e-3)  # a real spectrum hardens: differs from 70 keV


def test_scatter_conserves_stated_fraction():
    g = torch.Generator().manual_seed(0)
    primary = torch.rand(2, 1, 64, 64, generator=g) * 0.5 + 0.05
    field = torch.zeros(1, 1, 64, 64, dtype=torch.bool)
    field[..., 8:56, 4:60] = True
    for spr in (0.3, 1.0, 2.0):
        total = add_scatter(primary, spr, sigma_px=12.0, field=field)
        s = total - primary
        ratio = (s[0] * field[0]).sum() / (primary[0] * field[0]).sum()
        assert ratio.item() == pytest.approx(spr, rel=1e-5)
        assert (s[1] > 0).all()  # the bone-free row gets scatter of the same amplitude k
        gridded = add_scatter(primary, spr, sigma_px=12.0, field=field, grid=True) - primary
        assert (gridded[0] * field[0]).sum().item() == pytest.approx(0.2 * s[0][field[0]].sum().item(), rel=1e-5)
    with pytest.raises(InputError, match="scatter-to-primary ratio"):
        add_scatter(primary, -1.0, 10.0)


def test_noise_variance_matches_dose():
    g = torch.Generator().manual_seed(1)
    i = torch.full((1, 1, 256, 256), 0.25, dtype=torch.float64)
    for photons, sig_e in ((1e3, 0.0), (1e4, 0.0), (1e3, 10.0)):
        noisy = add_noise(i, photons, sig_e, generator=g)
        expected = 0.25 / photons + (sig_e / photons) ** 2
        assert noisy.var().item() == pytest.approx(expected, rel=0.03)
        assert noisy.mean().item() == pytest.approx(0.25, rel=0.01)
    with pytest.raises(InputError, match="photons"):
        add_noise(i, 0.0)


def test_deformation_positive_jacobian_and_reproducible():
    shape, sp = (40, 36, 30), (7.0, 7.0, 8.0)  # ~280 × 250 × 240 mm, like a chest
    for seed in range(6):
        p = A.AnatomyParams(field_seed=seed, displacement_mm=10.0, scale=(0.85, 1.15, 1.0))
        u = A.displacement_field(shape, sp, p.displacement_mm, p.control_points, seed)
        assert u.abs().max() <= 10.0 + 1e-5
        assert u.abs().max() > 3.0
        assert A.jacobian_determinant(u, sp, p.scale).min() > 0
        assert torch.equal(u, A.displacement_field(shape, sp, 10.0, p.control_points, seed))
    assert not torch.equal(A.displacement_field(shape, sp, 10.0, 6, 0), A.displacement_field(shape, sp, 10.0, 6, 1))
    # a folding field is detected: a strong field with a fine control grid has negative determinants
    fold = A.displacement_field(shape, sp, 40.0, 20, 0)
    assert A.jacobian_determinant(fold, sp).min() < 0


def test_vary_volume_identity_scaling_and_density():
    ct = chest_phantom(32, 3.0)
    av = A.prepare(ct)
    same = A.vary_volume(av, A.AnatomyParams())
    assert torch.equal(same, av.volume)
    dens = A.vary_volume(av, A.AnatomyParams(bone_density=tuple((g, 1.5) for g in A.GROUPS)))
    assert torch.allclose(dens[0], 1.5 * av.volume[0]) and torch.equal(dens[1], av.volume[1])
    wide = A.vary_volume(av, A.AnatomyParams(scale=(1.15, 1.0, 1.0)))
    body_x = lambda v: int(((v[1] + v[3]).sum(dim=(1, 2)) > 0).sum())
    assert body_x(wide) > body_x(av.volume)  # wider body along X
    assert torch.allclose(wide.sum(dim=(0, 2, 3))[16], av.volume.sum(dim=(0, 2, 3))[16], rtol=0.05)  # centre plane kept


@pytest.mark.parametrize("target", TARGETS)
def test_targets_bone_only_where_bone(target):
    """With pointwise processing and no spatial physics, rays that miss bone get bone = 0 exactly, for every target
    mode; this fails if the chain or the noise were fitted to each rendering separately."""
    sim = Simulator(chest_phantom(40, 2.5), size=48, method="joseph", target=target)
    pointwise = ProcessingParams(window=(0.01, 0.99), tone_center=0.45, tone_width=0.25, gamma=0.8, clahe_clip=0.01, bits=12)
    p = SampleParams(geometry=GeometryParams(sdd_mm=1500.0), physics=PhysicsParams(kvp=90.0, photons=2e4, noise_seed=3), processing=pointwise)
    out = sim.render(p)
    x, s, b, m = out["image"], out["soft_tissue"], out["bone"], out["t_bone"] > 0
    assert torch.allclose(x - b, s, atol=1e-5)
    assert (~m).sum() > 500 and b[~m].abs().max() < 1e-5
    assert b[m].mean() > 0.01  # bone brightens the radiograph
    assert x.std() > 0.05 and (x >= 0).all() and (x <= 1).all()


def test_air_target_removes_more_than_volume_replacement():
    ct = chest_phantom(40, 2.5)
    means = {}
    for target in ("volume", "air"):
        out = Simulator(ct, size=48, method="joseph", target=target).render(_plain(kvp=100.0))
        means[target] = out["bone"][out["bone_mask"] > 0].mean().item()
    assert means["air"] > means["volume"] > 0


def test_sample_reproducible_and_validation_bank_disjoint(chest_sim):
    a, b = chest_sim.sample(3, seed=5), chest_sim.sample(3, seed=5)
    assert a["params"] == b["params"] and torch.equal(a["image"], b["image"])
    assert chest_sim.sample_params(4, seed=5) != a["params"]
    assert SampleParams.from_dict(a["params"].to_dict()) == a["params"]  # JSON round trip
    train = {chest_sim.anatomy_params(i * chest_sim.anatomy_reuse, 0, "train").field_seed for i in range(200)}
    val = {chest_sim.anatomy_params(k, 0, "val").field_seed for k in range(chest_sim.n_val_anatomies)}
    assert len(val) == chest_sim.n_val_anatomies and not train & val
    assert chest_sim.anatomy_params(0, 0, "val") == chest_sim.anatomy_params(chest_sim.n_val_anatomies, 0, "val")  # a fixed bank
    with pytest.raises(ConfigError, match="split"):
        chest_sim.sample_params(0, split="test")


def test_ap_view_keeps_radiological_orientation():
    ct = chest_phantom(40, 2.5)
    hu = ct.hu.copy()
    hu[28:34, 14:26, 14:26] = 1200.0  # a dense block on one side (+X: the patient's right in RAS)
    ct = dataclasses.replace(ct, hu=hu)
    sim = Simulator(ct, size=48, method="joseph")
    pa = sim.render(SampleParams(geometry=GeometryParams(view="PA"), processing=LINEAR))["log"][0]
    ap = sim.render(SampleParams(geometry=GeometryParams(view="AP"), processing=LINEAR))["log"][0]
    half = lambda img: (img[:, :24].sum() - img[:, 24:].sum()).item()
    assert np.sign(half(pa)) == np.sign(half(ap)) != 0


def test_check_ct_refuses_bad_volumes():
    ct = chest_phantom(16, 4.0)
    bad = ct.hu.copy()
    bad[3, 3, 3] = np.nan
    with pytest.raises(InputError, match="NaN"):
        check_ct(dataclasses.replace(ct, hu=bad))
    with pytest.raises(InputError, match="3-D"):
        check_ct(dataclasses.replace(ct, hu=ct.hu[:, :, 0]))
    with pytest.raises(InputError, match="single slice"):
        check_ct(dataclasses.replace(ct, hu=ct.hu[:, :, :1]))
    check_ct(ct)


def test_nodule_and_fat_layer_thicknesses_are_analytic():
    """A nodule of diameter d adds f·1.03·d g/cm² of soft tissue on its central ray (a disc of area π(d/2)² on the
    detector) and removes the parenchyma it displaces; a fat layer ℓ adds 2ℓ of adipose tissue through the body."""
    h = w = 64
    pix = 2.0  # mm at the isocentre
    t = torch.zeros(1, 6, h, w, dtype=torch.float64)
    t[:, 1] = 10.0  # soft tissue g/cm² everywhere: all body
    t[:, 2, 8:56, 8:56] = 0.25 * 20.0  # 20 cm of lung at 0.25 g/cm³
    t[:, 5, 8:56, 8:56] = 20.0
    p = A.AnatomyParams(nodules=((0.5, 0.5, 40.0, 0.8),), fat_layer_mm=15.0)
    out, mask, mass = A.add_nodules(t, p, pix)
    r, c = torch.nonzero(mask[0, 0]).float().mean(0).round().long().tolist()
    assert mass[0, 0, r, c].item() == pytest.approx(0.8 * 1.03 * 4.0, rel=1e-3) and mass[0, 0][mask[0, 0] == 0].abs().max() == 0
    assert out[0, 1, r, c].item() == pytest.approx(10.0 + 0.8 * 1.03 * 4.0, rel=1e-3)  # 40 mm chord = 4 cm
    assert out[0, 2, r, c].item() == pytest.approx(5.0 - 0.25 * 4.0, rel=1e-3)
    assert mask.sum().item() == pytest.approx(math.pi * (20.0 / pix) ** 2, rel=0.05)
    assert torch.equal(out[0, 1][mask[0, 0] == 0], t[0, 1][mask[0, 0] == 0])
    fat = A.add_habitus(t, p, pix)
    assert torch.allclose(fat[:, 3], torch.full_like(fat[:, 3], 2 * 1.5 * 0.95))


def test_lung_xray_holds_the_inserted_nodules():
    """Lung paper §2.1: nodules are inserted into the lung, so its lung X-ray shows them brighter than the ring of
    parenchyma around them (the nodule-weighted loss of Eq. 5 needs that), and both the radiograph and the lung
    X-ray brighten where a nodule was inserted."""
    from cxrdecomp.simulate.lung import nodule_contrast

    sim = Simulator(chest_phantom(40, 2.5, labels=True), size=48, method="joseph")
    plain = _plain(kvp=90.0)
    out = sim.render(dataclasses.replace(plain, anatomy=A.AnatomyParams(nodules=((0.5, 0.3, 12.0, 1.0),))))
    ref = sim.render(plain)
    m = out["nodule_mask"][None]
    assert m.sum() > 5 and ref["nodule_mask"].sum() == 0
    assert float(nodule_contrast(out["lung"][None], m)) > 0.01
    inside = m[0] > 0.5
    assert (out["lung"] - ref["lung"])[inside].mean() > 0.01 and (out["image"] - ref["image"])[inside].mean() > 0.005
