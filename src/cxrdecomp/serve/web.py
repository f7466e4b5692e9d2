"""A small web viewer: upload a radiograph, see input / bone / soft tissue / enhanced side by side.

``cxrdecomp serve`` runs :func:`create_app` with uvicorn. Endpoints:

* ``GET /``: one self-contained HTML page (vanilla JS, no external resources). The enhancement
  weight ``w`` and suppression weight ``w_s`` are sliders that recompute, in the browser,
  ``enhanced = input + w·bone`` and ``soft tissue = input − w_s·bone`` (display domain, clipped to
  ``[0, 1]``; Bone-extraction paper §2.4, weighted summation) from the input and bone images.
* ``GET /api/methods``: the methods this server runs (``views``: whether a method renders novel views) and the
  bundled checkpoints installed.
* ``POST /api/decompose?method=bone&w=1&w_s=1``: multipart upload (field ``file``) of a DICOM
  CR/DX, PNG, JPEG or TIFF radiograph → JSON with the URLs of the results. An unusable file,
  unknown method or invalid option → HTTP 400 whose ``detail`` is the
  :class:`~cxrdecomp.errors.CxrdecompError` message; an upload over ``max_upload_mb`` → 413.
* ``GET /api/results/{id}``: that JSON again (the page shows ``/#<id>`` from it).
* ``GET /api/results/{id}/{name}.png``: 8-bit display PNGs at the input's full resolution,
  ``name`` in ``input, bone, soft_tissue, enhanced``. The bone image is shown through its linear
  display mapping ``(bone − low)/(high − low)``; ``low``/``high`` are in the JSON (``bone_range``)
  so the page can recover ``bone = low + png/255·(high − low)``.
* ``GET /api/results/{id}/view.png?azimuth=A&elevation=E``: for a result of a method with novel views (XraySyn:
  :mod:`cxrdecomp.serve.views`), the radiograph seen from ``A``, ``E`` degrees (each within ±18°, the training
  poses; default 0), 8-bit PNG at the model's input size ``h × h``; the result JSON's ``views`` gives its URL, else
  ``null``. Another method's result or an angle out of range → 400. The 3DPN prediction of a result is kept in
  memory (a few results at most, dropped with the result), so each further angle only re-renders it.
* ``GET /api/results/{id}/files/{file}``: everything :func:`cxrdecomp.batch.write_case` wrote:
  16-bit PNGs, derived DICOM (same study, new series), ``preview.png``, ``decomposition.json``.

Results live in a temporary folder (removed at shutdown); only the ``max_results`` most recently
used are kept (least recently used removed first). Each method's model is loaded once, on first
use, and shared; decompositions run one at a time (bounded memory on a CPU server).
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import threading
import uuid
from collections import OrderedDict
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Callable

from fastapi import FastAPI, File, HTTPException, Query, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, Response

from cxrdecomp.errors import CxrdecompError, InputError
from cxrdecomp.methods import default_checkpoint
from cxrdecomp.serve.models import DecomposerCache, bundled_methods
from cxrdecomp.serve.views import MAX_ANGLE as VIEW_MAX_ANGLE
from cxrdecomp.serve.views import VIEW_INPUT, ViewCache, check_angle, checkpoint_has_views, has_views

DISPLAY_NAMES = ("input", "bone", "soft_tissue", "enhanced")
FILES = "files"  # sub-folder of a result holding write_case's outputs
RESULT = "result.json"  # the JSON answer of POST /api/decompose, for GET /api/results/{id}
_ID = re.compile(r"^[0-9a-f]{32}$")
RETRY_AFTER_S = 5  # seconds, the Retry-After of a 503 when the upload queue is full
_MAGIC = ((b"\x89PNG", ".png"), (b"\xff\xd8", ".jpg"), (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"))


class StoreFull(Exception):
    """Too many results in progress (the upload queue is full): answered with 503 and ``Retry-After``."""


class ResultStore:
    """Result folders ``root/<id>/``: at most ``max_count`` finished results kept (least recently used removed first)
    and at most ``max_pending`` in progress.

    A result in progress is never removed, and removal happens only when a result is finished
    (:meth:`commit`), so neither a burst of uploads nor a failing one can remove a result that a request is still
    making or that was just made; a failed upload (:meth:`discard`) removes nothing else.
    """

    def __init__(self, root: Path, max_count: int = 20, max_pending: int = 8, on_remove: Callable[[str], None] | None = None):
        self.root = Path(root)
        self.max_count = max(1, int(max_count))
        self.max_pending = max(1, int(max_pending))
        self.on_remove = on_remove  # called with the id of each result removed (evicted or discarded)
        self._done: OrderedDict[str, None] = OrderedDict()
        self._pending: set[str] = set()
        self._lock = threading.Lock()

    def new(self) -> tuple[str, Path]:
        """Reserve a folder for a result in progress.

        Raises:
            StoreFull: ``max_pending`` results are already in progress.
        """
        with self._lock:
            if len(self._pending) >= self.max_pending:
                raise StoreFull(f"{len(self._pending)} uploads are already waiting to be decomposed")
            rid = uuid.uuid4().hex
            self._pending.add(rid)
        folder = self.root / rid
        folder.mkdir(parents=True)
        return rid, folder

    def commit(self, rid: str) -> None:
        """Mark ``rid`` finished (the most recently used); remove the least recently used finished results beyond
        ``max_count``."""
        with self._lock:
            self._pending.discard(rid)
            self._done[rid] = None
            self._done.move_to_end(rid)
            old = []
            while len(self._done) > self.max_count:
                old.append(self._done.popitem(last=False)[0])
        for o in old:
            self._removed(o)
            shutil.rmtree(self.root / o, ignore_errors=True)

    def _removed(self, rid: str) -> None:
        if self.on_remove is not None:
            self.on_remove(rid)

    def get(self, rid: str) -> Path | None:
        """The folder of a finished ``rid`` (marked as recently used), or ``None`` if unknown, unfinished or removed."""
        with self._lock:
            if not _ID.match(rid) or rid not in self._done:
                return None
            self._done.move_to_end(rid)
        return self.root / rid

    def discard(self, rid: str) -> None:
        with self._lock:
            self._pending.discard(rid)
            self._done.pop(rid, None)
        self._removed(rid)
        shutil.rmtree(self.root / rid, ignore_errors=True)

    def __len__(self) -> int:
        return len(self._done) + len(self._pending)


def _upload_name(filename: str | None, head: bytes) -> str:
    """A safe file name for an upload; the suffix guessed from the content when missing or unknown."""
    from cxrdecomp.io.radiograph import RADIOGRAPH_SUFFIXES

    name = Path(filename or "upload").name
    name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).lstrip(".")[:100] or "upload"
    if Path(name).suffix.lower() not in RADIOGRAPH_SUFFIXES:
        suffix = next((s for magic, s in _MAGIC if head.startswith(magic)), ".dcm")
        name += suffix
    return name


def _write_png8(path: Path, image) -> None:
    """Display-domain ``(H, W)`` image → 8-bit greyscale PNG (atomic)."""
    from PIL import Image

    from cxrdecomp.io.atomic import atomic_path
    from cxrdecomp.io.images import to_uint8

    with atomic_path(path) as tmp:
        Image.fromarray(to_uint8(image)).save(tmp, format="PNG", compress_level=1)


def create_app(
    decomposer_factory: Callable[[str], object],
    methods: dict[str, str] | None = None,
    default_method: str | None = None,
    results_dir: str | Path | None = None,
    max_results: int = 20,
    max_upload_mb: float = 256,
    max_queue: int = 8,
    max_views: int = 4,
):
    """Build the FastAPI app (module docstring).

    Args:
        decomposer_factory: ``method name → Decomposer``; called once per method (cached).
        methods: method name → checkpoint (name or folder) the server offers; default: the
            bundled checkpoints installed (:func:`cxrdecomp.serve.models.bundled_methods`).
        default_method: pre-selected method (default: :func:`cxrdecomp.methods.default_checkpoint` if offered, else the first).
        results_dir: where results are kept (default: a new temporary folder removed at shutdown).
        max_results: results kept at most (least recently used removed first; never one in progress).
        max_queue: uploads in progress at most (decomposed one at a time); more are answered 503 with ``Retry-After``.
        max_upload_mb: largest accepted upload.
        max_views: results whose 3DPN prediction is kept in memory for ``view.png`` (least recently used dropped).
    """
    cache = DecomposerCache(decomposer_factory, bundled_methods() if methods is None else methods)
    best = default_checkpoint()
    default = default_method or (best if best in cache.methods else next(iter(cache.methods), None))
    own_root = results_dir is None
    root = Path(tempfile.mkdtemp(prefix="cxrdecomp-serve-")) if own_root else Path(results_dir)
    root.mkdir(parents=True, exist_ok=True)
    view_cache = ViewCache(max_views)
    store = ResultStore(root, max_results, max_queue, on_remove=view_cache.drop)
    view_methods = {m for m, c in cache.methods.items() if checkpoint_has_views(c)}  # config.json only, no model loaded
    busy = threading.Lock()
    page = (Path(__file__).with_name("index.html")).read_text(encoding="utf-8")

    @asynccontextmanager
    async def lifespan(app):
        yield
        if own_root:
            shutil.rmtree(root, ignore_errors=True)

    app = FastAPI(title="cxrdecomp", version=_version(), lifespan=lifespan, docs_url="/api/docs", redoc_url=None)
    app.state.store = store
    app.state.decomposers = cache
    app.state.views = view_cache

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index() -> str:
        return page

    @app.get("/api/methods")
    def get_methods() -> dict:
        from cxrdecomp.checkpoint import available_pretrained

        return {
            "default": default,
            "methods": [{"name": m, "checkpoint": c, "views": m in view_methods} for m, c in cache.methods.items()],
            "pretrained": available_pretrained(),
        }

    @app.post("/api/decompose")
    def decompose(
        file: UploadFile = File(..., description="DICOM CR/DX, PNG, JPEG or TIFF radiograph"),
        method: str | None = Query(None, description="method name (GET /api/methods)"),
        w: float | None = Query(None, description="enhancement weight: enhanced = input + w*bone"),
        w_s: float | None = Query(None, description="suppression weight: soft tissue = input - w_s*bone"),
    ) -> dict:
        try:
            rid, folder = store.new()
        except StoreFull as e:
            raise HTTPException(status_code=503, detail=f"busy: {e}; try again shortly", headers={"Retry-After": str(RETRY_AFTER_S)}) from e
        try:
            result = _decompose(rid, folder, file, method or default or "", w, w_s)
            store.commit(rid)
            return result
        except CxrdecompError as e:
            store.discard(rid)
            raise HTTPException(status_code=400, detail=str(e)) from e
        except BaseException:
            store.discard(rid)
            raise

    def _decompose(rid: str, folder: Path, file, method: str, w, w_s) -> dict:
        from cxrdecomp.batch import CASE_FILE, write_case
        from cxrdecomp.io.atomic import atomic_path
        from cxrdecomp.io.images import apply_display_range
        from cxrdecomp.io.radiograph import read_radiograph

        head = file.file.read(8)
        path = folder / "upload" / _upload_name(file.filename, head)
        path.parent.mkdir()
        limit = int(max_upload_mb * 2**20)
        with open(path, "wb") as f:
            f.write(head)
            n = len(head)
            while chunk := file.file.read(2**20):
                n += len(chunk)
                if n > limit:
                    raise HTTPException(status_code=413, detail=f"upload over the limit of {max_upload_mb:g} MB")
                f.write(chunk)
        if n == 0:
            raise InputError(f"{file.filename or 'upload'}: the file is empty (0 bytes)")
        dec = cache(method)
        opts = {k: v for k, v in (("w", w), ("w_s", w_s)) if v is not None}
        with busy:
            try:
                rg = read_radiograph(path)
            except CxrdecompError as e:  # name the upload, not the server's temporary path
                raise type(e)(str(e).replace(str(path), path.name)) from e
            out = dec(rg, **opts)
            options = {k: v for k, v in {**dec.options, **opts}.items() if k != "batch_size"}
            write_case(folder / FILES, rg, out, dec.method, options, checkpoint=cache.methods[method])
        meta = json.loads((folder / FILES / CASE_FILE).read_text())
        lo, hi = meta["display_range"]["bone"]
        shows = {"input": rg.image, "bone": apply_display_range(out.bone, lo, hi), "soft_tissue": out.soft_tissue, "enhanced": out.enhanced}
        for name, img in shows.items():
            _write_png8(folder / f"{name}.png", img)
        shutil.rmtree(path.parent, ignore_errors=True)
        base = f"/api/results/{rid}"
        views = None
        if has_views(dec.method):  # keep the model-size input the network saw, for view.png
            import numpy as np
            import torch

            x = dec.to_model_size(torch.from_numpy(np.asarray(rg.image, dtype=np.float32))[None, None])
            np.save(folder / VIEW_INPUT, x[0, 0].cpu().numpy())
            views = {"url": f"{base}/view.png", "max_angle": VIEW_MAX_ANGLE, "size": [dec.size, dec.size]}
        result = {
            "id": rid,
            "source": file.filename,
            "method": method,
            "checkpoint": cache.methods[method],
            "shape": list(rg.image.shape),
            "pixel_spacing_mm": meta["pixel_spacing_mm"],
            "options": {"w": float(options["w"]), "w_s": float(options["w_s"])},
            "bone_range": [lo, hi],
            "images": {name: f"{base}/{name}.png" for name in shows},
            "files": {name: f"{base}/{FILES}/{name}" for name in [*meta["files"], "preview.png", CASE_FILE]},
            "warnings": meta["warnings"],
            "views": views,
        }
        with atomic_path(folder / RESULT) as tmp:
            Path(tmp).write_text(json.dumps(result))
        return result

    @app.get("/api/results/{rid}")
    def result_json(rid: str) -> dict:
        folder = store.get(rid)
        if folder is None or not (folder / RESULT).is_file():
            raise HTTPException(status_code=404, detail=f"no result {rid} (unknown, or removed to make room)")
        return json.loads((folder / RESULT).read_text())

    @app.get("/api/results/{rid}/view.png", response_class=Response, responses={200: {"content": {"image/png": {}}}})
    def result_view(
        rid: str,
        azimuth: float = Query(0.0, description=f"rotation about the patient's long axis, degrees within ±{VIEW_MAX_ANGLE:g}"),
        elevation: float = Query(0.0, description=f"tilt about the left-right axis, degrees within ±{VIEW_MAX_ANGLE:g}"),
    ):
        import io

        import numpy as np
        from PIL import Image

        from cxrdecomp.io.images import to_uint8

        result = result_json(rid)  # 404 when unknown or removed
        if not result.get("views"):
            raise HTTPException(status_code=400, detail=f"result {rid} was decomposed with {result['method']!r}, which has no "
                                                        f"novel views; they need an XraySyn model (method xraysyn)")
        try:
            az, el = check_angle("azimuth", azimuth), check_angle("elevation", elevation)
        except CxrdecompError as e:
            raise HTTPException(status_code=400, detail=str(e)) from e
        folder = store.get(rid)
        if folder is None or not (folder / VIEW_INPUT).is_file():
            raise HTTPException(status_code=404, detail=f"no result {rid} (unknown, or removed to make room)")
        dec = cache(result["method"])
        with busy:  # one model run at a time, as decompositions
            img = view_cache.render(rid, dec.model, lambda: np.load(folder / VIEW_INPUT), az, el)
        if store.get(rid) is None:  # removed meanwhile: keep no prediction for it
            view_cache.drop(rid)
        buf = io.BytesIO()
        Image.fromarray(to_uint8(img)).save(buf, format="PNG", compress_level=1)
        # a result's views never change (a new upload gets a new id): the browser may keep them while the slider moves
        return Response(buf.getvalue(), media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @app.get("/api/results/{rid}/{name}.png")
    def result_image(rid: str, name: str):
        folder = store.get(rid)
        if folder is None or name not in DISPLAY_NAMES or not (folder / f"{name}.png").is_file():
            raise HTTPException(status_code=404, detail=f"no result image {rid}/{name}.png (unknown, or removed to make room)")
        return FileResponse(folder / f"{name}.png", media_type="image/png")

    @app.get("/api/results/{rid}/files/{filename}")
    def result_file(rid: str, filename: str):
        folder = store.get(rid)
        p = folder / FILES / filename if folder is not None else None
        if p is None or filename != Path(filename).name or filename.startswith(".") or not p.is_file():
            raise HTTPException(status_code=404, detail=f"no result file {rid}/{filename} (unknown, or removed to make room)")
        media = {".png": "image/png", ".dcm": "application/dicom", ".json": "application/json"}.get(p.suffix, "application/octet-stream")
        return FileResponse(p, media_type=media, filename=filename if p.suffix == ".dcm" else None)

    return app


def _version() -> str:
    from cxrdecomp import __version__

    return __version__


def serve(app, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Run ``app`` with uvicorn until Ctrl-C."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level="info")
