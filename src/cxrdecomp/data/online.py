"""Online rendering for training: fresh realistic samples every epoch from CTs held in memory.

Every sample comes from the one simulation pipeline (:class:`cxrdecomp.simulate.pipeline.Simulator`):
anatomy variation, cone-beam geometry, polyenergetic physics, detector, processing and all targets.

Seeding (correct with DataLoader workers and under DDP): a sample is a pure function of its *global index*
``g`` (and the CT list and seed): CT ``g mod n_CT``, sample ``g div n_CT`` of that CT's stream
(:meth:`Simulator.sample`). :class:`EpochSampler` hands out the global indices ``epoch·length + i`` and, under
DDP, only every ``world_size``-th of them on each rank (no overlap between ranks, none between epochs);
Lightning calls its ``set_epoch`` at every epoch. Workers render whatever indices they receive, so no worker
seed matters, and a resumed run sees the same sequence as an uninterrupted one. Validation uses the held-out
bank of validation anatomies (``split="val"``), the same samples every epoch.

Items are dicts of ``(1, S, S)`` float32 CPU tensors (the keys chosen, see
:data:`cxrdecomp.simulate.pipeline.OUTPUTS`) plus ``"index"`` (the global index).
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from cxrdecomp.data.loaders import make_loader
from cxrdecomp.errors import InputError


class SimulatedSamples(Dataset):
    """Map-style dataset: global index → one rendered sample (see module docstring).

    Args:
        simulators: one :class:`~cxrdecomp.simulate.pipeline.Simulator` per CT.
        length: samples per epoch.
        seed: base seed of the sample streams.
        split: ``"train"`` or ``"val"`` (held-out anatomies).
        keys: outputs to return (default image, soft_tissue, bone, lung_mask).
        rename: item key for an output, e.g. ``{"image": "x"}`` for a trainer that reads ``batch["x"]``.

    Raises:
        InputError: no simulators.
    """

    def __init__(self, simulators: Sequence, length: int, seed: int = 0, split: str = "train",
                 keys: Sequence[str] = ("image", "soft_tissue", "bone", "lung_mask"), rename: dict[str, str] | None = None) -> None:
        if not simulators:
            raise InputError("online rendering needs at least one CT")
        self.simulators, self.length, self.seed, self.split, self.keys = list(simulators), int(length), int(seed), split, tuple(keys)
        self.rename = dict(rename or {})

    def __len__(self) -> int:
        return self.length

    def rename_keys(self) -> tuple[str, ...]:
        """The item keys of the chosen outputs (after ``rename``)."""
        return tuple(self.rename.get(k, k) for k in self.keys)

    def __getitem__(self, g: int) -> dict[str, torch.Tensor]:
        g = int(g)
        sim = self.simulators[g % len(self.simulators)]
        out = sim.sample(g // len(self.simulators), self.seed, self.split)
        item = {self.rename.get(k, k): out[k].detach().float().cpu() for k in self.keys}
        item["index"] = torch.tensor(g)
        return item


class MixedSamples(Dataset):
    """Online samples with real pairs mixed in at a fixed rate, still a pure function of the global index.

    Global index ``g`` gives real pair ``(g div every) mod len(real)`` when ``g mod every == every − 1`` (its
    augmentation drawn from a generator seeded by ``(seed, g)``), else simulated sample ``g``. Simulated items
    gain ``field`` = ones (the target holds everywhere), real items bring their own (e.g. the lung fields of
    :class:`cxrdecomp.data.simulated.RealPairs`).

    Args:
        simulated: a :class:`SimulatedSamples` (its ``length`` is this dataset's length).
        real: a dataset with ``item(i, generator)`` returning the same keys as ``simulated`` plus ``field``.
        every: one real item in ``every`` (2: half; 4: a quarter).

    Raises:
        InputError: ``every`` < 2 or an empty ``real``.
    """

    def __init__(self, simulated: SimulatedSamples, real, every: int, seed: int = 0) -> None:
        if int(every) < 2:
            raise InputError(f"one real pair in every {every} samples: give 2 or more")
        if len(real) == 0:
            raise InputError("no real pairs to mix in")
        self.simulated, self.real, self.every, self.seed = simulated, real, int(every), int(seed)

    def __len__(self) -> int:
        return len(self.simulated)

    def is_real(self, g: int) -> bool:
        return int(g) % self.every == self.every - 1

    def __getitem__(self, g: int) -> dict[str, torch.Tensor]:
        g = int(g)
        if self.is_real(g):
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + g)
            it = self.real.item((g // self.every) % len(self.real), gen)
            item = {k: it[k] for k in (*self.simulated.rename_keys(), "field")}
        else:
            item = self.simulated[g]
            item["field"] = torch.ones_like(next(iter(item.values())))
            item.pop("index")
        item["index"] = torch.tensor(g)
        return item


class EpochSampler(Sampler[int]):
    """Global indices ``epoch·length + i`` for ``i`` in ``range(rank, length, world_size)`` (module docstring).

    ``rank`` / ``world_size`` default to the initialised ``torch.distributed`` group at iteration time. ``fixed=True``
    ignores ``set_epoch`` (validation: the same samples every epoch).
    """

    def __init__(self, length: int, rank: int | None = None, world_size: int | None = None, fixed: bool = False) -> None:
        self.length, self.epoch, self._rank, self._world, self.fixed = int(length), 0, rank, world_size, bool(fixed)

    def set_epoch(self, epoch: int) -> None:
        if not self.fixed:
            self.epoch = int(epoch)

    def _dist(self) -> tuple[int, int]:
        if self._rank is not None:
            return self._rank, self._world or 1
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def __iter__(self):
        rank, world = self._dist()
        base = self.epoch * self.length
        return iter(range(base + rank, base + self.length, world))

    def __len__(self) -> int:
        rank, world = self._dist()
        return len(range(rank, self.length, world))


class SimulationDataModule(L.LightningDataModule):
    """Lightning DataModule of online realistic samples (fresh every epoch) and fixed held-out validation samples.

    Args:
        cts: CT volumes (default: the example CT with its labels).
        size: detector pixels per side.
        batch_size, num_workers: loader settings (workers render in parallel; the CTs are shared by fork).
        train_length, val_length: samples per epoch.
        seed: base seed.
        keys, rename: outputs per item and their item keys (see :class:`SimulatedSamples`).
        anatomy_reuse, view_reuse: consecutive samples sharing one 3-D anatomy / one projection (speed; see
            :class:`~cxrdecomp.simulate.pipeline.Simulator`).
        real, real_every: optional real pairs mixed into training, one in ``real_every`` (:class:`MixedSamples`);
            validation stays simulated.
        **simulator: :class:`~cxrdecomp.simulate.pipeline.Simulator` arguments (``target``, ``method``, ``des``,
            ``ranges``, ``anatomy_reuse``, ``device`` ...).

    Train with ``use_distributed_sampler=False`` (the :class:`EpochSampler` already splits the indices by rank).
    """

    def __init__(self, cts=None, size: int = 256, batch_size: int = 8, num_workers: int = 0, train_length: int = 2000,
                 val_length: int = 64, seed: int = 0, keys: Sequence[str] = ("image", "soft_tissue", "bone", "lung_mask"),
                 rename: dict[str, str] | None = None, anatomy_reuse: int = 64, view_reuse: int = 8, real=None,
                 real_every: int = 4, **simulator) -> None:
        super().__init__()
        self.cts, self.size, self.batch_size, self.num_workers = cts, int(size), int(batch_size), int(num_workers)
        self.train_length, self.val_length, self.seed, self.keys, self.simulator_kwargs = train_length, val_length, seed, tuple(keys), simulator
        self.rename = rename
        self.real, self.real_every = real, int(real_every)
        self.simulator_kwargs.update(anatomy_reuse=anatomy_reuse, view_reuse=view_reuse)
        self.train_set = self.val_set = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        from cxrdecomp.simulate.pipeline import Simulator, check_ct

        cts = self.cts
        if cts is None:
            from cxrdecomp.io.ct import example_ct

            cts = [example_ct()]
        for ct in cts:
            check_ct(ct)
        sims = [Simulator(ct, self.size, **self.simulator_kwargs) for ct in cts]
        self.train_set = SimulatedSamples(sims, self.train_length, self.seed, "train", self.keys, self.rename)
        if self.real is not None:
            self.train_set = MixedSamples(self.train_set, self.real, self.real_every, self.seed)
        self.val_set = SimulatedSamples(sims, self.val_length, self.seed, "val", self.keys, self.rename)

    def describe(self) -> str:
        mix = (f", one in {self.real_every} replaced by one of {len(self.real)} real pairs" if self.real is not None else "")
        return (f"online realistic simulation of {len(self.val_set.simulators)} CT(s) at {self.size}² "
                f"({self.train_length} fresh samples per epoch{mix}; validation: {self.val_length} simulated samples of the "
                "held-out anatomy bank)")

    def train_dataloader(self) -> DataLoader:
        return make_loader(self.train_set, self.batch_size, shuffle=False, num_workers=self.num_workers, drop_last=True,
                           sampler=EpochSampler(self.train_length))

    def val_dataloader(self) -> DataLoader:
        return make_loader(self.val_set, self.batch_size, shuffle=False, num_workers=self.num_workers,
                           sampler=EpochSampler(self.val_length, fixed=True))


def datamodule_from_options(o, keys: Sequence[str], rename: dict[str, str] | None = None, **kwargs) -> SimulationDataModule:
    """The :class:`SimulationDataModule` of a trainer's :class:`~cxrdecomp.train.options.OnlineOptions` (``ct``,
    ``labels``, ``label_names``, ``size``, ``batch_size``, ``num_workers``, ``epoch_samples``, ``val_samples``,
    ``seed``), set up. ``**kwargs``: further :class:`SimulationDataModule` / Simulator arguments.

    Raises:
        InputError / DataNotFoundError: an unreadable or unusable CT.
    """
    cts = None
    if o.ct is not None:
        from cxrdecomp.io.ct import read_ct

        cts = [read_ct(o.ct, o.labels, o.label_names)]
    dm = SimulationDataModule(cts, size=int(o.size), batch_size=o.batch_size, num_workers=o.num_workers, train_length=o.epoch_samples,
                              val_length=o.val_samples, seed=int(o.seed), keys=keys, rename=rename, **kwargs)
    dm.setup("fit")
    return dm
