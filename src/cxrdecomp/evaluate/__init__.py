"""Score bone-suppression results against paired truth: per-image CSV, summary JSON, figure grid.

Three sources of predictions, one scoring path (:func:`score_images`):

* a cxrdecomp method: ``evaluate_pairs(DIR, OUT, method="bone")`` runs
  :class:`cxrdecomp.decomposer.Decomposer` on every ``DIR/cxr/NAME`` and scores its ``soft_tissue``;
* another tool's outputs: ``evaluate_pairs(DIR, OUT, pred_dir=PRED)`` reads ``PRED/NAME.*``;
* held-out simulated pairs: ``evaluate_simulated(SIMDIR, OUT, method=...)``.

Conventions (docs/metrics.md): everything is scored in the **display domain** ``[0, 1]`` (air dark, bone
bright) with ``data_range = 1``, at the **truth's resolution** (1024² for bse-jsrt). A prediction of a
different size is resized to the truth (bilinear) and the CSV says so; 8-bit files are divided by 255,
16-bit files by 65535, float TIFF / ``.npy`` files are taken as already in ``[0, 1]``. Predictions are
clipped to ``[0, 1]`` (what any image file would hold). The identity baseline (the radiograph returned
unchanged) is always scored alongside, since PSNR and SSIM are already high for it (38.44 dB, SSIM 0.9910
on bse-jsrt/val).

Outputs (each written atomically): ``OUT/per_image.csv`` (one row per image and prediction source),
``OUT/summary.json`` (per source and metric: mean, std, median, n) and ``OUT/grid.png`` (input,
prediction, truth, |prediction − truth| × 10 for the first images).
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

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
    "rmae": "relative MAE of the bone image I-S^ vs I-S, divided by the span of the true bone image",
    "bsr_lung": "bsr inside the lung mask",
    "bsr_bsldm_lung": "bsr_bsldm inside the lung mask",
    "mae_lung": "mae inside the lung mask",
}
METRICS = ["rmse", "mae", "mse", "psnr", "ssim", "ssim_uniform7", "ms_ssim", "bsr", "bsr_bsldm", "rmae"]
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
        "bsr": M.bsr(p, t, i), "bsr_bsldm": M.bsr_bsldm(p, t, i),
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
    """``{"mean", "std", "median", "n"}`` over the finite values (std with ddof = 1; 0 for n = 1)."""
    a = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if a.size == 0:
        return {"mean": None, "std": None, "median": None, "n": 0}
    return {
        "mean": float(a.mean()),
        "std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
        "median": float(np.median(a)),
        "n": int(a.size),
    }


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
    summary = {
        "prediction": label,
        **(info or {}),
        "n_images": n_images,
        "domain": "display [0, 1] (air dark, bone bright), data_range = 1, at the truth's resolution",
        "std": "sample standard deviation (ddof = 1) over images; mean/median/std over finite values, n counts them",
        "results": {src: {k: summarize(per[src][k]) for k in metric_names} for src in (label, IDENTITY)},
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


def iter_pairs(pairs_dir: str | os.PathLike, pred_dir: str | os.PathLike | None = None,
               mask_dir: str | os.PathLike | None = None) -> tuple[list[str], Callable[[], Iterator[Sample]], list[str]]:
    """Names, a sample generator and notes for a paired folder ``DIR/{cxr,soft}`` (bse-jsrt layout).

    Files pair by name without suffix. With ``pred_dir``, only names that have a prediction are scored
    (missing ones are listed in the notes); with ``mask_dir``, masks pair by name too.

    Raises:
        DataNotFoundError: missing folders, no common names, no predictions at all.
    """
    root = Path(pairs_dir)
    if not (root / "cxr").is_dir() or not (root / "soft").is_dir():
        raise DataNotFoundError(f"{root} must hold cxr/ and soft/ folders with matching file names (the bse-jsrt layout)")
    cxr, soft = _by_stem(root / "cxr"), _by_stem(root / "soft")
    names = [n for n in cxr if n in soft]
    if not names:
        raise DataNotFoundError(f"no pairs in {root}: cxr/ and soft/ share no file names")
    notes = []
    preds = masks = None
    if pred_dir is not None:
        preds = _by_stem(Path(pred_dir))
        missing = [n for n in names if n not in preds]
        if len(missing) == len(names):
            raise DataNotFoundError(f"{pred_dir} holds no prediction named like the pairs in {root}/cxr (e.g. {names[0]}.png)")
        if missing:
            notes.append(f"{len(missing)} pair(s) without prediction, not scored: {', '.join(missing[:10])}")
            names = [n for n in names if n in preds]
    if mask_dir is not None:
        masks = _by_stem(Path(mask_dir))
        missing = [n for n in names if n not in masks]
        if missing:
            notes.append(f"{len(missing)} pair(s) without lung mask (lung metrics NaN): {', '.join(missing[:10])}")

    def gen() -> Iterator[Sample]:
        for n in names:
            img, ki = read_image01(cxr[n])
            tru, kt = read_image01(soft[n])
            s = Sample(n, img, tru)
            if preds is not None:
                s.pred, kp = read_image01(preds[n])
                if kp != kt:
                    s.notes.append(f"prediction {kp}, truth {kt}")
            if masks is not None:
                if n in masks:
                    s.mask = read_image01(masks[n])[0]
                else:
                    s.mask = np.zeros_like(tru)
            yield s

    return names, gen, notes


SIM_INPUT_KEYS = ("drr", "cxr", "image", "input", "radiograph")
SIM_SOFT_KEYS = ("soft", "soft_tissue", "target_soft")
SIM_MASK_KEYS = ("lung_mask", "mask_lung", "lung")
HELD_OUT_SPLITS = ("test", "val", "held_out", "heldout")


def _pick(d: dict, keys) -> np.ndarray | None:
    for k in keys:
        if k in d:
            return np.squeeze(np.asarray(d[k], dtype=np.float32))
    return None


def iter_simulated(sim_dir: str | os.PathLike, split: str | None = None) -> tuple[list[str], Callable[[], Iterator[Sample]], list[str]]:
    """Held-out simulated pairs written by ``cxrdecomp simulate`` (display domain).

    The folder written by ``cxrdecomp simulate`` (``samples/NAME.npy`` line integrals + ``NAME.json``) is
    read as described in :func:`_iter_simulate_folder` (``split``: ``"val"`` held-out poses, ``"all"``,
    ``"ct:I,J"`` held-out CTs). Other layouts of display-domain arrays are accepted too:

    * ``SIMDIR/NAME.npz`` with an input array (``drr``/``cxr``/``image``/``input``) and a ``soft``
      (``soft_tissue``) array, optional ``lung_mask``;
    * ``SIMDIR/NAME/{drr,soft,...}.npy`` (one folder per sample);
    * ``SIMDIR/{drr,soft,...}/NAME.npy`` (one folder per channel).

    When ``SIMDIR/manifest.json`` (a list of records or ``{"samples": [...]}``) or ``manifest.csv`` has a
    ``split`` column, only held-out rows (``split`` as given, else test/val/held_out) are scored;
    records name their sample by ``name``/``id``/``sample``.

    The simulate layout was read from the bone helper's branch (cxrdecomp.simulate.generate); re-check
    it after the merge.

    Raises:
        DataNotFoundError: nothing recognisable in ``sim_dir``.
    """
    root = Path(sim_dir)
    if not root.is_dir():
        raise DataNotFoundError(f"simulated-data folder {root} does not exist; write one with `cxrdecomp simulate`")
    if (root / "samples").is_dir() and any((root / "samples").glob("*.npy")):
        return _iter_simulate_folder(root, split)
    loaders: dict[str, Callable[[], dict]] = {}
    for p in sorted(root.glob("*.npz")):
        loaders[p.stem] = (lambda p=p: dict(np.load(p, allow_pickle=False)))
    for d in sorted(x for x in root.iterdir() if x.is_dir()):
        files = {f.stem: f for f in d.glob("*.npy")}
        if any(k in files for k in SIM_INPUT_KEYS) and any(k in files for k in SIM_SOFT_KEYS):
            loaders[d.name] = (lambda files=files: {k: np.load(f, allow_pickle=False) for k, f in files.items()})
    chan_in = next((root / k for k in SIM_INPUT_KEYS if (root / k).is_dir()), None)
    chan_soft = next((root / k for k in SIM_SOFT_KEYS if (root / k).is_dir()), None)
    if chan_in is not None and chan_soft is not None:
        chan_mask = next((root / k for k in SIM_MASK_KEYS if (root / k).is_dir()), None)
        for f in sorted(chan_in.glob("*.npy")):
            if (chan_soft / f.name).is_file():
                def load(f=f, cm=chan_mask):
                    d = {"image": np.load(f), "soft": np.load(chan_soft / f.name)}
                    if cm is not None and (cm / f.name).is_file():
                        d["lung_mask"] = np.load(cm / f.name)
                    return d
                loaders[f.stem] = load
    notes: list[str] = []
    names = sorted(loaders)
    held = _held_out_names(root, split)
    if held is not None:
        names = [n for n in names if n in held]
        notes.append(f"manifest: {len(names)} held-out sample(s) scored")
    if not names:
        raise DataNotFoundError(
            f"no simulated pairs found in {root}: expected NAME.npz, NAME/{{drr,soft}}.npy or {{drr,soft}}/NAME.npy "
            "(see cxrdecomp.evaluate.iter_simulated)"
        )

    def gen() -> Iterator[Sample]:
        for n in names:
            d = loaders[n]()
            img, soft = _pick(d, SIM_INPUT_KEYS), _pick(d, SIM_SOFT_KEYS)
            if img is None or soft is None or img.ndim != 2:
                raise InputError(f"simulated sample {n} in {root} lacks a 2-D input or soft-tissue array (keys {sorted(d)})")
            if img.min() < -1e-3 or img.max() > 1 + 1e-3:
                raise InputError(
                    f"simulated sample {n}: input spans {img.min():.3g}..{img.max():.3g}, not the display domain [0, 1]"
                )
            yield Sample(n, img, soft, _pick(d, SIM_MASK_KEYS))

    return names, gen, notes


def _split_names(root: Path, val_fraction: float = 0.1, seed: int = 0) -> tuple[list[str], list[str]]:
    """The train/validation split the bone trainer uses (``cxrdecomp.data.simulated.split_names``);
    replicated here when that module is not available."""
    try:
        from cxrdecomp.data.simulated import split_names

        return split_names(root, val_fraction, seed)
    except ImportError:
        names = sorted(p.stem for p in (root / "samples").glob("*.npy") if p.with_suffix(".json").is_file())
        perm = np.random.default_rng(seed).permutation(len(names))
        n_val = max(1, int(round(val_fraction * len(names)))) if len(names) > 1 else 0
        val = sorted(names[i] for i in perm[:n_val])
        return sorted(names[i] for i in perm[n_val:]) or val, val


def _iter_simulate_folder(root: Path, split: str | None):
    """Samples of a ``cxrdecomp simulate`` folder: ``samples/NAME.npy`` ``(3, S, S)`` float32 line integrals
    ``[total, bone, soft]`` (attenuation domain) + ``samples/NAME.json`` (``ct_index``, pose, ...).

    Display domain as the trainer defines it without augmentation: per-image window ``lo, hi`` = 0.5 % and
    99.5 % quantiles of the total line integrals, ``I = (L − lo)/(hi − lo)``, ``S = (L_soft − lo)/(hi − lo)``,
    both clipped to ``[0, 1]``. ``split``: ``None``/``"val"`` = the trainer's held-out poses
    (``split_names``: 10 %, seed 0), ``"all"``, or ``"ct:0,3"`` = every sample of those CT indices
    (held-out CTs, when the model was trained without them).
    """
    done = sorted(p.stem for p in (root / "samples").glob("*.npy") if p.with_suffix(".json").is_file())
    notes = []
    if split in (None, "val"):
        names = _split_names(root)[1]
        notes.append(f"held-out poses: the trainer's validation split ({len(names)} of {len(done)} samples)")
    elif split == "all":
        names = done
    elif split.startswith("ct:"):
        want = {int(x) for x in split[3:].split(",") if x.strip()}
        names = [n for n in done if int(json.loads((root / "samples" / f"{n}.json").read_text()).get("ct_index", -1)) in want]
        notes.append(f"held-out CTs {sorted(want)}: {len(names)} samples")
    else:
        raise ConfigError(f"split must be 'val', 'all' or 'ct:I,J', not {split!r}")
    if not names:
        raise DataNotFoundError(f"no finished simulated samples selected in {root}/samples (split {split!r})")

    def gen() -> Iterator[Sample]:
        for n in names:
            arr = np.load(root / "samples" / f"{n}.npy").astype(np.float64)
            if arr.ndim != 3 or arr.shape[0] != 3:
                raise InputError(f"{root}/samples/{n}.npy: expected (3, S, S) [total, bone, soft], got {arr.shape}")
            total, soft = arr[0], arr[2]
            flat = total.ravel()[:: max(1, total.size // 65536 + 1)] if total.size > 65536 else total.ravel()
            lo, hi = np.quantile(flat, [0.005, 0.995])
            hi = max(hi, lo + 1e-6)
            img = np.clip((total - lo) / (hi - lo), 0, 1).astype(np.float32)
            sft = np.clip((soft - lo) / (hi - lo), 0, 1).astype(np.float32)
            yield Sample(n, img, sft)

    return names, gen, notes


def _held_out_names(root: Path, split: str | None) -> set[str] | None:
    recs = None
    if (root / "manifest.json").is_file():
        j = json.loads((root / "manifest.json").read_text())
        recs = j.get("samples") if isinstance(j, dict) else j
    elif (root / "manifest.csv").is_file():
        with open(root / "manifest.csv", newline="") as f:
            recs = list(csv.DictReader(f))
    if not isinstance(recs, list) or not recs or not isinstance(recs[0], dict) or "split" not in recs[0]:
        return None
    wanted = (split,) if split else HELD_OUT_SPLITS
    out = set()
    for r in recs:
        key = next((str(r[k]) for k in ("name", "id", "sample") if k in r), None)
        if key is not None and str(r.get("split")) in wanted:
            out.add(Path(key).stem)
    return out


# ----------------------------------------------------------------------------------------------
# public entry points
# ----------------------------------------------------------------------------------------------


def evaluate_pairs(pairs_dir: str | os.PathLike, out: str | os.PathLike, *, method: str | None = None,
                   checkpoint: str | os.PathLike | None = None, pred_dir: str | os.PathLike | None = None,
                   mask_dir: str | os.PathLike | None = None, device: str | None = None, save_pred: bool = False,
                   progress: bool = True) -> dict:
    """Evaluate a method (``method``/``checkpoint``) or another tool's outputs (``pred_dir``) on a
    paired folder ``DIR/{cxr,soft}``; writes ``OUT/{per_image.csv, summary.json, grid.png}``.

    Returns the summary (see :func:`run_evaluation`).

    Raises:
        ConfigError: neither or both of a method and ``pred_dir``; unknown method.
        DataNotFoundError / InputError / CheckpointError: as the data and checkpoint dictate.
    """
    if pred_dir is not None and (method is not None or checkpoint is not None):
        raise ConfigError("give either --method/--checkpoint (run a cxrdecomp method) or --pred (score saved predictions), not both")
    if pred_dir is None and method is None and checkpoint is None:
        raise ConfigError("nothing to evaluate: give --method NAME [--checkpoint PATH] or --pred PRED_DIR")
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
    its soft-tissue output like :func:`evaluate_pairs` (identity baseline included)."""
    if method is None and checkpoint is None:
        raise ConfigError("give --method NAME [--checkpoint PATH] to evaluate on simulated pairs")
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


