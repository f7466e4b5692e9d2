"""Scoring: read prediction files, compute every metric of one image, summarise, the evaluation loop
(per-image CSV, summary JSON, figure grid). Conventions: :mod:`cxrdecomp.evaluate`."""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from PIL import Image, ImageDraw

from cxrdecomp import metrics as M
from cxrdecomp.errors import ConfigError, DataNotFoundError, InputError
from cxrdecomp.io.atomic import atomic_path

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp", ".npy")
IDENTITY = "identity"
DIFF_GAIN = 10.0
TILE = 256

#: metric name -> one-line definition (also in summary.json and docs/metrics.md)
METRIC_INFO: dict[str, str] = {
    "rmse": "root mean squared error of the soft-tissue image, display domain [0,1] (x255 for 8-bit units)",
    "mae": "mean absolute error of the soft-tissue image, display domain [0,1]",
    "mse": "mean squared error of the soft-tissue image, display domain [0,1]",
    "psnr": "10 log10(1 / MSE) dB, data_range = 1 (same as 255 on 8-bit values)",
    "ssim": "SSIM, Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, data_range 1",
    "ssim_uniform7": "SSIM with scikit-image's default 7x7 uniform window, sample covariance (BS-LDM scripts, data README)",
    "ms_ssim": "MS-SSIM, Wang et al. 2003, 5 scales, weights 0.0448 0.2856 0.3001 0.2363 0.1333 (NaN below 161 px)",
    "bsr": "bone suppression ratio, Yang et al. 2017: 1 - sum (S^-S)^2 / sum (I-S)^2; identity 0, perfect 1",
    "bsr_bsldm": "BS-LDM/GL-LCM code's BSR: prediction mean-shifted onto the truth, only positive residuals counted",
    "bsr_tm": "tone-matched BSR: bsr after a per-image least-squares a*x+b fit onto the truth of prediction and identity alike",
    "rmae": "relative MAE of the bone image I-S^ vs I-S, divided by the span of the true bone image",
    "bsr_lung": "bsr inside the lung mask",
    "bsr_bsldm_lung": "bsr_bsldm inside the lung mask",
    "mae_lung": "mae inside the lung mask",
}
METRICS = ["rmse", "mae", "mse", "psnr", "ssim", "ssim_uniform7", "ms_ssim", "bsr", "bsr_tm", "bsr_bsldm", "rmae"]
LUNG_METRICS = ["bsr_lung", "bsr_bsldm_lung", "mae_lung"]


# ----------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------


