"""Checkpoint folders: ``model.safetensors`` + ``config.json`` + ``MODEL_CARD.md``.

``config.json`` rebuilds the model without code changes::

    {"method": "bone_unet",            # a name in cxrdecomp.methods
     "model": {...},                   # keyword arguments of the method's builder
     "input_size": 512,                # square size the model runs at
     "inference": {...},               # method defaults (weights w, w_s, steps ...)
     "training": {...}, "metrics": {...}, "cxrdecomp_version": "0.1.0"}

Bundled default checkpoints live in ``cxrdecomp/pretrained/<name>/`` and are found by name.
This module only reads and writes folders; it knows nothing of the methods. Rebuilding the network a
folder describes is :func:`cxrdecomp.methods.load` (registry → builder → :func:`load_weights`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cxrdecomp.errors import CheckpointError
from cxrdecomp.io.atomic import atomic_folder

PRETRAINED_DIR = Path(__file__).parent / "pretrained"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
CARD = "MODEL_CARD.md"


def available_pretrained() -> list[str]:
    """Names of the bundled default checkpoints."""
    if not PRETRAINED_DIR.is_dir():
        return []
    return sorted(p.name for p in PRETRAINED_DIR.iterdir() if (p / CONFIG).is_file())


def resolve(name_or_path: str | os.PathLike) -> Path:
    """Folder of a checkpoint given a bundled name (``"bone"``) or a path.

    Raises:
        CheckpointError: neither a bundled name nor a folder holding ``config.json`` and weights.
    """
    p = Path(name_or_path).expanduser()
    if not p.exists() and (PRETRAINED_DIR / str(name_or_path)).is_dir():
        p = PRETRAINED_DIR / str(name_or_path)
    if not p.is_dir():
        raise CheckpointError(
            f"no checkpoint {str(name_or_path)!r}: give a checkpoint folder or one of the bundled names "
            f"{available_pretrained()}"
        )
    for f in (CONFIG, WEIGHTS):
        if not (p / f).is_file():
            raise CheckpointError(f"checkpoint folder {p} has no {f}; it was not written by cxrdecomp or is incomplete")
    return p


def digest(name_or_path: str | os.PathLike) -> str:
    """SHA-256 of a checkpoint's weights file (hex, first 16 digits): which weights made an output.

    Raises:
        CheckpointError: not a checkpoint.
    """
    p = resolve(name_or_path) / WEIGHTS
    st = p.stat()
    return _digest(str(p.resolve()), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def load_config(folder: str | os.PathLike) -> dict[str, Any]:
    p = resolve(folder)
    try:
        cfg = json.loads((p / CONFIG).read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{p / CONFIG} is not valid JSON: {e}") from e
    if "method" not in cfg:
        raise CheckpointError(f"{p / CONFIG} names no 'method'")
    return cfg


def load_weights(folder: str | os.PathLike, model, map_location: str = "cpu"):
    """Load ``model.safetensors`` of a checkpoint folder into ``model`` (strict) and put it in eval mode.

    Returns:
        ``model``.

    Raises:
        CheckpointError: missing files, or weights that do not fit the model described by ``config.json``.
    """
    from safetensors.torch import load_file

    folder = resolve(folder)
    state = load_file(str(folder / WEIGHTS), device=map_location)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"weights in {folder} do not fit the model described by its config.json: {e}") from e
    return model.eval()


def save(folder: str | os.PathLike, model, config: dict[str, Any], card: str) -> Path:
    """Write a checkpoint folder atomically (a temporary folder renamed when complete).

    Weights are stored in float32 unless ``config["dtype"] == "float16"`` (halves the size).
    Tensors that share memory are stored once each (cloned).
    """
    import torch
    from safetensors.torch import save_file

    from cxrdecomp import __version__

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    config = {**config, "cxrdecomp_version": __version__}
    dtype = torch.float16 if config.get("dtype") == "float16" else None
    state = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu().clone().contiguous()
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        state[k] = v
    with atomic_folder(folder) as tmp:
        save_file(state, str(tmp / WEIGHTS))
        (tmp / WEIGHTS).chmod(0o644)  # readable by the other users of a shared checkpoint
        (tmp / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        (tmp / CARD).write_text(card)
    return folder