# ----------------------------------------------------------------------------------------------
# results page (issue 4 §4): docs/results.md, regenerated by one command
# ----------------------------------------------------------------------------------------------

#: numbers the papers publish, with what differs from the data scored here
PUBLISHED = [
    {
        "paper": "Bone structures extraction and enhancement in chest radiographs via CNN trained on synthetic data (bone_unet)",
        "task": "bone image",
        "numbers": "RMSE 19.25 (8-bit units), PSNR 22.6 dB, SSIM 0.70, MS-SSIM 0.84",
        "data": "held-out simulated DRR pairs from the authors' CTs; scores the *bone* image. Its RMSE/PSNR equal "
                "those of the soft-tissue image (B̂ − B = S − Ŝ), its SSIM does not; compare with the simulated table "
                "(RMSE x255), not with bse-jsrt.",
    },
    {
        "paper": "Lung structures enhancement in chest radiographs via CT based FCNN training (lung method)",
        "task": "lung X-ray image",
        "numbers": "MAE 0.082, MSE 0.03, PSNR 24.98 dB, SSIM 0.80",
        "data": "held-out simulated lung X-rays from the authors' CTs; a different target (lung structures, not soft "
                "tissue), so it has no row in the bone-suppression tables here.",
    },
    {
        "paper": "Disentanglement AutoEncoder for bone suppression (DAE + MS-SSIM loss)",
        "task": "soft-tissue / bone image",
        "numbers": "BSR 0.91, RMAE 0.0091, PSNR 30.8 dB, SSIM 0.970",
        "data": "JSRT / BSE-JSRT like ours, but the authors' own split and resolution; their BSR and RMAE code is not "
                "public (our bsr follows Yang et al. 2017, our rmae divides by the true bone image's span).",
    },
    {
        "paper": "BS-Diff (conditional diffusion for bone suppression)",
        "task": "soft-tissue image",
        "numbers": "BSR 0.988, MSE 0.0002, SSIM 0.937, PSNR 38.25 dB",
        "data": "a private dual-energy-subtraction set (not BSE-JSRT); its BSR is most likely the mean-shift variant of "
                "the same group's BS-LDM code (our bsr_bsldm). Note that returning the input already scores "
                "PSNR 38.44 dB on bse-jsrt/val.",
    },
]

