"""XraySyn as a method: scene, samples of the deformation bank, the 3DPN's training, predictor, view sweep, CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from _phantoms import chest_phantom
from cxrdecomp.methods.xraysyn.losses import PriorWeights, prior_loss, xray_loss
from cxrdecomp.methods.xraysyn.network import XraySyn
from cxrdecomp.methods.xraysyn.scene import Scene, SceneConfig, calibrate
from cxrdecomp.physics.materials import hu_from_density, hu_to_density

SMALL_PRIOR = {"levels": 2, "channels": [4, 8]}


def _scene(n: int = 16, cube: float = 96.0) -> SceneConfig:
    return SceneConfig(volume_size=n, cube_mm=cube, render_size=2 * n, view_size=n, sdd_mm=1000.0, sod_mm=800.0)


@pytest.fixture(scope="module")
def bank():
    from cxrdecomp.methods.xraysyn.data import DeformationBank, fit_cube

    ct = chest_phantom(48, 2.0, labels=True)
    cfg = _scene(16, fit_cube(ct))
    return DeformationBank(ct, cfg, n_val_anatomies=2, anatomy_reuse=1)


def test_hu_from_density_inverts_hu_to_density():
    hu = torch.linspace(-1000, 3000, 401)
    assert torch.allclose(hu_from_density(hu_to_density(hu)), hu, atol=1e-2)


def test_calibrate_sends_the_quantiles_to_the_training_range():
    cfg = SceneConfig(calibration=(0.5, 3.0))
    x = torch.rand(2, 1, 32, 32) * torch.tensor([1.0, 0.5]).view(2, 1, 1, 1) + torch.tensor([0.0, 0.2]).view(2, 1, 1, 1)
    a, b = calibrate(x, cfg)
    L = a * x + b
    for i in range(2):
        q = torch.quantile(L[i].flatten(), torch.tensor([0.02, 0.98]))
        assert torch.allclose(q, torch.tensor([0.5, 3.0]), atol=1e-4)
    assert (a > 0).all()


def test_samples_are_repeatable_and_validation_anatomies_held_out(bank):
    from cxrdecomp.methods.xraysyn.data import XraySynSamples

    tr, va = XraySynSamples(bank, 8, "train"), XraySynSamples(bank, 4, "val")
    s1, s2 = tr[3], tr[3]
    assert torch.equal(s1["bp"], s2["bp"]) and torch.equal(s1["log"], s2["log"])
    assert s1["bp"].shape == (1, 16, 16, 16) and s1["log"].shape == (2, 1, 16, 16) and s1["thickness"].shape == (2, 2, 16, 16)
    assert (s1["angles"].abs() <= 18).all() and not torch.equal(s1["angles"][0], s1["angles"][1])
    train_keys = {bank.anatomy(i, "train").volume_key() for i in range(16)}
    assert not train_keys & {bank.anatomy(i, "val").volume_key() for i in range(2)}
    assert not torch.equal(tr[0]["hu"], tr[1]["hu"])  # a new anatomy every sample (anatomy_reuse=1)
    # the input radiograph is CT2Xray of the sample's own volume at T: the bone channel sees the phantom's spine
    assert float(s1["thickness"][0, 0].max()) > 0.5 and float(s1["log"].max()) > 1.0


def test_ground_truth_as_prediction_gives_zero_losses(bank):
    """Oracle: the ground-truth volume as the 3DPN's output makes L_CT and both x-ray losses exactly 0, and a wrong
    bone HU makes them positive."""
    from cxrdecomp.methods.xraysyn.data import XraySynSamples

    it = XraySynSamples(bank, 4, "train")[1]
    model = XraySyn(SMALL_PRIOR, None, bank.config.to_json())
    hu, m = it["hu"][None], it["mask"][None]

    def losses(bone_hu):
        pred = {"volume": m * bone_hu + (1 - m) * hu, "mask_logit": torch.logit(m.clamp(1e-6, 1 - 1e-6)), "mask": m, "bone": bone_hu, "tissue": hu}
        terms = []
        for v in range(2):
            r = model.render(pred, it["angles"][None, v])
            terms.append(xray_loss(r["log"], it["log"][None, v], {"bone": r["thickness"][:, :1], "tissue": r["thickness"][:, 1:]},
                                   {"bone": it["thickness"][None, v, :1], "tissue": it["thickness"][None, v, 1:]}))
        _, parts = prior_loss(pred, {"volume": hu, "mask": m}, PriorWeights(mask=0.0), terms)
        return parts

    exact = losses(hu)
    assert float(exact["ct"]) < 1e-8 and float(exact["xray"]) < 1e-5  # m·V + (1 − m)·V = V up to float rounding
    wrong = losses(hu + 300.0)
    assert float(wrong["ct"]) > 1e-3 and float(wrong["xray"]) > 1e-2


def test_tiny_prior_net_overfits_one_sample(bank):
    """A tiny 3DPN trained on one sample with the module's loss falls below 10 % of its first loss in 200 steps."""
    from cxrdecomp.methods.xraysyn.data import XraySynSamples
    from cxrdecomp.methods.xraysyn.module import PriorModule

    torch.manual_seed(0)
    it = XraySynSamples(bank, 4, "train")[0]
    batch = {k: v[None] for k, v in it.items()}
    mod = PriorModule(SMALL_PRIOR, bank.config.to_json(), lr=3e-3)
    opt = torch.optim.Adam(mod.net.parameters(), lr=3e-3)
    first = None
    for _ in range(200):
        loss, _, _ = mod._step(batch)
        first = float(loss) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    mod.eval()
    with torch.no_grad():
        last = float(mod._step(batch)[0])
    assert last < 0.1 * first, (first, last)


