"""Training and validation items of both BS-Diff stages, with the paper's augmentation (§3.2)."""

from __future__ import annotations

from pathlib import Path

import torch

from cxrdecomp.data.augment import affine_matrices, apply_affine, random_gamma
from cxrdecomp.methods.bsdiff.predict import condition_of


def load_split(root: Path, split: str, size: int, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Radiographs and soft-tissue images of ``root/split`` (``cxr/`` + ``soft/``), resized to ``size``².

    Returns:
        ``(cxr, soft)``, each ``(N, 1, size, size)`` float32 display domain ``[0, 1]``; only the first
        ``limit`` pairs when ``limit`` is given.

    Raises:
        DataNotFoundError: missing or empty folders.
    """
    from cxrdecomp.data.pairs import PairedImages

    ds = PairedImages(root / split, size=size)
    cxr, soft = ds.cxr, ds.soft
    if limit:
        cxr, soft = cxr[:limit], soft[:limit]
    return cxr, soft


class BSDiffPairs(torch.utils.data.Dataset):
    """Training/validation items for both stages, with BS-Diff's augmentation (§3.2).

    Args:
        cxr, soft: ``(N, 1, S, S)`` display domain ``[0, 1]``.
        source: stage-2 input (stage-1 outputs) ``(N, 1, S, S)`` display domain, or ``None`` for stage 1.
        augment: random horizontal flip (p = 0.5), rotation by ``U(±rotate)`` degrees (edge pixels
            repeated) and gamma contrast change ``γ = exp(U(−gamma, gamma))``
            (:func:`cxrdecomp.data.augment.random_gamma`) — the same transform for every image of an item.
        use_clahe: CLAHE on the conditioning radiograph.
        condition: :func:`cxrdecomp.methods.bsdiff.predict.make_condition` mode of the model.
        repeats: the dataset is ``repeats`` passes over the pairs (longer epochs, fewer checkpoints).

    Items: ``{"cond", "soft"[, "source"]}`` in ``[−1, 1]`` and ``"cxr"`` in the display domain, each
    ``(C, S, S)`` (``C`` condition channels for ``"cond"``, else 1).
    """

    def __init__(self, cxr, soft, source=None, augment: bool = False, use_clahe: bool = True, repeats: int = 1, rotate: float = 10.0, gamma: float = 0.2,
                 condition: str = "clahe"):
        self.cxr, self.soft, self.source, self.cond_mode = cxr, soft, source, condition
        self.augment, self.use_clahe, self.repeats = augment, use_clahe, max(1, int(repeats))
        self.rotate, self.gamma = rotate, gamma

    def __len__(self) -> int:
        return len(self.cxr) * self.repeats

    def _augment(self, stack: torch.Tensor) -> torch.Tensor:
        """One random flip + rotation + gamma for the ``(K, S, S)`` stack of an item's images."""
        theta = affine_matrices(1, rotation=self.rotate, hflip=0.5)
        (stack,) = apply_affine(theta, stack[None], padding_mode="border")
        return random_gamma(stack[0], self.gamma)

    def __getitem__(self, i: int) -> dict:
        i = i % len(self.cxr)
        parts = [self.cxr[i], self.soft[i]] + ([self.source[i]] if self.source is not None else [])
        stack = torch.cat(parts, 0).float()
        if self.augment:
            stack = self._augment(stack)
        stack = stack.clamp(0, 1)
        cxr = stack[0:1]
        item = {"cxr": cxr, "cond": condition_of(cxr[None], self.cond_mode, self.use_clahe)[0], "soft": 2 * stack[1:2] - 1}
        if self.source is not None:
            item["source"] = 2 * stack[2:3] - 1
        return item