PAGE_COLUMNS = [("psnr", "PSNR dB", 2), ("ssim", "SSIM", 4), ("ssim_uniform7", "SSIM u7", 4), ("ms_ssim", "MS-SSIM", 4),
                ("bsr", "BSR", 3), ("bsr_bsldm", "BSR (BS-LDM code)", 3), ("rmae", "RMAE", 4), ("rmse", "RMSE x255", 2),
                ("mae", "MAE", 4)]


def _cell(stat: dict, key: str, digits: int) -> str:
    if not stat or stat.get("n", 0) == 0 or stat.get("mean") is None:
        return "–"
    k = 255.0 if key == "rmse" else 1.0
    return f"{stat['mean'] * k:.{digits}f} ± {stat['std'] * k:.{digits}f}"


def _table(rows: list[tuple[str, dict]]) -> list[str]:
    head = "| prediction | " + " | ".join(c[1] for c in PAGE_COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(PAGE_COLUMNS) + 1)]
    for name, res in rows:
        lines.append(f"| {name} | " + " | ".join(_cell(res.get(k, {}), k, d) for k, _, d in PAGE_COLUMNS) + " |")
    return lines


def _identity_summary(pairs: Path, out: Path) -> dict:
    names, gen, _ = iter_pairs(pairs)

    def ident():
        for s in gen():
            s.pred = s.image
            yield s

    return run_evaluation(ident(), out, label="input", progress=False, total=len(names))


