"""Online realistic rendering: items, seeding by global index (workers, ranks, epochs) and Lightning's epoch hook."""

import lightning as L
import numpy as np
import torch

from cxrdecomp.data.online import EpochSampler, SimulatedSamples, SimulationDataModule
from cxrdecomp.io.ct import CTVolume
from cxrdecomp.simulate.pipeline import Simulator


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


def _dm(**kw):
    return SimulationDataModule([_ct()], size=24, batch_size=2, train_length=6, val_length=4, anatomy_reuse=2, **kw)


def test_items_have_all_targets():
    sim = Simulator(_ct(), 32, des=True)
    ds = SimulatedSamples([sim], 4, keys=("image", "soft_tissue", "bone", "lung", "lung_mask", "bone_mask", "des_soft", "des_bone"))
    s = ds[1]
    for k in ("image", "soft_tissue", "bone", "lung", "lung_mask", "bone_mask", "des_soft", "des_bone"):
        assert s[k].shape == (1, 32, 32) and s[k].dtype == torch.float32, k
    assert 0 <= s["image"].min() and s["image"].max() <= 1
    assert s["lung_mask"].sum() > 20 and s["bone_mask"].sum() > 5
    assert torch.allclose(s["image"] - s["bone"], s["soft_tissue"], atol=1e-6)
    assert int(s["index"]) == 1


def test_epoch_sampler_disjoint_over_epochs_and_ranks():
    s = EpochSampler(10)
    e0 = list(s)
    s.set_epoch(3)
    assert e0 == list(range(10)) and list(s) == list(range(30, 40))
    r0, r1 = list(EpochSampler(10, 0, 2)), list(EpochSampler(10, 1, 2))
    assert not set(r0) & set(r1) and sorted(r0 + r1) == list(range(10)) and len(EpochSampler(10, 1, 2)) == 5


def test_workers_render_the_same_samples_as_the_main_process():
    a = _dm(num_workers=0)
    b = _dm(num_workers=2)
    a.setup(), b.setup()
    ba, bb = list(a.train_dataloader()), list(b.train_dataloader())
    assert [x["index"].tolist() for x in ba] == [x["index"].tolist() for x in bb]
    assert all(torch.equal(x["image"], y["image"]) for x, y in zip(ba, bb))
    v1, v2 = next(iter(a.val_dataloader()))["image"], next(iter(a.val_dataloader()))["image"]
    assert torch.equal(v1, v2)


class _Recorder(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.seen: dict[int, list[int]] = {}

        self.validated: dict[int, list[float]] = {}

    def training_step(self, batch, i):
        self.seen.setdefault(self.current_epoch, []).extend(batch["index"].tolist())
        return (self.w * batch["image"].mean()).sum()

    def validation_step(self, batch, i):
        self.validated.setdefault(self.current_epoch, []).extend(batch["image"].flatten(1).sum(1).tolist())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_gives_fresh_training_samples_and_fixed_validation_samples_every_epoch(tmp_path):
    dm, m = _dm(), _Recorder()
    trainer = L.Trainer(max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, num_sanity_val_steps=0, use_distributed_sampler=False, default_root_dir=tmp_path)
    trainer.fit(m, datamodule=dm)
    assert m.seen[0] == list(range(6)) and m.seen[1] == list(range(6, 12))
    assert len(m.validated[0]) == 4 and m.validated[0] == m.validated[1]  # the same held-out samples every epoch


class _Real:
    """Two real 'pairs' of constant value, their lung field the left half."""

    def __len__(self):
        return 2

    def item(self, i, generator=None):
        x = torch.full((1, 24, 24), 0.5 + 0.1 * i) + 0.01 * torch.rand((1, 24, 24), generator=generator)
        field = torch.zeros(1, 24, 24)
        field[..., :12] = 1
        return {"x": x, "bone": torch.zeros_like(x), "soft": x, "field": field}


def test_mixed_samples_replace_every_nth_sample_and_stay_a_function_of_the_index():
    from cxrdecomp.data.online import MixedSamples

    sim = SimulatedSamples([Simulator(_ct(), 24, anatomy_reuse=2)], 6, keys=("image", "bone"), rename={"image": "x"})
    ds = MixedSamples(sim, _Real(), every=3)
    items = [ds[g] for g in range(6)]
    real = [g for g in range(6) if items[g]["field"].mean() < 1]
    assert real == [2, 5]
    assert torch.equal(items[0]["x"], sim[0]["x"]) and items[0]["field"].min() == 1  # simulated: all of it holds
    assert abs(float(items[2]["x"].mean()) - 0.505) < 0.01 and abs(float(items[5]["x"].mean()) - 0.605) < 0.01  # pairs 0, 1
    assert torch.equal(ds[5]["x"], items[5]["x"]) and not torch.equal(ds[8]["x"], items[5]["x"])  # reproducible, fresh noise
    assert set(items[2]) == set(items[0]) == {"x", "bone", "field", "index"}
    import pytest

    from cxrdecomp.errors import InputError

    with pytest.raises(InputError, match="2 or more"):
        MixedSamples(sim, _Real(), every=1)
