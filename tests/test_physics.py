"""Physics: HU→density, NIST µ/ρ through xraylib, material segmentation, SpekPy spectra."""

import numpy as np
import pytest
import torch

from cxrdecomp.errors import InputError
from cxrdecomp.physics.materials import (
    NIST_NAMES,
    hu_to_density,
    mass_attenuation,
    material_volume,
    mu_volume,
    segment_materials,
)
from cxrdecomp.physics.spectra import mean_energy, monoenergetic, spectrum


def test_hu_to_density_known_points():
    d = hu_to_density(np.array([-1000.0, 0.0, 1000.0, -2000.0]))
    assert d[0] == pytest.approx(0.001, abs=1e-3)  # air
    assert d[1] == pytest.approx(1.03)  # soft tissue
    assert d[2] == pytest.approx(1.6186, abs=1e-3)  # bone line 0.0005886·HU + 1.03
    assert d[3] == 0.0
    t = hu_to_density(torch.tensor([0.0, 1000.0]))
    assert torch.allclose(t, torch.tensor([1.03, 1.6186]), atol=1e-3)


def test_nist_names_exist_in_xraylib():
    import xraylib

    nist = set(xraylib.GetCompoundDataNISTList())
    assert set(NIST_NAMES.values()) <= nist


def test_mass_attenuation_known_values():
    # NIST XCOM water at 60 keV: µ/ρ = 0.2059 cm²/g; cortical bone at 60 keV ≈ 0.31
    assert mass_attenuation("water", [60.0])[0] == pytest.approx(0.2059, rel=0.02)
    assert mass_attenuation("bone", [60.0])[0] == pytest.approx(0.31, rel=0.05)
    mu = mass_attenuation("soft_tissue", [30.0, 60.0, 100.0])
    assert mu[0] > mu[1] > mu[2]
    with pytest.raises(InputError):
        mass_attenuation("water", [0.1])


def test_segmentation_labels_and_hu():
    hu = torch.tensor([[[-900.0, 40.0, 700.0, 200.0]]])
    m = segment_materials(hu)
    assert m["lung"].tolist() == [[[True, False, False, False]]]
    assert m["bone"].tolist() == [[[False, False, True, False]]]
    labels = np.array([[[10, 0, 0, 5]]])
    m2 = segment_materials(hu, labels, {10: "lung_upper_lobe_left", 5: "rib_left_3"})
    assert m2["bone"].tolist() == [[[False, False, False, True]]]  # labels win over HU
    assert m2["soft_tissue"].tolist() == [[[False, True, True, False]]]
    total = m2["bone"].int() + m2["lung"].int() + m2["soft_tissue"].int()
    assert (total == 1).all()


def test_material_volume_channels():
    hu = torch.full((4, 4, 4), 40.0)
    hu[0] = 1000.0
    v = material_volume(hu)
    assert v.shape == (4, 4, 4, 4)
    assert torch.allclose(v[0, 0], torch.full((4, 4), 1.6186), atol=1e-3)
    assert (v[3, 0] == 1).all() and (v[3, 1:] == 0).all()
    mu = mu_volume(hu, 60.0)
    assert mu[1, 0, 0] == pytest.approx(float(hu_to_density(torch.tensor(40.0))) * mass_attenuation("soft_tissue", [60.0])[0], rel=1e-5)


def test_spectrum_120kvp():
    e, w = spectrum(120, 2.5, kind="fluence")
    assert w.sum() == pytest.approx(1.0)
    assert e.max() <= 120 and e.min() >= 1
    assert 50 < mean_energy((e, w)) < 70  # 120 kVp, 2.5 mm Al: mean ≈ 56–60 keV
    e2, w2 = spectrum(120, 2.5, kind="energy")
    assert mean_energy((e2, w2)) > mean_energy((e, w))
    assert mean_energy(spectrum(70, 2.5)) < mean_energy(spectrum(120, 2.5))
    assert monoenergetic(60)[1].tolist() == [1.0]
    with pytest.raises(InputError):
        spectrum(200)
