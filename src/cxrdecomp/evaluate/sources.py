"""Where the samples to score come from: a paired folder (``cxr/`` + ``soft/`` [+ predictions, masks]) or
held-out simulated pairs (a ``cxrdecomp simulate`` folder or arrays in split folders)."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from cxrdecomp.data.pairs import edited_field, list_pairs
from cxrdecomp.data.simulated import split_names
from cxrdecomp.errors import ConfigError, DataNotFoundError, InputError
from cxrdecomp.evaluate.scoring import (
    IMAGE_SUFFIXES,
    Sample,
    _by_stem,
    read_image01,
)


EDITED = "edited"
"""``mask_dir`` value: the lung fields of each pair from where its truth was edited (see :func:`iter_pairs`)."""


def iter_pairs(pairs_dir: str | os.PathLike, pred_dir: str | os.PathLike | None = None,
               mask_dir: str | os.PathLike | None = None) -> tuple[list[str], Callable[[], Iterator[Sample]], list[str]]:
    """Names, a sample generator and notes for a paired folder ``DIR/{cxr,soft}`` (bse-jsrt layout).

    Files pair by name without suffix. With ``pred_dir``, only names that have a prediction are scored
    (missing ones are listed in the notes); with ``mask_dir``, masks pair by name too. ``mask_dir="edited"``
    derives each pair's lung fields from where its soft-tissue image differs from the radiograph
    (:func:`cxrdecomp.data.pairs.edited_field`; right for BSE-JSRT, which edited only the lung fields).

    Raises:
        DataNotFoundError: missing folders, no common names, no predictions at all.
    """
    root = Path(pairs_dir)
    pairs = list_pairs(root, suffixes=IMAGE_SUFFIXES)
    cxr, soft = {c.stem: c for c, _ in pairs}, {c.stem: s for c, s in pairs}
    names = list(cxr)
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
    edited = str(mask_dir) == EDITED
    if mask_dir is not None and not edited:
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
            if edited:
                s.mask = edited_field(img, tru).astype(np.float32)
            elif masks is not None:
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

    The folder written by ``cxrdecomp simulate`` (``samples/NAME.npz`` + ``NAME.json``) is
    read as described in :func:`_iter_simulate_folder` (``split``: ``"val"`` held-out views, ``"all"``,
    ``"ct:I,J"`` held-out CTs). Other layouts of display-domain arrays are accepted too:

    * ``SIMDIR/NAME.npz`` with an input array (``drr``/``cxr``/``image``/``input``) and a ``soft``
      (``soft_tissue``) array, optional ``lung_mask``;
    * ``SIMDIR/NAME/{drr,soft,...}.npy`` (one folder per sample);
    * ``SIMDIR/{drr,soft,...}/NAME.npy`` (one folder per channel).

    When ``SIMDIR/manifest.json`` (a list of records or ``{"samples": [...]}``) or ``manifest.csv`` has a
    ``split`` column, only held-out rows (``split`` as given, else test/val/held_out) are scored;
    records name their sample by ``name``/``id``/``sample``.

    Raises:
        DataNotFoundError: nothing recognisable in ``sim_dir``.
    """
    root = Path(sim_dir)
    if not root.is_dir():
        raise DataNotFoundError(f"simulated-data folder {root} does not exist; write one with `cxrdecomp simulate`")
    if (root / "samples").is_dir() and any((root / "samples").glob("*.npz")):
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


def _iter_simulate_folder(root: Path, split: str | None):
    """Samples of a ``cxrdecomp simulate`` folder (:mod:`cxrdecomp.simulate.generate`): ``samples/NAME.npz`` with the
    display-domain ``image`` and ``soft_tissue`` (and ``lung_mask``) + ``samples/NAME.json`` (``ct_index``, parameters).

    ``split``: ``None`` = every sample of a folder of held-out anatomies (written with ``simulate --split val``),
    else the trainer's held-out views; ``"val"`` = those views (``split_names``: 10 %, seed 0), ``"all"`` = every
    sample, ``"ct:0,3"`` = every sample of those CT indices (held-out CTs, when the model was trained without them).
    """
    from cxrdecomp.simulate.generate import finished, load_sample

    done = finished(root)
    notes = []
    try:
        held_out_folder = json.loads((root / "simulation.json").read_text()).get("split") == "val"
    except (OSError, ValueError):
        held_out_folder = False
    if split is None and held_out_folder:
        split = "all"
        notes.append(f"held-out anatomies: every sample of a `simulate --split val` folder ({len(done)} samples)")
    if split in (None, "val"):
        names = split_names(root)[1]
        notes.append(f"held-out views: the trainer's validation split ({len(names)} of {len(done)} samples)")
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
            d = load_sample(root / "samples" / f"{n}.npz")
            yield Sample(n, np.clip(d["image"], 0, 1), np.clip(d["soft_tissue"], 0, 1), d.get("lung_mask"))

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
