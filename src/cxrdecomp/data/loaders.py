"""The one DataLoader builder of the trainers."""

from __future__ import annotations

import torch


def make_loader(dataset, batch_size: int, *, shuffle: bool, num_workers: int = 0, drop_last: bool | None = None,
                pin_memory: bool | None = None, sampler=None) -> torch.utils.data.DataLoader:
    """A ``DataLoader`` over ``dataset`` with the trainers' settings.

    Worker processes persist between epochs; memory is pinned when CUDA is available (``pin_memory=False``
    for datasets that already return CUDA tensors, such as the online DRR renderer). ``drop_last``
    defaults to dropping the last incomplete batch of a shuffled (training) loader when the dataset holds
    more than one batch (BatchNorm and DDP dislike a batch of one), and never for validation. ``sampler``
    replaces shuffling (e.g. :class:`cxrdecomp.data.online.EpochSampler`).
    """
    if drop_last is None:
        drop_last = bool(shuffle) and len(dataset) > batch_size
    return torch.utils.data.DataLoader(
        dataset, batch_size=int(batch_size), shuffle=shuffle if sampler is None else False, sampler=sampler, drop_last=drop_last, num_workers=int(num_workers),
        persistent_workers=num_workers > 0, pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
    )
