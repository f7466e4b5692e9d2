"""The bundled checkpoints load by name and score what their model cards and docs/results.md say.

bse-jsrt/val at the truth's resolution (1024²), display domain (docs/results.md, README "How good are the
bundled models?"): BSR bone 0.088 (it removes the bone BSE-JSRT keeps; lung-field BSR 0.588), dae 0.372, bsdiff
0.697 (DDIM 20 steps); identity 0.
"""

from __future__ import annotations


import numpy as np
import pytest
import torch

from cxrdecomp import methods
from cxrdecomp.data.pairs import default_bse_jsrt
from cxrdecomp.decomposer import Decomposer

VAL = default_bse_jsrt() / "val"
CARD_BSR = {"bone": 0.088, "dae": 0.372, "bsdiff": 0.697}

needs_pairs = pytest.mark.skipif(not (VAL / "cxr").is_dir(), reason=f"real pairs not found at {VAL} (../shared/data/bse-jsrt)")


@pytest.mark.parametrize("name", sorted(s.bundled for s in methods.METHODS.values() if s.bundled))
def test_bundled_checkpoint_loads_by_name(name):
    dec = Decomposer.from_pretrained(name, device="cpu")
    assert methods.get(dec.method).bundled == name
    out = dec(torch.full((64, 64), 0.5) + 0.1 * torch.rand(64, 64))
    assert out.enhanced is not None and out.enhanced.shape == (64, 64)


@pytest.mark.data
@needs_pairs
@pytest.mark.parametrize("name", [pytest.param("bone"), pytest.param("dae"), pytest.param("bsdiff", marks=pytest.mark.slow)])
def test_bundled_bsr_on_bse_jsrt_val_matches_the_card(name, tmp_path):
    from cxrdecomp.evaluate import evaluate_pairs

    torch.set_num_threads(2)
    s = evaluate_pairs(VAL, tmp_path, method=name, device="cpu", progress=False)
    assert s["n_images"] == 12
    bsr = s["results"][name]["bsr"]["mean"]
    assert bsr == pytest.approx(CARD_BSR[name], abs=0.01)
    assert s["results"]["identity"]["bsr"]["mean"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.data
def test_default_model_decomposes_rg1_unci(tmp_path):
    """``Decomposer.from_pretrained()`` (the default method) on the real PA chest CR at its full resolution:
    outputs keep the 1955×1841 size, soft tissue + bone = input exactly, and the model changes the image."""
    from cxrdecomp.io import examples
    from cxrdecomp.io.radiograph import read_radiograph

    path = examples.cache_dir() / "RG1_UNCI.dcm"
    if not path.is_file():
        pytest.skip("example RG1_UNCI.dcm not cached; run `cxrdecomp data fetch` first")
    img = read_radiograph(path).image
    dec = Decomposer.from_pretrained(device="cpu")
    assert dec.method == methods.get(methods.default_checkpoint()).name
    out = dec(path)
    assert out.bone.shape == tuple(img.shape) == (1955, 1841)
    assert torch.allclose(out.soft_tissue + out.bone, torch.as_tensor(np.asarray(img)), atol=1e-5)
    assert float(out.bone.abs().mean()) > 1e-3


def test_checkpoint_save_is_readable_by_others_and_a_failed_replace_keeps_the_old_folder(tmp_path, monkeypatch):
    """Issue 15 item 7: weights were mode 0600 under a strict umask; a failure while swapping folders lost both."""
    import os

    from cxrdecomp import checkpoint as ckpt
    from cxrdecomp.methods.bone_unet.network import build

    cfg = {"method": "bone_unet", "model": {"base": 4, "depth": 2}, "input_size": 64}
    old_umask = os.umask(0o077)
    try:
        folder = ckpt.save(tmp_path / "m", build(base=4, depth=2), cfg, "first\n")
    finally:
        os.umask(old_umask)
    assert (folder / "model.safetensors").stat().st_mode & 0o044 == 0o044 and folder.stat().st_mode & 0o055 == 0o055
    real = os.replace

    def failing(src, dst):
        if ".partial-" in str(src):  # moving the new folder into place fails (e.g. EXDEV, a full inode table)
            raise OSError(5, "Input/output error")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", failing)
    with pytest.raises(OSError):
        ckpt.save(tmp_path / "m", build(base=4, depth=2), cfg, "second\n")
    monkeypatch.setattr(os, "replace", real)
    assert (tmp_path / "m" / "MODEL_CARD.md").read_text() == "first\n"  # the old checkpoint, whole, under its name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary or aside folder left


@pytest.mark.data
@needs_pairs
@pytest.mark.slow
def test_bundled_xraysyn_reconstructs_real_radiographs_as_its_card_says():
    """Input-view reconstruction on bse-jsrt/val at 128² (scripts/xraysyn_eval.py --real): the bundled XraySyn after
    the 2DRN's real phase scores its card's 21.92 dB, at least 3 dB above the 3DPN alone (13.08 dB)."""
    from PIL import Image

    from cxrdecomp import metrics
    from cxrdecomp.methods.xraysyn.predict import calibrated_prior, thickness
    from cxrdecomp.methods.xraysyn.scene import uncalibrate

    torch.set_num_threads(2)
    model, cfg = methods.load("xraysyn")
    h = int(cfg["input_size"])
    full, alone = [], []
    with torch.no_grad():
        for f in sorted((VAL / "cxr").glob("*.png")):
            img = torch.from_numpy(np.asarray(Image.open(f).convert("L"), np.float32) / 255.0)[None, None]
            x = torch.nn.functional.interpolate(img, size=(h, h), mode="area")
            a, b, pred = calibrated_prior(model, x)
            t_ct = model.render(pred, torch.zeros(1, 2))["thickness"]
            for out, t in ((full, thickness(model, x, pred, torch.zeros(1, 2))), (alone, model.refine.upsample(t_ct))):
                rec = uncalibrate(model.scene.radiograph(t), a, b).clamp(0, 1)
                out.append(float(metrics.image_metrics(rec, x, data_range=1.0, with_ms_ssim=False)["psnr"]))
    assert len(full) == 12
    assert np.mean(full) == pytest.approx(21.92, abs=0.1)
    assert np.mean(full) - np.mean(alone) >= 3.0
