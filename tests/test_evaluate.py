"""cxrdecomp.evaluate and `cxrdecomp evaluate`: method path with a tiny random checkpoint, saved
predictions (8/16-bit, other sizes), lung masks, simulated pairs, the results page, CLI errors."""

from __future__ import annotations

import csv
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from cxrdecomp import checkpoint, evaluate as ev
from cxrdecomp.evaluate.scoring import TILE
from cxrdecomp.errors import ConfigError, DataNotFoundError
from cxrdecomp.methods.bone_unet.network import build as build_bone_unet

S = 64


def _png(path, a, bits=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    if bits == 8:
        Image.fromarray((np.clip(a, 0, 1) * 255).round().astype(np.uint8)).save(path)
    else:
        Image.fromarray((np.clip(a, 0, 1) * 65535).round().astype(np.uint16)).save(path)


def _truth(rng):
    y, x = np.mgrid[0:S, 0:S] / S
    soft = 0.3 + 0.3 * np.exp(-((x - 0.5) ** 2 + (y - 0.5) ** 2) * 4) + 0.02 * rng.random((S, S))
    ribs = 0.15 * (np.sin(y * 40) > 0.6)
    return soft, np.clip(soft + ribs, 0, 1)


@pytest.fixture
def pairs(tmp_path):
    """Three 64² pairs; JPC2's radiograph is a 16-bit PNG. Returns (root, {name: (image, soft)})."""
    rng = np.random.default_rng(0)
    root = tmp_path / "pairs"
    data = {}
    for k, name in enumerate(["JPC1", "JPC2", "JPC3"]):
        soft, img = _truth(rng)
        _png(root / "soft" / f"{name}.png", soft)
        _png(root / "cxr" / f"{name}.png", img, bits=16 if k == 1 else 8)
        data[name] = ev.read_image01(root / "cxr" / f"{name}.png")[0], ev.read_image01(root / "soft" / f"{name}.png")[0]
    return root, data


@pytest.fixture
def tiny_ckpt(tmp_path):
    torch.manual_seed(0)
    net = build_bone_unet(base=4, depth=2)
    cfg = {"method": "bone_unet", "model": {"base": 4, "depth": 2}, "input_size": 64}
    return checkpoint.save(tmp_path / "ckpt" / "tiny", net, cfg, "tiny random test checkpoint\n")


def _rows(out):
    with open(out / "per_image.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_read_image01_8_and_16_bit(tmp_path):
    a = np.linspace(0, 1, 64 * 64).reshape(S, S)
    _png(tmp_path / "a8.png", a)
    _png(tmp_path / "a16.png", a, bits=16)
    a8, k8 = ev.read_image01(tmp_path / "a8.png")
    a16, k16 = ev.read_image01(tmp_path / "a16.png")
    assert (k8, k16) == ("8-bit", "16-bit")
    assert np.abs(a8 - a).max() <= 0.5 / 255 + 1e-6
    assert np.abs(a16 - a).max() <= 0.5 / 65535 + 1e-6


def test_method_path_with_tiny_checkpoint(pairs, tiny_ckpt, tmp_path):
    root, _ = pairs
    out = tmp_path / "out"
    s = ev.evaluate_pairs(root, out, method="bone_unet", checkpoint=tiny_ckpt, progress=False, save_pred=True)
    assert s["n_images"] == 3 and s["method"] == "bone_unet"
    rows = _rows(out)
    assert len(rows) == 6 and {r["prediction"] for r in rows} == {"bone_unet", "identity"}
    ident = s["results"]["identity"]
    assert ident["bsr"]["mean"] == pytest.approx(0.0, abs=1e-12) and ident["bsr"]["n"] == 3
    assert set(s["results"]["bone_unet"]) >= {"rmse", "mae", "mse", "psnr", "ssim", "ms_ssim", "bsr", "bsr_bsldm", "rmae"}
    for k in ("mean", "std", "median", "n"):
        assert k in s["results"]["bone_unet"]["psnr"]
    assert s["results"]["bone_unet"]["ms_ssim"]["n"] == 0  # 64 px < 161 px
    assert any("161" in n for n in s["notes"])
    assert json.loads((out / "summary.json").read_text())["n_images"] == 3
    grid = Image.open(out / "grid.png")
    assert grid.width == 4 * TILE and grid.height > 3 * TILE
    assert sorted(p.name for p in (out / "pred").iterdir()) == ["JPC1.png", "JPC2.png", "JPC3.png"]


def test_pred_path_perfect_resized_and_16_bit(pairs, tmp_path):
    root, data = pairs
    pred = tmp_path / "pred"
    _png(pred / "JPC1.png", data["JPC1"][1])  # exact truth, 8-bit
    _png(pred / "JPC2.png", data["JPC2"][1], bits=16)  # truth as 16-bit
    big = np.asarray(Image.fromarray(data["JPC3"][0], mode="F").resize((70, 70), Image.BILINEAR))
    _png(pred / "JPC3.png", big)  # the radiograph at another size -> identity after resizing back
    out = tmp_path / "out"
    s = ev.evaluate_pairs(root, out, pred_dir=pred, progress=False)
    by = {r["name"]: r for r in _rows(out) if r["prediction"] == "pred"}
    assert float(by["JPC1"]["bsr"]) == pytest.approx(1.0)
    assert float(by["JPC1"]["psnr"]) == float("inf")
    assert float(by["JPC2"]["bsr"]) > 0.999
    assert "resized to truth" in by["JPC3"]["notes"]
    assert abs(float(by["JPC3"]["bsr"])) < 0.2
    assert any("resized" in n for n in s["notes"])
    psnr = s["results"]["pred"]["psnr"]  # JPC1's infinite PSNR is left out of the mean, and the summary says so
    assert psnr["n"] + psnr["n_infinite"] == 3 and psnr["n"] >= 1 and np.isfinite(psnr["mean"])
    assert any(f"pred psnr: {psnr['n_infinite']} infinite value" in n for n in s["notes"])


def test_missing_predictions_and_masks(pairs, tmp_path):
    root, data = pairs
    pred, masks = tmp_path / "pred", tmp_path / "masks"
    for n in ("JPC1", "JPC2"):
        _png(pred / f"{n}.png", data[n][1] * 0.5 + data[n][0] * 0.5)
    m = np.zeros((S, S))
    m[10:50, 8:28] = 1
    _png(masks / "JPC1.png", m)
    s = ev.evaluate_pairs(root, tmp_path / "out", pred_dir=pred, mask_dir=masks, progress=False)
    assert s["n_images"] == 2
    assert any("without prediction" in n and "JPC3" in n for n in s["notes"])
    assert s["results"]["pred"]["bsr_lung"]["n"] == 1
    # halfway between input and truth: residual halves -> BSR = 1 - 1/4 (up to 8-bit rounding)
    assert s["results"]["pred"]["bsr"]["mean"] == pytest.approx(0.75, abs=0.03)


def test_errors(pairs, tmp_path):
    root, _ = pairs
    with pytest.raises(ConfigError, match="give either --method/--checkpoint"):
        ev.evaluate_pairs(root, tmp_path / "o", method="bone", pred_dir=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="unknown method 'no-such-method'; choose one of"):
        ev.evaluate_pairs(root, tmp_path / "o", method="no-such-method", progress=False)
    with pytest.raises(DataNotFoundError, match="must hold cxr/ and soft/"):
        ev.evaluate_pairs(tmp_path / "nothing", tmp_path / "o", pred_dir=tmp_path, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataNotFoundError, match="prediction"):
        ev.evaluate_pairs(root, tmp_path / "o", pred_dir=empty, progress=False)


def test_simulated_pairs_held_out_only(tiny_ckpt, tmp_path):
    rng = np.random.default_rng(5)
    sim = tmp_path / "sim"
    sim.mkdir()
    manifest = []
    for k in range(3):
        soft, img = _truth(rng)
        np.savez(sim / f"s{k}.npz", drr=img.astype(np.float32), soft=soft.astype(np.float32))
        manifest.append({"name": f"s{k}", "split": "train" if k == 0 else "test"})
    (sim / "manifest.json").write_text(json.dumps({"samples": manifest}))
    s = ev.evaluate_simulated(sim, tmp_path / "out", checkpoint=tiny_ckpt, progress=False)
    assert s["n_images"] == 2
    assert s["results"]["identity"]["bsr"]["mean"] == pytest.approx(0.0, abs=1e-12)


def test_results_page_ranks_the_bundled_models_and_sets_the_default(pairs, tiny_ckpt, tmp_path, monkeypatch):
    """Two bundled models scored on both real sets: a random network and one whose last layer is zero (bone image 0:
    the identity, score 0). The one with the higher real-radiograph score, des-dev's tone-matched BSR read back from
    each evaluation's summary, becomes the default."""
    from cxrdecomp import methods

    root, _ = pairs
    torch.manual_seed(1)
    net = build_bone_unet(base=4, depth=2)
    last = [p for p in net.parameters()][-2:]
    with torch.no_grad():
        for p in last:
            p.zero_()
    cfg = {"method": "bone_unet", "model": {"base": 4, "depth": 2}, "input_size": 64}
    checkpoint.save(tiny_ckpt.parent / "zero", net, cfg, "zero last layer\n")
    monkeypatch.setattr(checkpoint, "PRETRAINED_DIR", tiny_ckpt.parent)
    page = ev.write_results_page(tmp_path / "results.md", pairs=root, des=root, work=tmp_path / "work")
    text = page.read_text()
    assert "identity (input unchanged)" in text and "| tiny (`bone_unet`, 64²)" in text and "Which model to pick" in text
    assert "BS-Diff" in text and "38.25" in text and "Held-out simulated" in text and "lung-field BSR" in text
    rank = json.loads((tiny_ckpt.parent / "ranking.json").read_text())

    def mean(set_name, name, key):
        return json.loads((tmp_path / "work" / set_name / name / "summary.json").read_text())["results"][name][key]["mean"]

    score = {n: mean("des-dev", n, "bsr_tm") for n in ("tiny", "zero")}
    assert score["zero"] == pytest.approx(0.0, abs=1e-6) and abs(score["tiny"]) > 1e-3
    best = max(score, key=score.get)
    assert rank["default"] == best and methods.default_checkpoint() == best and f"| {best} **(default)** |" in text
    assert rank["scores"]["tiny"]["score"] == pytest.approx(score["tiny"])
    (tiny_ckpt.parent / "ranking.json").write_text('{"default": "gone"}')
    assert methods.default_checkpoint() == methods.DEFAULT  # a ranking naming no bundled model is ignored


def test_cli_evaluate(pairs, tiny_ckpt, tmp_path, monkeypatch, capsys):
    from cxrdecomp import cli

    root, _ = pairs
    out = tmp_path / "cli"
    monkeypatch.setattr(sys, "argv", ["cxrdecomp", "evaluate", "--pairs", str(root), "--method", "bone_unet",
                                      "--checkpoint", str(tiny_ckpt), "-o", str(out)])
    cli.main()
    assert (out / "summary.json").is_file() and "bsr" in capsys.readouterr().out
    monkeypatch.setattr(sys, "argv", ["cxrdecomp", "evaluate", "--pairs", str(root), "--method", "no-such", "-o", str(out)])
    with pytest.raises(SystemExit) as e:
        cli.main()
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cxrdecomp: error:")


def test_simulate_folder_format(tiny_ckpt, tmp_path):
    """The `cxrdecomp simulate` layout: samples/NAME.npz (display-domain image, soft_tissue, masks) + NAME.json."""
    from _phantoms import chest_phantom
    from cxrdecomp.simulate.generate import simulate

    sim = tmp_path / "simfolder"
    simulate([chest_phantom(24, 4.0)], sim, n_per_ct=4, size=S, progress=False, previews=False)
    s = ev.evaluate_simulated(sim, tmp_path / "out", checkpoint=tiny_ckpt, progress=False)
    assert s["n_images"] == 1  # 10 % validation split of 4 samples
    s = ev.evaluate_simulated(sim, tmp_path / "out2", checkpoint=tiny_ckpt, split="ct:0", progress=False)
    assert s["n_images"] == 4
    assert s["results"]["identity"]["bsr"]["mean"] == pytest.approx(0.0, abs=1e-12)


def test_edited_field_finds_the_region_where_the_soft_tissue_image_was_edited():
    """BSE-JSRT changes pixels only inside the lung fields: two disc-shaped 'lungs' with rib stripes removed."""
    from cxrdecomp.data.pairs import edited_field

    n = 256
    yy, xx = np.mgrid[:n, :n]
    lungs = ((xx - 80) ** 2 + (yy - 128) ** 2 < 50**2) | ((xx - 176) ** 2 + (yy - 128) ** 2 < 50**2)
    rng = np.random.default_rng(0)
    soft = 0.4 + 0.05 * rng.random((n, n)).astype(np.float32)
    ribs = ((yy // 12) % 2 == 0) & lungs
    cxr = soft + 0.08 * ribs
    cxr[lungs & ~ribs] += (rng.random(int((lungs & ~ribs).sum())) < 0.3) / 255.0  # the editor's noise between the ribs
    m = edited_field(cxr, soft)
    iou = (m & lungs).sum() / (m | lungs).sum()
    assert iou > 0.9
    assert not m[:, :20].any() and not m[:20].any()  # nothing outside
    assert not edited_field(soft, soft).any()


def test_masks_edited_scores_inside_the_lung_fields_the_truth_was_edited_in(tmp_path):
    """`--masks edited`: a prediction that removes the ribs only inside the edited field scores bsr_lung 1 there,
    and one that also removes them outside (where the truth kept them) loses whole-image BSR, not bsr_lung."""
    n = 128
    yy, xx = np.mgrid[:n, :n]
    ribs = 0.2 * ((yy // 8) % 2 == 0)
    field = (abs(xx - 40) < 22) & (abs(yy - 64) < 40)
    soft_all = 0.3 + 0.2 * np.exp(-((xx - 64) ** 2 + (yy - 64) ** 2) / 2000)
    img = soft_all + ribs
    truth = np.where(field, soft_all, img)  # BSE-JSRT-like: ribs removed only in the field
    root, pred_in, pred_all = tmp_path / "pairs", tmp_path / "p_in", tmp_path / "p_all"
    _png(root / "cxr" / "A.png", img)
    _png(root / "soft" / "A.png", truth)
    _png(pred_in / "A.png", truth)
    _png(pred_all / "A.png", soft_all)
    r_in = ev.evaluate_pairs(root, tmp_path / "o1", pred_dir=pred_in, mask_dir="edited", progress=False)["results"]["pred"]
    r_all = ev.evaluate_pairs(root, tmp_path / "o2", pred_dir=pred_all, mask_dir="edited", progress=False)["results"]["pred"]
    assert r_in["bsr_lung"]["mean"] == pytest.approx(1.0, abs=1e-9)
    assert r_all["bsr_lung"]["mean"] > 0.9  # the found field's edge reaches a pixel or two past the edited one
    assert r_in["bsr"]["mean"] == pytest.approx(1.0, abs=1e-9) and r_all["bsr"]["mean"] < 0
