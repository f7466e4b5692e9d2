"""Decompose radiograph files into output folders (what ``cxrdecomp decompose`` runs).

For every input ``X`` (a DICOM, PNG, JPEG or TIFF file) :func:`decompose_files` writes
``OUT/<stem of X>/``:

* ``bone.png``, ``soft_tissue.png``, ``enhanced.png`` (and ``lung.png``, ``lung_mask.png`` when the
  method gives them): 16-bit greyscale PNGs at the input's full resolution, display domain
  (``0..65535`` ↔ ``[0, 1]``, air dark, bone bright; values outside ``[0, 1]`` clipped). The bone
  image goes through a linear display mapping so that it is visible: ``png = (bone − low)/(high −
  low)``, ``low``/``high`` recorded in ``decomposition.json`` (see :mod:`cxrdecomp.io.images`);
* the same images as DICOM Secondary Capture (``*.dcm``): new series of the input's study
  (:mod:`cxrdecomp.io.dicom_out`), unless ``write_dicom=False``;
* ``preview.png``: input | bone | soft tissue | enhanced, side by side, labelled;
* ``decomposition.json``: source, method, options, display mapping, files, warnings;

and ``OUT/index.html`` listing every case in ``OUT`` (and the inputs that failed) side by side.

A case is written into a temporary folder that is renamed to ``OUT/<stem>`` only when complete, so an
input that fails leaves nothing behind; the other inputs are still processed.
"""

from __future__ import annotations

import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Sequence

import torch

from cxrdecomp.errors import CxrdecompError, InputError
from cxrdecomp.io.atomic import atomic_folder, atomic_path
from cxrdecomp.io.radiograph import RADIOGRAPH_SUFFIXES, Radiograph, RadiographWarning, is_dicom_file, read_radiograph

CASE_FILE = "decomposition.json"
INDEX_FILE = "index.html"
PANEL_LABELS = {"image": "input", "bone": "bone", "soft_tissue": "soft tissue", "enhanced": "enhanced"}


@dataclass
class CaseResult:
    """Outcome of one input: ``folder`` set on success, ``error`` on failure."""

    source: Path
    name: str
    folder: Path | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    skipped: bool = False  # already decomposed the same way by an earlier run (resume)

    @property
    def ok(self) -> bool:
        return self.error is None


def find_inputs(inputs: Iterable[str | os.PathLike]) -> list[Path]:
    """Expand files and folders into a list of input files.

    Files are kept as given (whatever their suffix: an unreadable one fails later with a clear
    message); folders are searched recursively for ``.dcm .dicom .dic .png .jpg .jpeg .tif .tiff``
    files and for suffix-less files holding the DICOM marker. Order: as given, folders sorted.

    A folder with no such files is returned as is (it then fails on its own with a clear message).

    Raises:
        InputError: no inputs at all.
    """
    out: list[Path] = []
    seen: set[Path] = set()
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                f
                for f in p.rglob("*")
                if f.is_file()
                and not f.name.startswith(".")
                and (f.suffix.lower() in RADIOGRAPH_SUFFIXES or (f.suffix == "" and is_dicom_file(f)))
            )
            files = found or [p]  # an empty folder fails on its own, like an unreadable file
        else:
            files = [p]
        for f in files:
            key = f.resolve()
            if key not in seen:
                seen.add(key)
                out.append(f)
    if not out:
        raise InputError("no input files given")
    return out


def _unique_names(paths: Sequence[Path]) -> list[str]:
    names: list[str] = []
    used: set[str] = set()
    for p in paths:
        base = p.name
        for suf in (".gz",):
            base = base.removesuffix(suf)
        base = Path(base).stem or "image"
        base = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in base).lstrip(".") or "image"
        name, k = base, 2
        while name in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name)
        names.append(name)
    return names


