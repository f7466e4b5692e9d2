"""BS-Diff inference: conditioning channels of a radiograph and the registry's ``predict`` function.

All images handed to these functions are in the display domain ``[0, 1]``; the network works on
``2·x − 1`` (``[−1, 1]``, BS-Diff §3.2). CLAHE (:func:`cxrdecomp.preprocess.clahe`) is applied to the
*conditioning* radiograph only, so that the predicted soft tissue stays in the input's intensity scale
and ``bone = x − soft_tissue`` is meaningful.
"""

from __future__ import annotations

import torch

from cxrdecomp.errors import ConfigError
from cxrdecomp.methods.bsdiff.diffusion import DEFAULT_STEPS
from cxrdecomp.methods.bsdiff.network import CONDITIONS, BSDiff
from cxrdecomp.preprocess import clahe


def make_condition(x: torch.Tensor, mode: str = "clahe") -> torch.Tensor:
    """Conditioning channels of display-domain radiographs ``x`` ``(B, 1, S, S)`` in ``[0, 1]``.

    ``mode``: ``"clahe"`` (the paper, §3.2: CLAHE(x)), ``"raw"`` (x) or ``"raw+clahe"`` (both, 2 channels;
    the network then sees the intensity scale it must reproduce and the equalised detail). Each channel
    is mapped to ``[−1, 1]``.

    Returns:
        ``(B, C, S, S)`` with ``C = 2`` for ``"raw+clahe"``, else 1.

    Raises:
        ConfigError: unknown mode.
    """
    if mode not in CONDITIONS:
        raise ConfigError(f"unknown condition {mode!r}; use one of {CONDITIONS}")
    x = x.clamp(0, 1)
    parts = ([x] if "raw" in mode else []) + ([clahe(x)] if "clahe" in mode else [])
    return torch.cat([2 * p - 1 for p in parts], 1)


def condition_of(x: torch.Tensor, mode: str = "clahe", use_clahe: bool = True) -> torch.Tensor:
    """:func:`make_condition`, or with ``use_clahe=False`` the raw image in every channel of ``mode``
    (same channel count, so a model trained with CLAHE can be run without it)."""
    if use_clahe:
        return make_condition(x, mode)
    return make_condition(x, "raw").repeat(1, 2 if mode == "raw+clahe" else 1, 1, 1)


def condition(model: BSDiff, x: torch.Tensor, use_clahe: bool = True) -> torch.Tensor:
    """Conditioning input of ``model`` (its ``cond_mode``) for display-domain radiographs ``(B, 1, S, S)``:
    :func:`condition_of`. Returns ``(B, C, S, S)`` in ``[−1, 1]``."""
    return condition_of(x, model.cond_mode, use_clahe)


def predict(model: BSDiff, x: torch.Tensor, options: dict) -> dict[str, torch.Tensor]:
    """Soft-tissue image of radiographs ``x`` ``(B, 1, S, S)`` (display domain ``[0, 1]``, model size).

    Options (``config["inference"]`` overridden by the caller): ``steps`` (DDIM steps, default 20),
    ``sampler`` (``"ddim"`` | ``"ddpm"``; DDPM always runs all 1000 steps), ``seed`` (default 0:
    deterministic), ``enhance`` (apply stage 2; ``True`` in checkpoints where it was trained), ``clahe``
    (default ``True``, as in training), ``amp`` (bfloat16 on CUDA, default ``True``), ``progress``.

    Returns:
        ``{"soft_tissue": (B, 1, S, S)}`` display domain ``[0, 1]``; the Decomposer derives
        ``bone = x − soft_tissue``.

    Raises:
        InputError: ``S`` not divisible by the U-Net's downsampling factor.
        ConfigError: unknown sampler, steps out of range.
    """
    cond = condition(model, x, use_clahe=bool(options.get("clahe", True)))
    seed = options.get("seed", 0)
    y = model.sample(
        cond,
        steps=int(options.get("steps", DEFAULT_STEPS)),
        sampler=str(options.get("sampler", "ddim")),
        seed=None if seed is None else int(seed),
        amp=bool(options.get("amp", True)),
        progress=bool(options.get("progress", False)),
        cxr=x.clamp(0, 1).float(),
    )
    if options.get("enhance", False):
        y = model.enhance(y, amp=bool(options.get("amp", True)))
    return {"soft_tissue": ((y + 1) / 2).clamp(0, 1).to(x.dtype)}