@pytest.mark.slow
def test_train_export_decompose_and_views(tmp_path, bank):
    """`train xraysyn` on a phantom CT exports a checkpoint that decomposes a real radiograph at full size and renders a
    repeatable view sweep; a non-XraySyn checkpoint is refused by `views` with one line."""
    import nibabel as nib
    from typer.testing import CliRunner

    from cxrdecomp.io import examples
    from cxrdecomp.io.radiograph import read_radiograph
    from cxrdecomp.cli import app
    from cxrdecomp.decomposer import Decomposer
    from cxrdecomp.methods.xraysyn.module import train
    from cxrdecomp.methods.xraysyn.options import Options
    from cxrdecomp.methods.xraysyn.predict import views

    ct = chest_phantom(48, 2.0)
    nib.save(nib.Nifti1Image(ct.hu, ct.affine), tmp_path / "ct.nii.gz")
    out = train(Options(ct=tmp_path / "ct.nii.gz", out=tmp_path / "run", volume_size=32, render_size=64, size=32, config="small",
                        epoch_samples=4, val_samples=2, n_val_anatomies=2, batch_size=2, epochs=1, progress=False, accelerator="cpu"))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["method"] == "xraysyn" and cfg["input_size"] == 32 and cfg["model"]["scene"]["volume_size"] == 32
    assert "val/psnr_image_Tn" in cfg["metrics"]
    lo, hi = cfg["model"]["scene"]["calibration"]
    assert 0 <= lo < hi

    dec = Decomposer.from_pretrained(out)
    img = read_radiograph(examples.example_file("RG1_UNCI.dcm")).image[:300, :280].copy()
    d = dec(torch.from_numpy(img))
    assert d.bone.shape == img.shape and torch.isfinite(d.soft_tissue).all()
    assert torch.allclose(d.soft_tissue + d.bone, torch.from_numpy(img), atol=1e-5)

    model = dec.model
    x = torch.rand(1, 1, 32, 32)
    ang = torch.tensor([[-9.0, 0.0], [0.0, 0.0], [9.0, 0.0]])
    v1, v2 = views(model, x, ang), views(model, x, ang)
    assert v1["image"].shape == (1, 3, 32, 32) and torch.equal(v1["image"], v2["image"])
    assert not torch.allclose(v1["bone"][0, 0], v1["bone"][0, 2])

    r = CliRunner().invoke(app, ["views", str(examples.example_file("RG1_UNCI.dcm")), "-o", str(tmp_path / "views"), "--checkpoint", str(out),
                                 "--angles", "-9:9:3"])
    assert r.exit_code == 0, r.output
    names = sorted(p.name for p in (tmp_path / "views").iterdir())
    assert names == ["bone_00.png", "bone_01.png", "bone_02.png", "view_00.png", "view_01.png", "view_02.png", "views.gif", "views.json"]
    assert [v["azimuth_deg"] for v in json.loads((tmp_path / "views" / "views.json").read_text())["views"]] == [-9.0, 0.0, 9.0]
    r = CliRunner().invoke(app, ["views", str(examples.example_file("RG1_UNCI.dcm")), "-o", str(tmp_path / "v2"), "--checkpoint", "bone"])
    from cxrdecomp.errors import ConfigError

    assert isinstance(r.exception, ConfigError) and "views need an XraySyn checkpoint" in str(r.exception)  # main() prints it, exit 2
    assert not (tmp_path / "v2").exists()


