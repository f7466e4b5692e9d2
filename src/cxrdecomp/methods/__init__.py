"""The one registry of decomposition methods: name → :class:`MethodSpec`.

Each method lives in its own folder ``cxrdecomp/methods/<name>/``:

* ``network.py`` — the network and ``build(**config["model"]) -> nn.Module``;
* ``predict.py`` — ``predict(model, x, options) -> dict[str, Tensor]`` (inference imports only these two);
* ``options.py`` — the training options dataclass (a :class:`cxrdecomp.train.TrainOptions`), from which
  ``cxrdecomp train <name>`` builds its command-line options;
* ``module.py`` — the LightningModule(s) and ``train(options) -> Path`` (the exported checkpoint folder).

The predictor contract: ``x`` is ``(B, 1, S, S)`` float32 in the display domain ``[0, 1]`` at the model's
``input_size``; the result holds, at the same size, some of

* ``"bone"``: the bone image in the display domain, defined so that ``x ≈ soft_tissue + bone``;
* ``"soft_tissue"``: the bone-suppressed image (display domain);
* ``"lung"``: the "lung X-ray" (lung structures only), display domain ``[0, 1]``;
* ``"lung_mask"``: lung probability ``[0, 1]``.

:class:`cxrdecomp.decomposer.Decomposer` turns these into full-resolution outputs.

Specs name their code as ``"module:attribute"`` strings resolved on first use, so importing the registry
imports no network, and :class:`~cxrdecomp.decomposer.Decomposer` never imports Lightning or another
method's code. Adding a method: docs/architecture.md, "Adding a method".
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any, Callable

from cxrdecomp.errors import CheckpointError, ConfigError


@dataclass(frozen=True)
class MethodSpec:
    """How to build, run and train one method.

    Attributes:
        name: the method name written as ``config.json["method"]`` by its trainer.
        title: one line: what it is and the paper it implements.
        network: ``"module:function"`` building the untrained network from ``config["model"]``.
        predict: ``"module:function"``, ``predict(model, x, options) -> dict`` (module docstring).
        options: ``"module:Class"``, the training options dataclass (``None``: not trainable here).
        train: ``"module:function"``, ``train(options) -> Path`` of the exported checkpoint folder.
        bundled: name of the bundled checkpoint in ``cxrdecomp/pretrained/`` (``None``: none bundled).
        aliases: other names accepted for the method (``--method``, older ``config.json`` files).
    """

    name: str
    title: str
    network: str
    predict: str
    options: str | None = None
    train: str | None = None
    bundled: str | None = None
    aliases: tuple[str, ...] = ()


def _spec(name: str, title: str, bundled: str | None, aliases: tuple[str, ...] = ()) -> MethodSpec:
    pkg = f"cxrdecomp.methods.{name}"
    return MethodSpec(
        name=name, title=title, network=f"{pkg}.network:build", predict=f"{pkg}.predict:predict",
        options=f"{pkg}.options:Options", train=f"{pkg}.module:train", bundled=bundled, aliases=aliases,
    )


METHODS: dict[str, MethodSpec] = {
    s.name: s
    for s in (
        _spec("bone_unet", "bone-extraction U-Net trained on DRRs (Gozes & Greenspan, ISBI 2019)", "bone", ("bone",)),
        _spec("lung", "lung-structure enhancement: lung segmentation + lung X-ray U-Nets (Gozes & Greenspan 2018)", "lung"),
        # "ae": the plain-autoencoder ablation of the DAE paper (same network, trained without the bone branch)
        _spec("dae", "disentanglement autoencoder for bone suppression (DAE, §2.1)", "dae", ("ae",)),
        _spec("bsdiff", "BS-Diff: conditional diffusion + enhancement autoencoder (Chen et al., ISBI 2024)", "bsdiff"),
        _spec("xraysyn", "XraySyn: 3D prior from one radiograph, novel views, bone suppression by reverse CT2Xray (Peng et al., AAAI 2021)", "xraysyn"),
    )
}

DEFAULT = "bone"
"""The bundled checkpoint used when no method is given and no measured ranking names one (see
:func:`default_checkpoint`)."""

RANKING = "ranking.json"


def default_checkpoint() -> str:
    """The bundled checkpoint used when no method is given (``decompose``, ``Decomposer.from_pretrained()``,
    ``evaluate``, ``serve``, ``make demo``): the best-scoring one on real radiographs, as measured and written to
    ``pretrained/ranking.json`` by ``python scripts/results.py`` (docs/results.md); :data:`DEFAULT` when no ranking
    names a bundled checkpoint."""
    import json

    from cxrdecomp import checkpoint

    try:
        name = json.loads((checkpoint.PRETRAINED_DIR / RANKING).read_text())["default"]
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT
    return name if name in checkpoint.available_pretrained() else DEFAULT


def names() -> list[str]:
    """Every accepted method name: registry names and aliases, sorted."""
    return sorted({*METHODS, *(a for s in METHODS.values() for a in s.aliases)})


def get(name: str) -> MethodSpec:
    """The spec of a method name or alias.

    Raises:
        CheckpointError: unknown name (the message lists the known ones).
    """
    if name in METHODS:
        return METHODS[name]
    for s in METHODS.values():
        if name in s.aliases:
            return s
    raise CheckpointError(f"unknown method {name!r}; known methods: {names()}")


def _resolve(target: str) -> Any:
    mod, attr = target.split(":")
    return getattr(importlib.import_module(mod), attr)


def build_model(method: str, **kwargs):
    """The untrained network of ``method`` from its ``config["model"]`` keyword arguments."""
    return _resolve(get(method).network)(**kwargs)


def predictor(method: str) -> Callable[..., dict]:
    """The ``predict(model, x, options)`` function of ``method`` (see module docstring)."""
    return _resolve(get(method).predict)


def trainable() -> list[str]:
    """Names of the methods ``cxrdecomp train`` can train, in registry order."""
    return [n for n, s in METHODS.items() if s.train]


def _trainable(method: str) -> MethodSpec:
    try:
        s = get(method)
    except CheckpointError:
        s = None
    if s is None or not s.train or not s.options:
        raise ConfigError(f"no trainer for method {method!r}; trainable methods: {trainable()}")
    return s


def train_options(method: str) -> type:
    """The training options dataclass of ``method``.

    Raises:
        ConfigError: unknown or untrainable method.
    """
    return _resolve(_trainable(method).options)


def trainer(method: str) -> Callable[[Any], os.PathLike]:
    """``train(options) -> Path`` of ``method`` (imports Lightning).

    Raises:
        ConfigError: unknown or untrainable method.
    """
    return _resolve(_trainable(method).train)


def bundled_checkpoint(method: str | None = None) -> str:
    """Bundled checkpoint name of a method name or alias (``None``: :func:`default_checkpoint`).

    Bundled names themselves are accepted too (``"bone"``).

    Raises:
        ConfigError: unknown method, or one with no bundled checkpoint.
    """
    if method is None:
        return default_checkpoint()
    try:
        s = get(method)
    except CheckpointError:
        raise ConfigError(f"unknown method {method!r}; choose one of {names()} or give a checkpoint folder") from None
    if not s.bundled:
        raise ConfigError(f"method {method!r} has no bundled checkpoint; give a checkpoint folder")
    return s.bundled


def load(name_or_path: str | os.PathLike, map_location: str = "cpu"):
    """Rebuild the trained network of a checkpoint folder or bundled name.

    Returns:
        ``(model, config)``: the ``torch.nn.Module`` in eval mode and the parsed ``config.json``.

    Raises:
        CheckpointError: missing files, unknown method, or weights that do not fit the config.
    """
    from cxrdecomp import checkpoint

    cfg = checkpoint.load_config(name_or_path)
    model = build_model(cfg["method"], **cfg.get("model", {}))
    return checkpoint.load_weights(name_or_path, model, map_location), cfg
