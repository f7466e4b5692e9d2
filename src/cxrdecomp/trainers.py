"""Registry of training entry points used by ``cxrdecomp train --method NAME``.

Each entry maps a method name to ``"module:function"``; the function takes one ``options`` dict
(the CLI's common options — ``data``, ``out``, ``epochs``, ``max_steps``, ``batch_size``, ``lr``, ``size``,
``base``, ``accelerator``, ``devices``, ``num_nodes``, ``strategy``, ``precision``, ``num_workers``,
``resume``, ``vgg_weights``, ``real_pairs`` — plus any ``--opt key=value`` extras; ``None`` = the
method's default) and returns the exported checkpoint folder (normally via :func:`cxrdecomp.train.fit`).
Other methods add one line here and put their function in their own module.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable

from cxrdecomp.errors import ConfigError

TRAINERS: dict[str, str] = {
    "bone_unet": "cxrdecomp.methods.bone_unet.module:train_bone_unet",
    "dae": "cxrdecomp.trainers:train_dae_options",
    "bsdiff": "cxrdecomp.trainers:train_bsdiff_options",
    "lung_seg": "cxrdecomp.trainers:train_lung_seg_options",
    "lung_extract": "cxrdecomp.trainers:train_lung_extract_options",
}

# what the CLI passes when the user left a common option alone; a method without that option ignores these
_NEUTRAL = {"num_nodes": 1, "strategy": "auto", "resume": True, "devices": 1, "accelerator": "auto"}


def trainer(method: str) -> Callable[[dict[str, Any]], Path]:
    """The training function of ``method``.

    Raises:
        ConfigError: unknown method.
    """
    if method not in TRAINERS:
        raise ConfigError(f"no trainer for method {method!r}; trainable methods: {sorted(TRAINERS)}")
    mod, fn = TRAINERS[method].split(":")
    return getattr(importlib.import_module(mod), fn)


def _adapt(method: str, options: dict[str, Any], allowed, rename: dict[str, str] | None = None) -> dict[str, Any]:
    """Map the common ``train`` options onto a method's own option names.

    ``None`` values (options not given) are dropped; options the method does not have raise, unless the
    CLI passed its neutral default (one node, automatic strategy, ...).

    Raises:
        ConfigError: an option the method does not take.
    """
    rename = rename or {}
    out, bad = {}, []
    for k, v in options.items():
        if v is None:
            continue
        k2 = rename.get(k, k)
        if k2 in allowed:
            out[k2] = v
        elif not (k in _NEUTRAL and v == _NEUTRAL[k]):
            bad.append(k)
    if bad:
        raise ConfigError(f"train --method {method} does not take {sorted(bad)}; its options: {sorted(allowed)}")
    return out


def train_dae_options(options: dict[str, Any]) -> Path:
    """``train --method dae`` → :func:`cxrdecomp.methods.dae.network.train_dae` (``--opt variant=ae`` for the AE baselines)."""
    import dataclasses

    from cxrdecomp.methods.dae.network import DAETrainOptions, train_dae

    allowed = {f.name for f in dataclasses.fields(DAETrainOptions)}
    return train_dae(DAETrainOptions(**_adapt("dae", options, allowed)))


def train_bsdiff_options(options: dict[str, Any]) -> Path:
    """``train --method bsdiff`` → :func:`cxrdecomp.methods.bsdiff.network.train_bsdiff` (``--opt stage=2``,
    ``--opt model='{"target": "residual"}'``, ...); ``--vgg-weights`` is the stage-2 perceptual loss."""
    from cxrdecomp.methods.bsdiff.network import TRAIN_DEFAULTS, train_bsdiff

    opts = _adapt("bsdiff", options, set(TRAIN_DEFAULTS), {"vgg_weights": "perceptual_weights"})
    return train_bsdiff(opts)


def _lung(options: dict[str, Any], which: str) -> Path:
    import dataclasses

    from cxrdecomp.models import lung

    allowed = {f.name for f in dataclasses.fields(lung.LungTrainOptions)}
    kw = {k: (str(v) if isinstance(v, Path) else v) for k, v in _adapt(f"lung_{which}", options, allowed).items()}
    fn = lung.train_lung_seg if which == "seg" else lung.train_lung_extract
    return fn(lung.LungTrainOptions(**kw))


def train_lung_seg_options(options: dict[str, Any]) -> Path:
    """``train --method lung_seg`` → :func:`cxrdecomp.methods.lung.network.train_lung_seg` (data: ``simulate-lung`` output)."""
    return _lung(options, "seg")


def train_lung_extract_options(options: dict[str, Any]) -> Path:
    """``train --method lung_extract`` → :func:`cxrdecomp.methods.lung.network.train_lung_extract`."""
    return _lung(options, "extract")