@pytest.mark.slow
def test_refine_stage_on_a_frozen_prior_exports_both_and_adds_up_the_compute(tmp_path):
    """`--stage refine` trains the 2DRN on a frozen 3DPN: the 3DPN's weights are unchanged, the export holds both networks
    at the render size, the card's compute table lists the 3DPN's run, and a real radiograph decomposes through it."""
    import nibabel as nib

    from cxrdecomp import methods
    from cxrdecomp.decomposer import Decomposer
    from cxrdecomp.errors import ConfigError
    from cxrdecomp.methods.xraysyn.module import train
    from cxrdecomp.methods.xraysyn.options import Options

    ct = chest_phantom(48, 2.0)
    nib.save(nib.Nifti1Image(ct.hu, ct.affine), tmp_path / "ct.nii.gz")
    common = dict(ct=tmp_path / "ct.nii.gz", volume_size=32, render_size=64, size=32, epoch_samples=4, val_samples=2, n_val_anatomies=2,
                  batch_size=2, epochs=1, progress=False, accelerator="cpu")
    prior = train(Options(out=tmp_path / "prior", **common))
    with pytest.raises(ConfigError, match="needs --prior-checkpoint"):
        train(Options(out=tmp_path / "r0", stage="refine", **common))
    out = train(Options(out=tmp_path / "refine", stage="refine", prior_checkpoint=prior, lr=1e-3, **common))
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["input_size"] == 64 and cfg["model"]["refine"] and cfg["model"]["prior"] == json.loads((prior / "config.json").read_text())["model"]["prior"]
    assert "val/prior_psnr_image_Tn" in cfg["metrics"] and "val/psnr_image_Tn" in cfg["metrics"]
    assert [r["checkpoint"] for r in cfg["training"]["lineage"]] == [str(prior), str(out)]
    assert cfg["training"]["total"]["steps"] == cfg["training"]["lineage"][0]["steps"] + cfg["training"]["global_step"]
    assert str(prior) in (out / "MODEL_CARD.md").read_text()
    both, _ = methods.load(out)
    alone, _ = methods.load(prior)
    assert json.loads((out / "config.json").read_text())["dtype"] == "float16"
    for k, v in alone.prior.state_dict().items():  # the 3DPN stayed frozen (BatchNorm statistics included), up to the fp16 export
        assert torch.equal(v.half().to(v.dtype) if v.is_floating_point() else v, both.prior.state_dict()[k]), k
    assert any(p.abs().sum() > 0 for p in both.refine.rdn.tail.parameters())  # the zero-initialised residual has learnt
    d = Decomposer.from_pretrained(out)(torch.rand(70, 90))
    assert d.bone.shape == (70, 90) and torch.isfinite(d.bone).all()

    # --stage real: the 2DRN fine-tuned on (here synthetic) radiographs; the 3DPN stays frozen, the discriminator is
    # not exported, and the lineage adds the refine run's compute
    from PIL import Image

    (tmp_path / "real").mkdir()
    for i in range(5):
        Image.fromarray((np.random.default_rng(i).random((80, 80)) * 255).astype(np.uint8)).save(tmp_path / "real" / f"r{i}.png")
    with pytest.raises(ConfigError, match="needs --init-from"):
        train(Options(out=tmp_path / "x0", stage="real", data=tmp_path / "real", **common))
    real = train(Options(out=tmp_path / "real_run", stage="real", data=tmp_path / "real", init_from=str(out), lr=1e-3, **common))
    rcfg = json.loads((real / "config.json").read_text())
    assert rcfg["model"] == cfg["model"] and "val/psnr_input_view" in rcfg["metrics"] and "val/prior_psnr_input_view" in rcfg["metrics"]
    assert [r["checkpoint"] for r in rcfg["training"]["lineage"]][:2] == [str(prior), str(out)]
    fine, _ = methods.load(real)
    assert all(torch.equal(v, fine.prior.state_dict()[k]) for k, v in both.prior.state_dict().items())
    assert any(not torch.equal(v, fine.refine.state_dict()[k]) for k, v in both.refine.state_dict().items())


