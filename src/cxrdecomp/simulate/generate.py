"""Generate stored training pairs from CT volumes (``cxrdecomp simulate``).

Layout of the output folder ``DIR``::

    DIR/samples/ct000_s00000.npy    (3, S, S) float32 [total, bone, soft] line integrals (attenuation domain)
    DIR/samples/ct000_s00000.json   per-sample parameters (written after the .npy: its presence marks
                                    the sample finished)
    DIR/previews/ct000_s00000.png   8-bit preview: DRR | bone | soft tissue (display domain, per-image window)
    DIR/manifest.json, manifest.csv all samples' parameters (rewritten at the end of every run)
    DIR/simulation.json             settings of the run

Resumable: a sample whose ``.npy`` and ``.json`` exist is skipped; every file is written atomically
(:func:`cxrdecomp.io.atomic.atomic_path`) so a kill leaves either a finished sample or none (a stray
``.part`` temporary is ignored and overwritten). Per-sample parameters are drawn from a generator seeded
with ``(seed, ct index, sample index)``, so a regenerated sample equals the lost one.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cxrdecomp.io.atomic import atomic_path

SAMPLES = "samples"
PREVIEWS = "previews"


def sample_name(ct_index: int, i: int) -> str:
    return f"ct{ct_index:03d}_s{i:05d}"


def is_done(out: Path, name: str) -> bool:
    """A sample is finished when both its array and its parameter file exist."""
    return (out / SAMPLES / f"{name}.npy").is_file() and (out / SAMPLES / f"{name}.json").is_file()


def _preview(arr: np.ndarray, height: int = 192) -> bytes:
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from cxrdecomp.simulate.render import display_window, to_display

    t = torch.from_numpy(arr)[:, None]  # (3,1,S,S)
    lo, hi = display_window(t[0:1])
    d = to_display(t[0:1], lo, hi)
    b = t[1:2] / (hi - lo)
    s = to_display(t[2:3], lo, hi)
    row = torch.cat([d, b, s], dim=-1).clamp(0, 1)
    row = F.interpolate(row, size=(height, 3 * height), mode="area")[0, 0]
    buf = io.BytesIO()
    Image.fromarray((row.numpy() * 255 + 0.5).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _write_sample(out: Path, name: str, arr: np.ndarray, meta: dict[str, Any], previews: bool) -> None:
    with atomic_path(out / SAMPLES / f"{name}.npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, arr)
    if previews:
        data = _preview(arr)
        with atomic_path(out / PREVIEWS / f"{name}.png") as tmp:
            Path(tmp).write_bytes(data)
    with atomic_path(out / SAMPLES / f"{name}.json") as tmp:
        Path(tmp).write_text(json.dumps(meta, indent=1) + "\n")


def write_manifest(out: Path) -> list[dict[str, Any]]:
    """Collect every finished sample's parameters into ``manifest.json`` and ``manifest.csv``."""
    out = Path(out)
    rows = []
    for p in sorted((out / SAMPLES).glob("*.json")):
        if (p.with_suffix(".npy")).is_file():
            rows.append(json.loads(p.read_text()))
    with atomic_path(out / "manifest.json") as tmp:
        Path(tmp).write_text(json.dumps(rows, indent=1) + "\n")
    if rows:
        keys = list(rows[0].keys())
        with atomic_path(out / "manifest.csv") as tmp:
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
                w.writeheader()
                w.writerows(rows)
    return rows


def simulate(
    cts: Sequence[Any],
    out: str | os.PathLike,
    *,
    n_per_ct: int = 100,
    size: int = 512,
    seed: int = 0,
    bone: str = "auto",
    hu_window: tuple[float, float] = (300.0, 700.0),
    soft_fill_hu: float | None = None,
    max_rot_deg: float = 10.0,
    flip_p: float = 0.5,
    density: tuple[float, float] = (0.8, 1.2),
    ray_step_mm: float | None = None,
    device: str = "cpu",
    previews: bool = True,
    progress: bool = True,
) -> dict[str, int]:
    """Render ``n_per_ct`` varied samples of every CT into ``out`` (see module docstring).

    Args:
        cts: CT sources: :class:`cxrdecomp.io.ct.CTVolume` objects or zero-argument callables returning one
            (loaded only when that CT still has unfinished samples).
        out: output folder.
        n_per_ct, size, seed: samples per CT, detector size S, random seed.
        bone, hu_window, soft_fill_hu: target definition (see :mod:`cxrdecomp.simulate.targets`).
        max_rot_deg, flip_p, density: per-sample variation ranges.
        ray_step_mm, device: renderer settings (see :class:`cxrdecomp.simulate.render.CTRenderer`).

    Returns:
        ``{"written": n, "skipped": n, "total": n}``.

    Raises:
        InputError: bad CT or bone definition.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from cxrdecomp.simulate.render import CTRenderer

    out = Path(out)
    (out / SAMPLES).mkdir(parents=True, exist_ok=True)
    settings = {
        "n_per_ct": n_per_ct, "size": size, "seed": seed, "bone": bone, "hu_window": list(hu_window),
        "soft_fill_hu": soft_fill_hu, "max_rot_deg": max_rot_deg, "flip_p": flip_p, "density": list(density),
        "ray_step_mm": ray_step_mm, "format": "(3,S,S) float32 [total, bone, soft] line integrals, attenuation domain",
    }
    with atomic_path(out / "simulation.json") as tmp:
        Path(tmp).write_text(json.dumps(settings, indent=1) + "\n")
    total = n_per_ct * len(cts)
    written = skipped = 0
    cols = [TextColumn("simulate"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*cols, disable=not progress) as bar:
        task = bar.add_task("simulate", total=total)
        for ci, src in enumerate(cts):
            todo = [i for i in range(n_per_ct) if not is_done(out, sample_name(ci, i))]
            skipped += n_per_ct - len(todo)
            bar.advance(task, n_per_ct - len(todo))
            if not todo:
                continue
            ct = src() if callable(src) else src
            r = CTRenderer(ct, bone=bone, hu_window=hu_window, soft_fill_hu=soft_fill_hu, size=size, ray_step_mm=ray_step_mm, device=device)
            for i in todo:
                rng = np.random.default_rng([seed, ci, i])
                params = CTRenderer.random_params(rng, max_rot_deg=max_rot_deg, flip_p=flip_p, density=density)
                s = r.render(**params)
                name = sample_name(ci, i)
                meta = {"name": name, "ct_index": ci, "ct": str(getattr(ct, "source", "")), "sample": i, **params,
                        "pixel_mm": s.pixel_mm, "ray_length_cm": s.ray_length_cm, "size": size,
                        "bone": bone, "soft_fill_hu": soft_fill_hu}
                _write_sample(out, name, s.stacked(), meta, previews)
                written += 1
                bar.advance(task)
            del r
    write_manifest(out)
    return {"written": written, "skipped": skipped, "total": total}