def _json_safe(v):
    if isinstance(v, dict):
        return {str(k): _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def derivation(method: str, checkpoint: str | None, options: dict) -> str:
    """What makes a decomposition (method, weights digest, options) as one canonical JSON string: the seed of the
    derived DICOM UIDs (:class:`cxrdecomp.io.dicom_out.DerivedStudy`)."""
    from cxrdecomp import checkpoint as ckpt
    from cxrdecomp.errors import CheckpointError

    try:
        weights = ckpt.digest(checkpoint) if checkpoint is not None else None
    except (CheckpointError, OSError):
        weights = str(checkpoint)
    return json.dumps({"method": method, "weights": weights, "options": _json_safe(options)}, sort_keys=True, default=str)


def write_case(
    folder: Path, rg: Radiograph, dec, method: str, options: dict, write_dicom: bool = True, checkpoint: str | None = None, write_workers: int = 3
) -> Path:
    """Write all outputs of one decomposed radiograph into ``folder`` (replaced atomically).

    Args:
        folder: ``OUT/<name>``; written as a temporary sibling and renamed when complete.
        rg: the input :class:`~cxrdecomp.io.radiograph.Radiograph`.
        dec: its :class:`~cxrdecomp.decomposer.Decomposition` (display domain, full resolution).
        method: method name for the DICOM series descriptions and the JSON.
        options: the decomposer options used (recorded).
        write_dicom: also write ``*.dcm``.
        checkpoint: checkpoint name or path (recorded).
        write_workers: threads writing files in parallel.

    Returns:
        ``folder``.
    """
    from cxrdecomp.io import images
    from cxrdecomp.io.dicom_out import DerivedStudy

    folder = Path(folder)
    made_as = derivation(method, checkpoint, options)
    with atomic_folder(folder) as tmp:
        outs = dec.images()
        files: dict[str, str] = {}
        pixels: dict[str, object] = {}  # uint16 display pixels, shared by the PNG and the DICOM
        ranges: dict[str, list[float]] = {}
        for kind, img in outs.items():
            if kind == "bone":
                lo, hi = images.bone_display_range(img)
                ranges[kind] = [lo, hi]
                img = images.apply_display_range(img, lo, hi)
            pixels[kind] = images.to_uint16(img)
        panels = {PANEL_LABELS["image"]: rg.image}
        for kind in ("bone", "soft_tissue", "enhanced"):
            if kind in pixels:
                panels[PANEL_LABELS[kind]] = pixels[kind]
        for kind in ("lung", "lung_mask"):
            if kind in pixels and kind not in panels:
                panels[kind.replace("_", " ")] = pixels[kind]
        jobs = [(images.write_preview, (tmp / "preview.png", panels))]
        for kind, px in pixels.items():
            jobs.append((images.write_png16, (tmp / f"{kind}.png", px)))
            files[f"{kind}.png"] = f"{kind}.png"
        if write_dicom:
            study = DerivedStudy(rg.dataset, rg.path.name, derivation=made_as)
            for kind, px in pixels.items():
                rng = tuple(ranges[kind]) if kind in ranges else None
                jobs.append((partial(study.write, pixel_spacing=rg.pixel_spacing, display_range=rng), (tmp / f"{kind}.dcm", px, kind, method)))
                files[f"{kind}.dcm"] = f"{kind}.dcm"
        # zlib (PNG) and file I/O release the GIL: write the files in parallel
        with ThreadPoolExecutor(max_workers=max(1, min(write_workers, len(jobs)))) as pool:
            for fut in [pool.submit(fn, *args) for fn, args in jobs]:
                fut.result()
        from cxrdecomp import __version__

        meta = {
            "source": str(rg.path),
            "name": folder.name,
            "method": method,
            "checkpoint": checkpoint,
            "options": _json_safe(options),
            "shape": list(rg.image.shape),
            "pixel_spacing_mm": list(rg.pixel_spacing) if rg.pixel_spacing else None,
            "display_range": ranges,
            "display_mapping": "png = 65535 * clip((value - low) / (high - low), 0, 1) for images in display_range, else 65535 * clip(value, 0, 1)",
            "identity": "soft_tissue = input - w_s * bone; enhanced = input + w * bone (display domain, before clipping)",
            "files": files,
            "preview": "preview.png",
            "warnings": rg.warnings,
            "cxrdecomp_version": __version__,
            "derivation": made_as,
            "dicom": bool(write_dicom),
        }
        with atomic_path(tmp / CASE_FILE) as t:
            Path(t).write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def write_index(out: str | os.PathLike, failures: Iterable[CaseResult] = ()) -> Path:
    """(Re)write ``OUT/index.html`` from every ``OUT/*/decomposition.json`` plus ``failures``."""
    from cxrdecomp.io.images import write_index_html

    out = Path(out)
    cases = []
    for meta_path in sorted(out.glob(f"*/{CASE_FILE}")):
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        folder = meta_path.parent
        cases.append(
            {
                "name": meta.get("name", folder.name),
                "source": meta.get("source", ""),
                "method": meta.get("method", ""),
                "options": {k: v for k, v in (meta.get("options") or {}).items() if k in ("w", "w_s", "steps", "upsample")},
                "preview": folder / meta.get("preview", "preview.png"),
                "files": {k: folder / v for k, v in (meta.get("files") or {}).items()},
                "warnings": meta.get("warnings") or [],
            }
        )
    fails = [{"source": str(f.source), "error": f.error} for f in failures]
    return write_index_html(out / INDEX_FILE, cases, fails)


class _Reader(torch.utils.data.Dataset):
    """``(file, name)`` pairs → ``(file, name, Radiograph | None, error | None)``, readable in DataLoader workers."""

    def __init__(self, items: list[tuple[Path, str]]):
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        f, name = self.items[i]
        try:
            with warnings.catch_warnings():  # reported through ``log`` instead
                warnings.simplefilter("ignore", RadiographWarning)
                return f, name, read_radiograph(f), None
        except CxrdecompError as e:
            return f, name, None, str(e)


def _finished(folder: Path, source: Path, want: str, write_dicom: bool) -> bool:
    """Whether ``folder`` holds a complete result of ``source`` made as ``want`` (a :func:`derivation`)."""
    try:
        meta = json.loads((folder / CASE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (meta.get("source") == str(source) and meta.get("derivation") == want and bool(meta.get("dicom", True)) == bool(write_dicom)
            and all((folder / v).is_file() for v in (meta.get("files") or {}).values()))


def decompose_files(
    paths: Iterable[str | os.PathLike],
    out: str | os.PathLike,
    decomposer,
    *,
    write_dicom: bool = True,
    batch_size: int | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    checkpoint: str | None = None,
    resume: bool = True,
    shard: tuple[int, int] = (0, 1),
    num_workers: int = 0,
) -> list[CaseResult]:
    """Decompose radiograph files and write their outputs (module docstring) plus ``OUT/index.html``.

    For archives: a case whose folder already holds a complete result made the same way (same source, method,
    weights, options and DICOM choice; its ``decomposition.json`` is written last, in a folder renamed into place
    when complete) is skipped (``resume``), so a killed run continues where it stopped; ``shard=(k, n)`` takes only
    every ``n``-th input from the ``k``-th (0-based) of the sorted list, so ``n`` processes or nodes share one
    archive and one output folder; ``num_workers`` DataLoader processes read and decode the next radiographs while
    the network runs.

    Args:
        paths: files and/or folders (see :func:`find_inputs`).
        out: output folder.
        decomposer: a :class:`cxrdecomp.decomposer.Decomposer`.
        write_dicom: also write DICOM Secondary Capture files.
        batch_size: inputs read and decomposed together (default: the decomposer's ``batch_size``).
        progress: show a rich progress bar on stderr.
        log: called with one line per failed input (``"path: reason"``) and per warning
            (``"warning: ..."``); default: nothing.
        checkpoint: checkpoint name/path to record in ``decomposition.json``.
        resume: skip cases already decomposed the same way (``CaseResult.skipped``).
        shard: ``(k, n)``, this process's share of the inputs.
        num_workers: reader processes (0: read in this process).

    Returns:
        One :class:`CaseResult` per input file of the shard, in order.

    Raises:
        InputError: no input files (per-file problems are reported in the results instead).
    """
    log = log or (lambda s: None)
    k, n = shard
    if not 0 <= k < n:
        raise InputError(f"shard must satisfy 0 ≤ k < n, got {k}/{n}")
    all_files = find_inputs(paths)
    all_names = _unique_names(all_files)  # from every input, so that all shards name a case alike
    files = all_files[k::n]
    names = all_names[k::n]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    bs = int(batch_size or decomposer.options.get("batch_size", 4))
    method = decomposer.method
    options = {k_: v for k_, v in decomposer.options.items() if k_ != "batch_size"}
    results: list[CaseResult] = []
    todo = []
    if resume:
        want = derivation(method, checkpoint, options)
        for f, name in zip(files, names):
            if _finished(out / name, f, want, write_dicom):
                results.append(CaseResult(source=f, name=name, folder=out / name, skipped=True))
            else:
                todo.append((f, name))
    else:
        todo = list(zip(files, names))

    prog = None
    if progress:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        prog = Progress(
            TextColumn("[bold]decompose"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
            TextColumn("{task.description}"), console=Console(stderr=True), transient=False,
        )
        prog.start()
        task = prog.add_task("", total=len(files), completed=len(files) - len(todo))
    loader = torch.utils.data.DataLoader(_Reader(todo), batch_size=bs, num_workers=int(num_workers), collate_fn=list,
                                         persistent_workers=False)
    try:
        for chunk in loader:
            loaded: list[tuple[CaseResult, Radiograph]] = []
            for f, name, rg, err in chunk:
                res = CaseResult(source=f, name=name)
                if err is not None:
                    res.error = err
                    results.append(res)
                    log(err)
                    if prog:
                        prog.advance(task)
                    continue
                res.warnings = list(rg.warnings)
                loaded.append((res, rg))
            if not loaded:
                continue
            try:
                decs = decomposer([rg.image for _, rg in loaded])
            except CxrdecompError:
                decs = []
                for res, rg in loaded:  # attribute the error to the image that caused it
                    try:
                        decs.append(decomposer([rg.image])[0])
                    except CxrdecompError as e:
                        decs.append(e)
            for (res, rg), dec in zip(loaded, decs):
                if isinstance(dec, Exception):
                    res.error = f"{rg.path}: {dec}"
                    log(res.error)
                else:
                    try:
                        res.folder = write_case(out / res.name, rg, dec, method, options, write_dicom=write_dicom, checkpoint=checkpoint)
                        for w in rg.warnings:
                            log(f"warning: {w}")
                    except (CxrdecompError, OSError, ValueError, TypeError) as e:
                        res.error = f"{rg.path}: could not write the outputs ({type(e).__name__}: {e})"
                        log(res.error)
                results.append(res)
                if prog:
                    prog.update(task, description=res.name)
                    prog.advance(task)
            del loaded, decs
    finally:
        if prog:
            prog.stop()
    order = {f: i for i, f in enumerate(files)}
    results.sort(key=lambda r: order[r.source])
    write_index(out, [r for r in results if not r.ok])
    return results