def test_drr_scene_is_a_line_integral_and_ct2xray_hardens():
    """The 3DPN-DRR scene's radiograph is linear in the thicknesses (µ/ρ of soft tissue × total mass thickness), while
    CT2Xray's polyenergetic image grows sublinearly (beam hardening) and weighs bone more per gram; an unknown
    projection is refused."""
    from cxrdecomp.errors import InputError

    drr, poly = Scene(dataclasses.replace(_scene(), projection="drr")), Scene(_scene())
    t = torch.tensor([[0.0, 10.0], [2.0, 10.0], [0.0, 20.0]]).view(3, 2, 1, 1)  # (bone, tissue) g/cm²
    ld, lp = drr.radiograph(t).flatten(), poly.radiograph(t).flatten()
    mu = float(drr.spectrum.effective_mu_rho()[drr.spectrum.materials.index("soft_tissue")])
    assert torch.allclose(ld, mu * t.sum(1).flatten(), rtol=1e-6) and torch.isclose(ld[2], 2 * ld[0])
    assert lp[2] < 0.99 * 2 * lp[0]  # hardening: 20 g/cm² attenuates less than twice 10 g/cm²
    assert (lp[1] - lp[0]) / 2 > (ld[1] - ld[0]) / 2 * 1.2  # bone's per-gram contrast is higher in CT2Xray than in the DRR
    with pytest.raises(InputError, match="projection must be ct2xray or drr"):
        SceneConfig(projection="mono")


def test_refiner2d_baseline_input_reprojects_the_backprojection(bank):
    """The 2D Refiner's first input channel FP(BP(L, T), T′)/10 equals L/5 at T′ = T (within 10 % mean at 16³) and moves with T′;
    its checkpoints build through the registry's builder and are refused as decomposers with one line."""
    from cxrdecomp.errors import ConfigError
    from cxrdecomp.methods.xraysyn.data import XraySynSamples
    from cxrdecomp.methods.xraysyn.network import Refiner2D, build
    from cxrdecomp.methods.xraysyn.predict import predict

    it = XraySynSamples(bank, 1, "val", 18.0, 18.0)[0]
    net = build(baseline="refiner2d", unet={"base": 4, "depth": 2}, scene=bank.config.to_json())
    assert isinstance(net, Refiner2D)
    log, t = it["log"][:1], it["angles"][:1]
    x = net.inputs(log, t, t)
    assert x.shape == (1, 2, 16, 16)
    body = log > 0.05
    err = (x[:, :1] - log / 5).abs()[body].mean() / (log / 5)[body].mean()
    assert err < 0.1, float(err)
    moved = net.inputs(log, t, t + torch.tensor([[15.0, 0.0]]))
    assert (moved[:, :1] - x[:, :1]).abs().mean() > 0.1 * err * (log / 5)[body].mean() + 1e-3
    out = net(log, t, t)
    assert out["log"].shape == (1, 1, 16, 16) and out["thickness"].shape == (1, 2, 16, 16)
    with pytest.raises(ConfigError, match="2D Refiner baseline"):
        predict(net, torch.rand(1, 1, 16, 16), {})
