"""Online DRR rendering dataset/datamodule on a tiny synthetic CT."""

import numpy as np
import torch

from cxrdecomp.data.online import OnlineDRRDataModule, OnlineDRRDataset
from cxrdecomp.io.ct import CTVolume


def _ct():
    hu = np.full((40, 40, 24), -1000.0, np.float32)
    hu[6:34, 8:32, 2:22] = 40.0
    hu[10:18, 12:28, 4:20] = -850.0
    hu[22:30, 12:28, 4:20] = -850.0
    hu[19:21, 10:30, 3:21] = 1200.0  # "spine"
    lab = np.zeros(hu.shape, np.int16)
    lab[10:18, 12:28, 4:20] = 10
    lab[22:30, 12:28, 4:20] = 11
    lab[19:21, 10:30, 3:21] = 30
    names = {10: "lung_upper_lobe_left", 11: "lung_upper_lobe_right", 30: "vertebrae_T5"}
    return CTVolume(hu, (4.0, 4.0, 6.0), np.eye(4), lab, names)


def test_online_dataset_samples():
    ds = OnlineDRRDataset([_ct()], size=32, length=6, device="cpu", des=True, bin_kev=10.0, kvp=(110.0, 120.0))
    batch = ds.__getitems__([0, 1, 2])
    assert len(batch) == 3
    s = batch[0]
    for k in ("image", "soft_tissue", "bone", "lung", "lung_mask", "bone_mask", "des_soft", "des_bone"):
        assert s[k].shape == (1, 32, 32) and s[k].dtype == torch.float32, k
    assert 0 <= s["image"].min() and s["image"].max() <= 1
    assert s["lung_mask"].sum() > 20 and s["bone_mask"].sum() > 5
    assert float(s["bone"][s["bone_mask"] > 0].mean()) > float(s["bone"][s["bone_mask"] == 0].mean())
    assert abs(s["meta"][0]) <= 18 and abs(s["meta"][1]) <= 18


def test_online_identity_and_determinism():
    ds = OnlineDRRDataset([_ct()], size=24, length=4, device="cpu", photons=None, seed=7, bin_kev=10.0, kvp=(120.0,))
    a, b = ds[1], ds[1]
    assert torch.equal(a["image"], b["image"])  # seeded: same view
    assert torch.allclose(a["image"], a["soft_tissue"] + a["bone"], atol=1e-5)  # decomposition identity (noise-free)
    ds.seed = None
    assert not torch.equal(ds[1]["meta"], ds[1]["meta"])  # fresh random views


def test_datamodule_loader():
    dm = OnlineDRRDataModule([_ct()], batch_size=2, train_length=4, val_length=2, size=16, device="cpu", bin_kev=10.0, kvp=(120.0,))
    dm.setup("fit")
    b = next(iter(dm.train_dataloader()))
    assert b["image"].shape == (2, 1, 16, 16)
    v1 = next(iter(dm.val_dataloader()))["image"]
    v2 = next(iter(dm.val_dataloader()))["image"]
    assert torch.equal(v1, v2)
