"""Stored training samples from CT volumes through the realistic pipeline (``cxrdecomp simulate``).

Layout of the output folder ``DIR``::

    DIR/samples/ct000_s00000.npz    the sample's outputs (see below)
    DIR/samples/ct000_s00000.json   its parameters (:class:`~cxrdecomp.simulate.pipeline.SampleParams`), written
                                    after the .npz: its presence marks the sample finished
    DIR/previews/ct000_s00000.png   8-bit preview: image | soft tissue | bone (×3) | lung X-ray (×3)
    DIR/manifest.json, manifest.csv all finished samples' parameters (rewritten at the end of every run)
    DIR/simulation.json             the settings of the run (a rerun with other settings is refused)

The ``.npz`` holds ``image`` and ``soft_tissue`` (float32, display domain; ``bone = image − soft_tissue``
exactly), ``lung``, ``t_bone``, ``t_tissue`` (and ``des_soft``, ``des_bone`` with ``des``) as float16,
``lung_mask``, ``bone_mask``, ``nodule_mask`` and ``field`` as uint8, all ``(S, S)``
(:mod:`cxrdecomp.simulate.pipeline` defines them). :func:`load_sample` reads one back.

Resumable and splittable: a sample whose ``.npz`` and ``.json`` exist is skipped; every file is written
atomically (:func:`cxrdecomp.io.atomic.atomic_path`), so a kill leaves finished samples or none. Sample
``i`` of CT ``c`` is a pure function of (CT, ``i``, ``seed``) (:meth:`Simulator.sample`), so a regenerated
sample equals the lost one, and ``shard=(k, n)`` renders exactly the samples whose global number
``c · n_per_ct + i`` is ``k`` mod ``n``: shards ``0/n … (n−1)/n`` together equal the unsharded run.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from cxrdecomp.errors import ConfigError, DataNotFoundError, InputError
from cxrdecomp.io.atomic import atomic_path

SAMPLES = "samples"
PREVIEWS = "previews"
FORMAT = "cxrdecomp-simulation/2"
FLOAT16 = ("lung", "t_bone", "t_tissue", "des_soft", "des_bone")
MASKS = ("lung_mask", "bone_mask", "nodule_mask", "field")
STORED = ("image", "soft_tissue", *FLOAT16, *MASKS)


def sample_name(ct_index: int, i: int) -> str:
    return f"ct{ct_index:03d}_s{i:05d}"


def is_done(out: Path, name: str) -> bool:
    """A sample is finished when both its arrays and its parameter file exist."""
    return (out / SAMPLES / f"{name}.npz").is_file() and (out / SAMPLES / f"{name}.json").is_file()


def finished(out: str | os.PathLike) -> list[str]:
    """Names of the finished samples of a simulate folder, sorted."""
    d = Path(out) / SAMPLES
    return sorted(p.stem for p in d.glob("*.npz") if p.with_suffix(".json").is_file()) if d.is_dir() else []


def load_sample(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """One stored sample (``.npz``) as float32 ``(S, S)`` arrays, with ``bone = image − soft_tissue`` added.

    Raises:
        InputError: not a sample of this format.
    """
    path = Path(path)
    try:
        with np.load(path) as z:
            d = {k: z[k].astype(np.float32) for k in z.files}
    except (OSError, ValueError) as e:
        raise InputError(f"{path}: not a readable simulated sample ({e})") from None
    if "image" not in d or "soft_tissue" not in d:
        raise InputError(f"{path}: a simulated sample needs 'image' and 'soft_tissue' arrays; rerun `cxrdecomp simulate` (format {FORMAT})")
    d["bone"] = d["image"] - d["soft_tissue"]
    return d


def _preview(d: dict[str, np.ndarray]) -> bytes:
    from PIL import Image

    row = np.concatenate([d["image"], d["soft_tissue"], np.clip(3 * (d["image"] - d["soft_tissue"]), 0, 1), np.clip(3 * d["lung"], 0, 1)], 1)
    buf = io.BytesIO()
    Image.fromarray((np.clip(row, 0, 1) * 255 + 0.5).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _write_sample(out: Path, name: str, d: dict[str, np.ndarray], meta: dict[str, Any], previews: bool) -> None:
    arrays = {}
    for k in STORED:
        if k in d:
            v = d[k]
            arrays[k] = v.astype(np.uint8) if k in MASKS else v.astype(np.float16 if k in FLOAT16 else np.float32)
    with atomic_path(out / SAMPLES / f"{name}.npz") as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    if previews:
        data = _preview(d)
        with atomic_path(out / PREVIEWS / f"{name}.png") as tmp:
            Path(tmp).write_bytes(data)
    with atomic_path(out / SAMPLES / f"{name}.json") as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=1) + "\n")


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if not isinstance(v, (list, tuple)) else json.dumps(v)
    return out


def write_manifest(out: Path) -> list[dict[str, Any]]:
    """Collect every finished sample's parameters into ``manifest.json`` and ``manifest.csv`` (flattened keys)."""
    out = Path(out)
    rows = [json.loads((out / SAMPLES / f"{n}.json").read_text()) for n in finished(out)]
    with atomic_path(out / "manifest.json") as tmp:
        Path(tmp).write_text(json.dumps(rows, indent=1) + "\n")
    if rows:
        flat = [_flat(r) for r in rows]
        keys = list(dict.fromkeys(k for r in flat for k in r))
        with atomic_path(out / "manifest.csv") as tmp:
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=keys)
                w.writeheader()
                w.writerows(flat)
    return rows


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Refuse to continue a folder simulated with other settings (``n_per_ct`` may grow)."""
    path = out / "simulation.json"
    if not path.is_file():
        if (out / SAMPLES).is_dir() and any((out / SAMPLES).glob("*.npy")):
            raise ConfigError(f"{out} holds samples of an older format (.npy line integrals); use a new output folder")
        return
    try:
        old = json.loads(path.read_text())
    except ValueError:
        raise ConfigError(f"{path} is not valid JSON; use a new output folder") from None
    diff = sorted(k for k in set(old) | set(settings) if k != "n_per_ct" and old.get(k) != settings.get(k))
    if diff:
        shown = ", ".join(f"{k}: {old.get(k)!r} → {settings.get(k)!r}" for k in diff if k != "ranges")
        if "ranges" in diff:
            shown = ", ".join(filter(None, [shown, "ranges differ"]))
        raise ConfigError(f"{out} was simulated with other settings ({shown}); rerun with the same settings or use a new folder")


def simulate(
    cts: Sequence[Any],
    out: str | os.PathLike,
    *,
    n_per_ct: int = 100,
    size: int = 512,
    seed: int = 0,
    split: str = "train",
    target: str = "volume",
    method: str = "shearwarp",
    des: bool = False,
    anatomy_reuse: int = 8,
    ranges=None,
    shard: tuple[int, int] = (0, 1),
    device: str = "cpu",
    previews: bool = True,
    progress: bool = True,
) -> dict[str, int]:
    """Render ``n_per_ct`` realistic samples of every CT into ``out`` (see module docstring).

    Args:
        cts: CT sources: :class:`cxrdecomp.io.ct.CTVolume` objects or zero-argument callables returning one
            (loaded only when that CT still has unfinished samples in this shard).
        out: output folder.
        n_per_ct, size, seed: samples per CT, detector size S, random seed.
        split: ``"train"`` or ``"val"`` (the held-out anatomy bank; see :class:`~cxrdecomp.simulate.pipeline.Simulator`).
        target, method, des, anatomy_reuse, ranges: :class:`~cxrdecomp.simulate.pipeline.Simulator` settings.
        shard: ``(k, n)``: render only the samples whose global number is ``k`` mod ``n``.
        device: torch device of the rendering.

    Returns:
        ``{"written": n, "skipped": n, "total": n}`` (counts within this shard).

    Raises:
        InputError: a bad CT (checked before anything of it is written). ConfigError: other settings than the
        folder's, bad shard.
    """
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from cxrdecomp.simulate.pipeline import SimulationRanges, Simulator, check_ct

    k, n = shard
    if not 0 <= k < n:
        raise ConfigError(f"shard must satisfy 0 ≤ k < n, got {k}/{n}")
    if n_per_ct < 1:
        raise ConfigError(f"--n-per-ct must be ≥ 1, got {n_per_ct}")
    if not cts:
        raise ConfigError("give at least one CT")
    out = Path(out)
    ranges = ranges or SimulationRanges()
    settings = {
        "format": FORMAT, "size": int(size), "seed": int(seed), "split": split, "target": target, "method": method, "des": bool(des),
        "anatomy_reuse": int(anatomy_reuse), "n_per_ct": int(n_per_ct), "n_cts": len(cts), "ranges": json.loads(json.dumps(asdict(ranges))),
    }
    _check_settings(out, settings)
    todo = {ci: [i for i in range(n_per_ct) if (ci * n_per_ct + i) % n == k] for ci in range(len(cts))}
    total = sum(len(v) for v in todo.values())
    written = skipped = 0
    started = False
    cols = [TextColumn(f"simulate {k}/{n}" if n > 1 else "simulate"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*cols, disable=not progress) as bar:
        task = bar.add_task("simulate", total=total)
        for ci, src in enumerate(cts):
            left = [i for i in todo[ci] if not is_done(out, sample_name(ci, i))]
            skipped += len(todo[ci]) - len(left)
            bar.advance(task, len(todo[ci]) - len(left))
            if not left:
                continue
            ct = src() if callable(src) else src
            check_ct(ct)
            sim = Simulator(ct, size, device=device, target=target, method=method, des=des, ranges=ranges, anatomy_reuse=anatomy_reuse)
            if not started:  # first output only once the first CT is known to be good
                (out / SAMPLES).mkdir(parents=True, exist_ok=True)
                with atomic_path(out / "simulation.json") as tmp:
                    Path(tmp).write_text(json.dumps(settings, indent=1) + "\n")
                started = True
            for i in left:
                s = sim.sample(i, seed, split)
                name = sample_name(ci, i)
                arrays = {key: v[0].detach().cpu().numpy() for key, v in s.items() if key != "params"}
                meta = {"name": name, "ct_index": ci, "ct": str(getattr(ct, "source", "")), "sample": i, "split": split,
                        "size": int(size), "target": target, **s["params"].to_dict()}
                _write_sample(out, name, arrays, meta, previews)
                written += 1
                bar.advance(task)
            del sim
    if started or finished(out):
        write_manifest(out)
    return {"written": written, "skipped": skipped, "total": total}


def require_samples(root: str | os.PathLike) -> list[str]:
    """Finished sample names of ``root`` or a clear error."""
    names = finished(root)
    if not names:
        raise DataNotFoundError(f"no simulated samples in {root}/{SAMPLES}; run `cxrdecomp simulate CT -o {root}` first")
    return names
