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
    "bone_unet": "cxrdecomp.methods_bone:train_bone_unet",
}


def trainer(method: str) -> Callable[[dict[str, Any]], Path]:
    """The training function of ``method``.

    Raises:
        ConfigError: unknown method.
    """
    if method not in TRAINERS:
        raise ConfigError(f"no trainer for method {method!r}; trainable methods: {sorted(TRAINERS)}")
    mod, fn = TRAINERS[method].split(":")
    return getattr(importlib.import_module(mod), fn)