def write_results_page(path: str | os.PathLike = "docs/results.md", *, pairs: str | os.PathLike | None = None,
                       simulated: str | os.PathLike | None = None, device: str | None = None,
                       work: str | os.PathLike = "out/results") -> Path:
    """Evaluate every bundled method (:func:`cxrdecomp.checkpoint.available_pretrained`) on bse-jsrt/val (and on
    held-out simulated pairs when ``simulated`` is given) and write the results page ``path`` (Markdown):
    our numbers, the identity baseline and the papers' published numbers with the data differences.

    Per-method outputs (CSV, JSON, grids) go to ``work/<name>/``.

    Raises:
        DataNotFoundError: the bse-jsrt pairs are not found (set ``$CXRDECOMP_BSE_JSRT`` or pass ``pairs``).
    """
    import datetime
    import platform

    from cxrdecomp import __version__
    from cxrdecomp import checkpoint as ckpt
    from cxrdecomp.data.pairs import default_bse_jsrt
    from cxrdecomp.errors import CxrdecompError

    pairs = Path(pairs) if pairs is not None else default_bse_jsrt() / "val"
    work = Path(work)
    ident = _identity_summary(pairs, work / "identity")
    real_rows = [("identity (input unchanged)", ident["results"]["input"])]
    sim_rows: list[tuple[str, dict]] = []
    skipped: list[str] = []
    methods = ckpt.available_pretrained()
    for name in methods:
        try:
            s = evaluate_pairs(pairs, work / name, method=name, device=device, progress=False)
            real_rows.append((f"{name} (`{s.get('method')}`, {s.get('input_size')}²)", s["results"][name]))
            if simulated is not None:
                t = evaluate_simulated(simulated, work / f"{name}-simulated", method=name, device=device, progress=False)
                if not sim_rows:
                    sim_rows.append(("identity (input unchanged)", t["results"][IDENTITY]))
                sim_rows.append((name, t["results"][name]))
        except CxrdecompError as e:
            skipped.append(f"`{name}`: {e}")
    n = ident["n_images"]
    base = Path(path).resolve().parent.parent  # the repository root for docs/results.md

    def rel(p) -> str:
        try:
            return os.path.relpath(Path(p).resolve(), base)
        except ValueError:
            return str(p)

    L = [
        "# Results",
        "",
        "Generated by `python scripts/results.py` (the same as `cxrdecomp evaluate --results`); do not edit by hand.",
        f"cxrdecomp {__version__}, {datetime.date.today().isoformat()}, {platform.platform()}, "
        f"torch {torch.__version__}, device {device or ('cuda' if torch.cuda.is_available() else 'cpu')}.",
        "",
        "All numbers: mean ± sample std over images, scored on the soft-tissue (bone-suppressed) image in the display "
        "domain [0, 1] with data_range = 1, at the truth's resolution. Definitions: [metrics.md](metrics.md). "
        "BSR: 0 = input returned unchanged, 1 = perfect. RMSE is shown in 8-bit units (x255).",
        "",
        f"## Real pairs: bse-jsrt/val ({n} pairs, 1024², 8-bit PNG)",
        "",
        f"Data: `{rel(pairs)}` (JSRT radiographs with BSE-JSRT soft-tissue images; ribs removed only inside the lung "
        "fields, clavicles kept).",
        "",
        *_table(real_rows),
        "",
    ]
    if not methods:
        L += ["No bundled checkpoint was found (`cxrdecomp.checkpoint.available_pretrained()` is empty): only the "
              "identity baseline is shown.", ""]
    if skipped:
        L += ["Not scored here: " + "; ".join(skipped), ""]
    L += ["## Held-out simulated pairs", ""]
    if sim_rows:
        L += [f"Data: `{rel(simulated)}` (held-out poses / CTs written by `cxrdecomp simulate`).", "", *_table(sim_rows), ""]
    else:
        L += ["Not run: regenerate with `python scripts/results.py --simulated SIMDIR` once held-out simulated pairs "
              "exist (`cxrdecomp simulate ...`).", ""]
    L += ["## Published numbers (not measured here)", "",
          "| paper | target | published | data and definitions differ how |", "|---|---|---|---|"]
    L += [f"| {p['paper']} | {p['task']} | {p['numbers']} | {p['data']} |" for p in PUBLISHED]
    L += ["", "Per-image values, summaries and figure grids: `" + rel(work) + "/<method>/` (not committed).", ""]
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(L))
    return path
