"""Registry of the decomposition methods: name -> how to build the network and run it.

Each method module defines a builder (``build(**config["model"]) -> nn.Module``) and a predictor::

    predict(model, x, options) -> dict[str, Tensor]

where ``x`` is ``(B, 1, S, S)`` float32 in the display domain ``[0, 1]`` at the model's
``input_size`` and the result holds, at the same size, some of

* ``"bone"``: the bone image in the display domain, defined so that ``x ≈ soft_tissue + bone``;
* ``"soft_tissue"``: the bone-suppressed image (display domain);
* ``"lung"``: the "lung X-ray" (lung structures only), display domain ``[0, 1]``;
* ``"lung_mask"``: lung probability ``[0, 1]``.

:class:`cxrdecomp.infer.Decomposer` turns these into full-resolution outputs.
Methods are listed as ``"module:builder:predictor"`` strings so that importing the registry
does not import every model.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from cxrdecomp.errors import CheckpointError

# method name -> "module:builder_function:predict_function"
METHODS: dict[str, str] = {
    "bone_unet": "cxrdecomp.models.unet:build_bone_unet:predict_bone",
    "dae": "cxrdecomp.models.dae:build_dae:predict_dae",  # disentanglement autoencoder (issue 6)
    "ae": "cxrdecomp.models.dae:build_dae:predict_dae",  # its plain-autoencoder ablation baselines
    "lung": "cxrdecomp.models.lung:build_lung:predict_lung",
    "bsdiff": "cxrdecomp.models.bsdiff:build_bsdiff:predict_bsdiff",
}

# short names accepted by the CLI's --method -> bundled checkpoint name
DEFAULT_CHECKPOINT: dict[str, str] = {
    "bone": "bone",
    "dae": "dae",
    "lung": "lung",
    "bsdiff": "bsdiff",
}


def _resolve(method: str) -> tuple[Callable[..., Any], Callable[..., Any]]:
    if method not in METHODS:
        raise CheckpointError(f"unknown method {method!r}; known methods: {sorted(METHODS)}")
    mod, build, predict = METHODS[method].split(":")
    m = importlib.import_module(mod)
    return getattr(m, build), getattr(m, predict)


def build_model(method: str, **kwargs):
    """Build the untrained network of ``method`` from its config keyword arguments."""
    return _resolve(method)[0](**kwargs)


def predictor(method: str) -> Callable[..., dict]:
    """The ``predict(model, x, options)`` function of ``method`` (see module docstring)."""
    return _resolve(method)[1]
