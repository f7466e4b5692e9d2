"""Evaluate a method or another tool's outputs on paired real images or held-out simulated pairs."""

from __future__ import annotations

import json
import os
from pathlib import Path

from cxrdecomp.errors import ConfigError
from cxrdecomp.evaluate.scoring import (
    IDENTITY,
    _decomposer,
    _predict_soft,
    run_evaluation,
)
from cxrdecomp.evaluate.sources import iter_pairs, iter_simulated
from cxrdecomp.io.atomic import atomic_path


def evaluate_pairs(pairs_dir: str | os.PathLike, out: str | os.PathLike, *, method: str | None = None,
                   checkpoint: str | os.PathLike | None = None, pred_dir: str | os.PathLike | None = None,
                   mask_dir: str | os.PathLike | None = None, device: str | None = None, save_pred: bool = False,
                   progress: bool = True) -> dict:
    """Evaluate a method (``method``/``checkpoint``; neither: the default model,
    :func:`cxrdecomp.methods.default_checkpoint`) or another tool's outputs (``pred_dir``) on a paired folder
    ``DIR/{cxr,soft}``; writes ``OUT/{per_image.csv, summary.json, grid.png}``.

    Returns the summary (see :func:`run_evaluation`).

    Raises:
        ConfigError: both a method and ``pred_dir``; unknown method.
        DataNotFoundError / InputError / CheckpointError: as the data and checkpoint dictate.
    """
    if pred_dir is not None and (method is not None or checkpoint is not None):
        raise ConfigError("give either --method/--checkpoint (run a cxrdecomp method) or --pred (score saved predictions), not both")
    names, gen, notes = iter_pairs(pairs_dir, pred_dir, mask_dir)
    info = {"pairs": str(pairs_dir), "masks": str(mask_dir) if mask_dir else None}
    predict = None
    if pred_dir is not None:
        label = "pred"
        info["pred_dir"] = str(pred_dir)
    else:
        dec, source = _decomposer(method, checkpoint, device)
        label = method or dec.method
        info.update(method=dec.method, checkpoint=source, input_size=dec.size)
        predict = lambda img: _predict_soft(dec, img)  # noqa: E731
    s = run_evaluation(gen(), out, label=label, predict=predict, info=info, save_pred=save_pred,
                       progress=progress, total=len(names))
    return _prepend_notes(s, notes, out)


def _prepend_notes(s: dict, notes: list, out: str | os.PathLike) -> dict:
    """Put ``notes`` first in the summary's notes and rewrite ``OUT/summary.json`` (atomically)."""
    if notes:
        s["notes"] = notes + s["notes"]
        with atomic_path(Path(out) / "summary.json") as tmp:
            tmp.write_text(json.dumps(s, indent=2, allow_nan=False, default=str) + "\n")
    return s


def evaluate_simulated(sim_dir: str | os.PathLike, out: str | os.PathLike, *, method: str | None = None,
                       checkpoint: str | os.PathLike | None = None, split: str | None = None, device: str | None = None,
                       progress: bool = True) -> dict:
    """Synthetic benchmark: run a method on held-out simulated pairs (see :func:`iter_simulated`) and score
    its soft-tissue output like :func:`evaluate_pairs` (identity baseline included; no method: the default model)."""
    names, gen, notes = iter_simulated(sim_dir, split)
    dec, source = _decomposer(method, checkpoint, device)
    info = {"simulated": str(sim_dir), "method": dec.method, "checkpoint": source, "input_size": dec.size}
    s = run_evaluation(gen(), out, label=method or dec.method, predict=lambda img: _predict_soft(dec, img), info=info,
                       progress=progress, total=len(names))
    return _prepend_notes(s, notes, out)


def format_table(summary: dict) -> str:
    """Plain-text table of a summary: metric, prediction mean ± std, identity mean."""
    label = summary["prediction"]
    res = summary["results"]
    lines = [f"{'metric':<16}{label:>24}{IDENTITY:>16}"]
    for k, v in res[label].items():
        b = res[IDENTITY][k]
        if v["n"] == 0:
            lines.append(f"{k:<16}{'n/a':>24}{'n/a':>16}")
            continue
        lines.append(f"{k:<16}{v['mean']:>15.4f} ± {v['std']:<6.4f}{b['mean'] if b['mean'] is not None else float('nan'):>16.4f}")
    return "\n".join(lines)