def read_image01(path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """Read a grey image as float32 ``(H, W)`` in the display domain ``[0, 1]``.

    8-bit files are divided by 255, 16-bit by 65535 (the file's nominal depth, not its maximum), float
    TIFF and ``.npy`` float arrays are used as they are (integer ``.npy`` by their dtype's maximum).
    Colour images are converted to grey.

    Returns:
        ``(array, description)``, e.g. ``"8-bit"``, ``"16-bit"``, ``"float"``.

    Raises:
        InputError: unreadable file, not 2-D, NaN/inf.
    """
    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            a = np.load(path, allow_pickle=False)
            a = np.squeeze(a)
            if np.issubdtype(a.dtype, np.integer):
                kind = f"{np.iinfo(a.dtype).bits}-bit"
                a = a.astype(np.float64) / np.iinfo(a.dtype).max
            elif a.dtype == bool:
                kind, a = "bool", a.astype(np.float64)
            else:
                kind = "float"
        else:
            with Image.open(path) as im:
                im.load()
                if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                    kind, a = "16-bit", np.asarray(im, dtype=np.float64) / 65535.0
                elif im.mode == "I":
                    a = np.asarray(im, dtype=np.float64)
                    if a.max(initial=0) > 65535:
                        kind, a = "32-bit", a / 4294967295.0
                    else:
                        kind, a = "16-bit", a / 65535.0
                elif im.mode == "F":
                    kind, a = "float", np.asarray(im, dtype=np.float64)
                elif im.mode in ("L", "1", "P"):
                    kind, a = "8-bit", np.asarray(im.convert("L"), dtype=np.float64) / 255.0
                else:
                    kind, a = f"8-bit {im.mode}->grey", np.asarray(im.convert("L"), dtype=np.float64) / 255.0
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read image {path}: {e}") from e
    if a.ndim != 2:
        raise InputError(f"{path}: expected a 2-D grey image, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise InputError(f"{path} contains NaN or infinite values")
    return a.astype(np.float32), kind


def _resize(a: np.ndarray, shape: tuple[int, int], nearest: bool = False) -> np.ndarray:
    im = Image.fromarray(a.astype(np.float32), mode="F")
    return np.asarray(im.resize((shape[1], shape[0]), Image.NEAREST if nearest else Image.BILINEAR), dtype=np.float32)


def _by_stem(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataNotFoundError(f"folder {folder} does not exist")
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")}


# ----------------------------------------------------------------------------------------------
# scoring
# ----------------------------------------------------------------------------------------------


def score_images(pred: np.ndarray, truth: np.ndarray, image: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """All metrics of one predicted soft-tissue image, display domain ``[0, 1]``, ``data_range = 1``.

    Args:
        pred: ``Ŝ`` ``(H, W)``. truth: ``S`` ``(H, W)``. image: the radiograph ``I`` ``(H, W)``.
        mask: optional lung mask ``(H, W)`` (> 0.5 inside): adds ``bsr_lung``, ``bsr_bsldm_lung``, ``mae_lung``.

    Returns ``{metric: value}`` for :data:`METRICS` (+ :data:`LUNG_METRICS`); ``ms_ssim`` is NaN for
    images under 161 px (see :func:`cxrdecomp.metrics.ms_ssim`).
    """
    p, t, i = (torch.from_numpy(np.asarray(x, dtype=np.float64))[None, None] for x in (pred, truth, image))
    r = {
        "rmse": M.rmse(p, t), "mae": M.mae(p, t), "mse": M.mse(p, t),
        "psnr": M.psnr(p, t, data_range=1.0),
        "ssim": M.ssim(p, t, data_range=1.0),
        "ssim_uniform7": M.ssim(p, t, data_range=1.0, gaussian=False),
        "bsr": M.bsr(p, t, i), "bsr_tm": M.bsr_tone_matched(p, t, i), "bsr_bsldm": M.bsr_bsldm(p, t, i),
        "rmae": M.rmae(i - p, i - t),
    }
    if min(t.shape[-2:]) >= M.ms_ssim_min_size():
        r["ms_ssim"] = M.ms_ssim(p, t, data_range=1.0)
    else:
        r["ms_ssim"] = torch.tensor([float("nan")])
    if mask is not None:
        m = torch.from_numpy(np.asarray(mask, dtype=np.float64))[None, None]
        if (m > 0.5).any():
            r["bsr_lung"] = M.bsr(p, t, i, m)
            r["bsr_bsldm_lung"] = M.bsr_bsldm(p, t, i, m)
            r["mae_lung"] = M.mae(p, t, m)
        else:
            r.update({k: torch.tensor([float("nan")]) for k in LUNG_METRICS})
    return {k: float(v[0]) for k, v in r.items()}


def summarize(values: Iterable[float]) -> dict[str, float | int]:
    """``{"mean", "std", "median", "n"}`` over the finite values (std with ddof = 1; 0 for n = 1), plus ``"n_infinite"``
    when infinite values (e.g. the PSNR of a perfect prediction) were left out."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    a = np.asarray([v for v in vals if math.isfinite(v)], dtype=np.float64)
    n_inf = len(vals) - a.size
    if a.size == 0:
        out = {"mean": None, "std": None, "median": None, "n": 0}
    else:
        out = {
            "mean": float(a.mean()),
            "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
            "median": float(np.median(a)),
            "n": int(a.size),
        }
    if n_inf:
        out["n_infinite"] = int(n_inf)
    return out


# ----------------------------------------------------------------------------------------------
# the evaluation loop
# ----------------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One case: radiograph ``image``, true soft tissue ``truth`` (display domain, same size), optional
    lung ``mask`` and a ready ``pred`` (another tool's output; ``None`` when a method computes it)."""

    name: str
    image: np.ndarray
    truth: np.ndarray
    mask: np.ndarray | None = None
    pred: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)


def _decomposer(method: str | None, checkpoint: str | os.PathLike | None, device: str | None):
    from cxrdecomp import methods
    from cxrdecomp.decomposer import Decomposer

    source = checkpoint if checkpoint is not None else methods.bundled_checkpoint(method)
    dec = Decomposer.from_pretrained(source, device=device)
    return dec, str(source)


def _predict_soft(dec, image: np.ndarray) -> np.ndarray:
    out = dec(image)
    if out.soft_tissue is None:
        raise ConfigError(f"method {dec.method!r} gives no soft-tissue image, so it cannot be scored for bone suppression")
    return out.soft_tissue.numpy().astype(np.float32)


def _tile(a: np.ndarray) -> Image.Image:
    a8 = (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)
    im = Image.fromarray(a8, mode="L")
    h, w = a.shape
    s = TILE / max(h, w)
    im = im.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BILINEAR)
    canvas = Image.new("L", (TILE, TILE), 0)
    canvas.paste(im, ((TILE - im.width) // 2, (TILE - im.height) // 2))
    return canvas


def write_grid(path: str | os.PathLike, rows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], label: str) -> Path:
    """Figure grid PNG: one row per case, columns input | prediction | truth | |prediction − truth| × 10.

    ``rows`` holds ``(name, image, prediction, truth)`` display-domain ``(H, W)`` arrays (same size).
    Drawn with PIL only (matplotlib is not a dependency).
    """
    head, side = 20, 0
    cols = ["input", f"prediction ({label})", "truth", f"|pred - truth| x{DIFF_GAIN:g}"]
    grid = Image.new("L", (side + TILE * 4, head + (TILE + head) * len(rows)), 0)
    d = ImageDraw.Draw(grid)
    for c, t in enumerate(cols):
        d.text((c * TILE + 4, 4), t, fill=255)
    for r, (name, img, pred, truth) in enumerate(rows):
        y = head + r * (TILE + head)
        d.text((4, y + 3), name, fill=255)
        for c, a in enumerate((img, pred, truth, np.abs(pred - truth) * DIFF_GAIN)):
            grid.paste(_tile(a), (c * TILE, y + head))
    path = Path(path)
    with atomic_path(path) as tmp:
        grid.save(tmp, format="PNG")
    return path


def _write_png16(path: Path, a: np.ndarray) -> None:
    a16 = (np.clip(a, 0, 1) * 65535 + 0.5).astype(np.uint16)
    with atomic_path(path) as tmp:
        Image.fromarray(a16).save(tmp, format="PNG")


def run_evaluation(samples: Iterable[Sample], out: str | os.PathLike, *, label: str,
                   predict: Callable[[np.ndarray], np.ndarray] | None = None, info: dict | None = None,
                   grid_rows: int = 6, save_pred: bool = False, progress: bool = True, total: int | None = None) -> dict:
    """Score ``samples`` (and the identity baseline) and write ``OUT/per_image.csv``, ``summary.json``, ``grid.png``.

    Args:
        samples: :class:`Sample` iterable; each ``pred`` is used as is, or computed by ``predict(image)``.
        label: name of the prediction source in the outputs (method name or ``"pred"``).
        predict: ``(H, W)`` display-domain radiograph → ``(H, W)`` soft-tissue image (any size).
        info: extra fields for ``summary.json`` (data folder, checkpoint, ...).
        save_pred: also write the predictions as 16-bit PNGs in ``OUT/pred/``.

    Returns the summary dict (as written to ``summary.json``).

    Raises:
        DataNotFoundError: no samples. InputError: unreadable/incompatible images.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    grid: list[tuple] = []
    notes: list[str] = []
    per: dict[str, dict[str, list[float]]] = {label: {}, IDENTITY: {}}
    it: Iterable[Sample] = samples
    prog = None
    if progress:
        from rich.progress import Progress

        prog = Progress(transient=True)
        prog.start()
        task = prog.add_task(f"evaluating {label}", total=total)
    try:
        for s in it:
            if s.truth.shape != s.image.shape:
                s.notes.append(f"input {s.image.shape} resized to truth {s.truth.shape}")
                s.image = _resize(s.image, s.truth.shape)
            pred = s.pred if s.pred is not None else predict(s.image)
            pred = np.asarray(pred, dtype=np.float32)
            if pred.shape != s.truth.shape:
                s.notes.append(f"prediction {pred.shape} resized to truth {s.truth.shape} (bilinear)")
                pred = _resize(pred, s.truth.shape)
            if pred.min() < 0 or pred.max() > 1:
                s.notes.append(f"prediction clipped to [0, 1] (range {pred.min():.3g}..{pred.max():.3g})")
                pred = np.clip(pred, 0, 1)
            mask = s.mask
            if mask is not None and mask.shape != s.truth.shape:
                mask = _resize(mask, s.truth.shape, nearest=True)
            same = s.pred is not None and s.pred is s.image
            sc = None
            for src, p in ((label, pred), (IDENTITY, s.image)):
                sc = sc if (same and sc is not None) else score_images(p, s.truth, s.image, mask)
                rows.append({"name": s.name, "prediction": src, **sc, "notes": "; ".join(s.notes) if src == label else ""})
                for k, v in sc.items():
                    per[src].setdefault(k, []).append(v)
            if len(grid) < grid_rows:
                grid.append((s.name, s.image, pred, s.truth))
            if save_pred:
                _write_png16(out / "pred" / f"{s.name}.png", pred)
            notes.extend(f"{s.name}: {n}" for n in s.notes)
            if prog is not None:
                prog.advance(task)
    finally:
        if prog is not None:
            prog.stop()
    if not rows:
        raise DataNotFoundError("nothing to evaluate: no image pairs were found")
    n_images = len(rows) // 2
    if n_images and min(grid[0][3].shape) < M.ms_ssim_min_size():
        notes.append(f"ms_ssim not computed (NaN): images are smaller than {M.ms_ssim_min_size()} px per side")
    metric_names = [k for k in METRICS + LUNG_METRICS if k in per[label]]
    with atomic_path(out / "per_image.csv") as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["name", "prediction", *metric_names, "notes"])
            w.writeheader()
            for r in rows:
                w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    results = {src: {k: summarize(per[src][k]) for k in metric_names} for src in (label, IDENTITY)}
    for src, res in results.items():
        for k, st in res.items():
            if st.get("n_infinite"):
                notes.append(f"{src} {k}: {st['n_infinite']} infinite value(s) (a perfect prediction) left out of mean/std/median")
    summary = {
        "prediction": label,
        **(info or {}),
        "n_images": n_images,
        "domain": "display [0, 1] (air dark, bone bright), data_range = 1, at the truth's resolution",
        "std": "sample standard deviation (ddof = 1) over images; mean/median/std over finite values, n counts them",
        "results": results,
        "metrics": {k: METRIC_INFO[k] for k in metric_names},
        "notes": notes,
    }
    with atomic_path(out / "summary.json") as tmp:
        tmp.write_text(json.dumps(summary, indent=2, allow_nan=False, default=str) + "\n")
    if grid:
        write_grid(out / "grid.png", grid, label)
    return summary


# ----------------------------------------------------------------------------------------------
# sources of samples
# ----------------------------------------------------------------------------------------------
