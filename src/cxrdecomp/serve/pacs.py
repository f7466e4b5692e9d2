"""A DICOM node (Storage SCP) that decomposes every chest radiograph it receives.

``cxrdecomp pacs`` runs :class:`DecompositionSCP`. It accepts associations for C-ECHO
(Verification) and C-STORE of Computed Radiography, Digital X-Ray (for presentation and for
processing) and Secondary Capture images, in any transfer syntax pynetdicom knows (compressed
ones are decoded by pydicom / pylibjpeg). Other SOP classes (CT, MR, ...) are refused at association
negotiation, as a PACS expects from a node that does not store them.

A received instance is written to a spool folder ``OUT/.incoming/`` and acknowledged at once; a
worker thread then reads it (:func:`~cxrdecomp.io.radiograph.read_radiograph`), decomposes it and
writes, with :func:`cxrdecomp.batch.write_case`, ``OUT/<StudyInstanceUID>/<SOPInstanceUID>/``:
``bone.dcm``, ``soft_tissue.dcm``, ``enhanced.dcm`` (derived Secondary Capture, same patient and
study, one new series each; :mod:`cxrdecomp.io.dicom_out`), the 16-bit PNGs, ``preview.png`` and
``decomposition.json``, plus ``OUT/<StudyInstanceUID>/index.html``. With ``forward`` the derived
DICOM instances are then sent (C-STORE) to that node, e.g. back to the originating PACS, through a durable
outbox (:class:`Outbox`, ``OUT/.outbox/``): a send is a job file written before the first attempt and removed
only once the destination has accepted every instance, retried with exponential backoff (one log line per
attempt) and resumed after a restart of the node. ``cxrdecomp pacs --status -o OUT`` lists what is pending.

Status choice: the C-STORE response is *Success* (0x0000) once the instance is safely spooled,
whatever happens next. Decomposition runs after the association has returned, so its outcome
cannot be reported in the response; and a Secondary Capture that is not a radiograph (a screenshot,
a scanned document), an undecodable image, or one of cxrdecomp's own derived images routed back
to us (recognised by ``Manufacturer`` ``cxrdecomp``; not re-decomposed, which prevents a loop with
``forward``) is logged and skipped rather than failed, so that a PACS autorouting a whole study
does not retry or flag it. Only a spool write failure returns *Out of resources* (0xA700).

Instances left in the spool by an interrupted run are processed at the next start. Ctrl-C stops
accepting associations, finishes the instance being decomposed and leaves the rest spooled.
"""

from __future__ import annotations

import logging
import queue
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

from cxrdecomp.errors import ConfigError, CxrdecompError

log = logging.getLogger("cxrdecomp.pacs")

SPOOL = ".incoming"
OUTBOX = ".outbox"
DERIVED_KINDS = ("bone", "soft_tissue", "enhanced")


def storage_sop_classes() -> list:
    """The storage SOP classes accepted: CR, DX (presentation, processing), Secondary Capture."""
    from pynetdicom.sop_class import (
        ComputedRadiographyImageStorage,
        DigitalXRayImageStorageForPresentation,
        DigitalXRayImageStorageForProcessing,
        SecondaryCaptureImageStorage,
    )

    return [ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation, DigitalXRayImageStorageForProcessing, SecondaryCaptureImageStorage]


@dataclass(frozen=True)
class Destination:
    """A DICOM node to C-STORE to: ``host``, ``port``, ``ae_title``."""

    host: str
    port: int
    ae_title: str

    @classmethod
    def parse(cls, spec: str) -> "Destination":
        """``"HOST:PORT:AET"`` → :class:`Destination`.

        Raises:
            ConfigError: not three fields, a bad port, or an AE title over 16 characters.
        """
        parts = spec.rsplit(":", 2)
        if len(parts) != 3 or not all(p.strip() for p in parts):
            raise ConfigError(f"--forward {spec!r}: expected HOST:PORT:AET, e.g. 10.0.0.5:104:ORTHANC")
        host, port, aet = (p.strip() for p in parts)
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"--forward {spec!r}: port {port!r} is not a number from 1 to 65535")
        if len(aet) > 16:
            raise ConfigError(f"--forward {spec!r}: AE title {aet!r} is longer than 16 characters")
        return cls(host, int(port), aet)


def store_files(dest: Destination, files: list[Path], calling_aet: str = "CXRDECOMP", timeout: float = 30) -> list[Path]:
    """C-STORE DICOM files (as written by :mod:`cxrdecomp.io.dicom_out`: Secondary Capture, or DX "for presentation"
    for CR/DX sources with detector spacing) to ``dest``.

    Returns:
        The files the destination accepted (status 0x0000 or a warning 0xB...).

    Raises:
        CxrdecompError: the association is rejected or cannot be made.
    """
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import AE
    from pynetdicom.sop_class import DigitalXRayImageStorageForPresentation, SecondaryCaptureImageStorage

    ae = AE(ae_title=calling_aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    for sop in (SecondaryCaptureImageStorage, DigitalXRayImageStorageForPresentation):
        ae.add_requested_context(sop, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    assoc = ae.associate(dest.host, dest.port, ae_title=dest.ae_title)
    if not assoc.is_established:
        raise CxrdecompError(f"cannot forward to {dest.ae_title}@{dest.host}:{dest.port}: association rejected, aborted or never connected")
    ok: list[Path] = []
    try:
        for f in files:
            status = assoc.send_c_store(f)
            code = getattr(status, "Status", None)
            if code is not None and (code == 0 or 0xB000 <= code < 0xC000):
                ok.append(f)
            else:
                log.error("forward of %s to %s: status %s", f.name, dest.ae_title, f"0x{code:04X}" if code is not None else "none (connection lost)")
    finally:
        if assoc.is_established:
            assoc.release()
    return ok


class Outbox:
    """Durable queue of pending C-STOREs: one JSON job file per send in ``folder`` (module docstring).

    A job holds the destination, the files still to send, the number of attempts, the time of the next one and the
    last error. :meth:`attempt_due` tries every due job once; a failed attempt doubles the wait (``retry_base_s``,
    2·, 4·, … up to ``retry_max_s``). Files that were accepted leave the job at once, so a retry sends only the rest,
    and the job file goes when nothing is left. Files are written atomically, so a kill at any moment leaves each
    job either before or after an attempt.
    """

    def __init__(self, folder: Path, calling_aet: str = "CXRDECOMP", retry_base_s: float = 5.0, retry_max_s: float = 300.0,
                 timeout: float = 30.0):
        self.folder = Path(folder)
        self.calling_aet, self.retry_base_s, self.retry_max_s, self.timeout = calling_aet, float(retry_base_s), float(retry_max_s), float(timeout)
        self._lock = threading.Lock()

    def add(self, dest: Destination, files: list[Path], name: str) -> Path:
        """Queue ``files`` for ``dest`` as job ``name`` (replacing a pending job of that name); returns the job file."""
        import json
        import time

        from cxrdecomp.io.atomic import atomic_path

        job = {"destination": {"host": dest.host, "port": dest.port, "ae_title": dest.ae_title},
               "files": [str(Path(f).resolve()) for f in files], "attempts": 0, "created": time.time(), "next_attempt": 0.0,
               "last_error": None}
        path = self.folder / f"{_safe_uid(name)}.json"
        with self._lock, atomic_path(path) as tmp:
            Path(tmp).write_text(json.dumps(job, indent=1))
        return path

    def jobs(self) -> list[tuple[Path, dict]]:
        """Pending jobs ``(file, job)``, oldest first (unreadable job files are skipped with a log line)."""
        import json

        found = []
        for f in self.folder.glob("*.json") if self.folder.is_dir() else []:
            try:  # the sender thread may finish (delete) a job between the listing and the read: it is simply gone
                found.append((f.stat().st_mtime, f, json.loads(f.read_text())))
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as e:
                log.error("outbox: cannot read %s: %s", f.name, e)
        return [(f, job) for _, f, job in sorted(found, key=lambda t: t[0])]

    def attempt_due(self, now: float | None = None) -> int:
        """Try every job whose time has come once; returns how many jobs finished."""
        import json
        import time

        from cxrdecomp.io.atomic import atomic_path

        done = 0
        for path, job in self.jobs():
            now_ = time.time() if now is None else now
            if job.get("next_attempt", 0) > now_:
                continue
            d = job["destination"]
            dest = Destination(d["host"], int(d["port"]), d["ae_title"])
            files = [Path(f) for f in job["files"] if Path(f).is_file()]
            job["attempts"] = int(job.get("attempts", 0)) + 1
            try:
                sent = set(store_files(dest, files, self.calling_aet, self.timeout))
                error = None if len(sent) == len(files) else f"{len(files) - len(sent)} of {len(files)} instances refused"
            except CxrdecompError as e:
                sent, error = set(), str(e)
            left = [f for f in files if f not in sent]
            with self._lock:
                if not left:
                    path.unlink(missing_ok=True)
                    log.info("outbox: sent %s (%d instances) to %s on attempt %d", path.stem, len(files), dest.ae_title, job["attempts"])
                    done += 1
                    continue
                wait = min(self.retry_max_s, self.retry_base_s * 2 ** (job["attempts"] - 1))
                job.update(files=[str(f) for f in left], next_attempt=time.time() + wait, last_error=error)
                with atomic_path(path) as tmp:
                    Path(tmp).write_text(json.dumps(job, indent=1))
            log.warning("outbox: attempt %d for %s to %s failed (%s); %d instance(s) left, next try in %.0f s",
                        job["attempts"], path.stem, dest.ae_title, error, len(left), wait)
        return done

    def status(self) -> list[dict]:
        """One dict per pending job: ``name``, ``destination``, ``instances``, ``attempts``, ``next_attempt`` (epoch
        seconds), ``last_error``."""
        return [{"name": p.stem, "destination": f"{j['destination']['ae_title']}@{j['destination']['host']}:{j['destination']['port']}",
                 "instances": len(j.get("files", [])), "attempts": j.get("attempts", 0), "next_attempt": j.get("next_attempt", 0),
                 "last_error": j.get("last_error")} for p, j in self.jobs()]


class DecompositionSCP:
    """Storage SCP that decomposes received radiographs in a worker thread (module docstring).

    Args:
        decomposer: a loaded :class:`~cxrdecomp.decomposer.Decomposer`.
        out: output folder (``OUT/<StudyInstanceUID>/<SOPInstanceUID>/``; spool in ``OUT/.incoming``).
        ae_title: this node's AE title (≤ 16 characters).
        forward: send the derived instances there (through the durable :class:`Outbox`), or ``None``.
        checkpoint: checkpoint name or folder, recorded in ``decomposition.json``.
        retry_base_s, retry_max_s: first and longest wait between send attempts of a pending forward.

    Example::

        scp = DecompositionSCP(Decomposer.from_pretrained("bone"), "out/pacs").start("0.0.0.0", 11112)
        ...
        scp.stop()
    """

    def __init__(self, decomposer, out, ae_title: str = "CXRDECOMP", forward: Destination | None = None, checkpoint: str | None = None,
                 retry_base_s: float = 5.0, retry_max_s: float = 300.0):
        if not ae_title or len(ae_title) > 16:
            raise ConfigError(f"AE title {ae_title!r} must be 1 to 16 characters")
        self.decomposer = decomposer
        self.out = Path(out)
        self.spool = self.out / SPOOL
        self.ae_title = ae_title
        self.forward = forward
        self.checkpoint = checkpoint
        self.outbox = Outbox(self.out / OUTBOX, ae_title, retry_base_s, retry_max_s)
        self._sender: threading.Thread | None = None
        self._wake = threading.Event()
        self._queue: queue.Queue[Path] = queue.Queue()
        self._stop = threading.Event()
        self._idle = threading.Condition()
        self._pending = 0
        self._server = None
        self._worker: threading.Thread | None = None
        #: (input file name, output folder or None, error or None) of each processed instance, in order
        self.processed: list[tuple[str, Path | None, str | None]] = []

    # --- network ----------------------------------------------------------------------------

    def start(self, host: str = "0.0.0.0", port: int = 11112) -> "DecompositionSCP":
        """Start listening (non-blocking) and the worker; spooled leftovers are queued first.

        Raises:
            CxrdecompError: the port cannot be opened (in use, or a privileged port).
        """
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
        from pynetdicom.sop_class import Verification

        self.spool.mkdir(parents=True, exist_ok=True)
        for f in sorted(self.spool.glob("*.dcm")):
            self._enqueue(f)
        ae = AE(ae_title=self.ae_title)
        ae.add_supported_context(Verification)
        for sop in storage_sop_classes():
            ae.add_supported_context(sop, ALL_TRANSFER_SYNTAXES)
        self._worker = threading.Thread(target=self._work, name="cxrdecomp-pacs-worker", daemon=True)
        self._worker.start()
        self._sender = threading.Thread(target=self._send_loop, name="cxrdecomp-pacs-outbox", daemon=True)
        self._sender.start()  # also resumes the sends a previous run left pending
        try:
            self._server = ae.start_server((host, port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        except OSError as e:
            self.stop()
            raise CxrdecompError(f"cannot listen on {host}:{port} ({e}); choose another --port") from e
        log.info("%s listening on %s:%d", self.ae_title, host, self.port)
        return self

    @property
    def port(self) -> int:
        """The TCP port listened on (useful with port 0)."""
        return int(self._server.server_address[1]) if self._server is not None else 0

    def _on_store(self, event) -> int:
        """C-STORE: spool the instance as a DICOM file and queue it; reply at once."""
        from cxrdecomp.io.atomic import atomic_path

        uid = str(event.request.AffectedSOPInstanceUID)
        name = "".join(ch for ch in uid if ch.isdigit() or ch == ".") or "instance"
        path = self.spool / f"{name}.dcm"
        try:
            with atomic_path(path) as tmp:
                Path(tmp).write_bytes(event.encoded_dataset())
        except OSError as e:
            log.error("cannot spool %s from %s: %s", uid, event.assoc.requestor.ae_title, e)
            return 0xA700
        log.info("received %s from %s", uid, event.assoc.requestor.ae_title)
        self._enqueue(path)
        return 0x0000

    # --- worker -----------------------------------------------------------------------------

    def _enqueue(self, path: Path) -> None:
        with self._idle:
            self._pending += 1
        self._queue.put(path)

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                path = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self.process(path)
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def process(self, path: Path) -> Path | None:
        """Decompose one spooled instance, write its outputs, forward them; delete the spool file.

        Returns:
            The output folder, or ``None`` when the instance was skipped (logged).
        """
        from cxrdecomp.batch import write_case, write_index
        from cxrdecomp.io.dicom_out import MANUFACTURER
        from cxrdecomp.io.radiograph import RadiographWarning, read_radiograph

        folder, error = None, None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RadiographWarning)  # logged below instead
                rg = read_radiograph(path)
            ds = rg.dataset
            if str(ds.get("Manufacturer", "")) == MANUFACTURER:
                raise CxrdecompError(f"{ds.SOPInstanceUID}: an image derived by cxrdecomp; not decomposed again")
            for w in rg.warnings:
                log.warning("%s", w)
            dec = self.decomposer(rg)
            options = {k: v for k, v in self.decomposer.options.items() if k != "batch_size"}
            study = self.out / _safe_uid(ds.get("StudyInstanceUID", "unknown-study"))
            folder = write_case(study / path.stem, rg, dec, self.decomposer.method, options, checkpoint=self.checkpoint)
            write_index(study)
            log.info("decomposed %s → %s", path.stem, folder)
            if self.forward is not None:
                files = [folder / f"{k}.dcm" for k in DERIVED_KINDS if (folder / f"{k}.dcm").is_file()]
                self.outbox.add(self.forward, files, path.stem)
                self._wake.set()
        except CxrdecompError as e:
            error = str(e)
            log.warning("%s: %s", path.stem, e)
        except Exception as e:  # keep the node alive whatever one instance does
            error = f"{type(e).__name__}: {e}"
            log.exception("failed on %s", path.name)
        finally:
            path.unlink(missing_ok=True)
        self.processed.append((path.name, folder, error))
        return folder

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.outbox.attempt_due()
            except Exception:  # keep the sender alive whatever one job does
                log.exception("outbox: unexpected error")
            self._wake.wait(1.0)
            self._wake.clear()

    def wait_sent(self, timeout: float | None = None) -> bool:
        """Block until the outbox is empty; ``False`` if ``timeout`` s passed first."""
        import time

        end = None if timeout is None else time.monotonic() + timeout
        while self.outbox.jobs():
            if end is not None and time.monotonic() > end:
                return False
            time.sleep(0.05)
        return True

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until every received instance is processed; ``False`` if ``timeout`` s passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout=timeout)

    def stop(self) -> None:
        """Stop accepting associations, finish the current instance, stop the worker (rest stays spooled)."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self._stop.set()
        self._wake.set()
        if self._worker is not None:
            self._worker.join()
            self._worker = None
        if self._sender is not None:
            self._sender.join()
            self._sender = None

    def serve_forever(self) -> None:
        """Block until Ctrl-C (or SIGTERM as KeyboardInterrupt), then :meth:`stop`."""
        try:
            while not self._stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            log.info("stopping (instances not yet decomposed stay in %s)", self.spool)
        finally:
            self.stop()


def _safe_uid(uid) -> str:
    return "".join(ch for ch in str(uid) if ch.isalnum() or ch in ".-") or "unknown-study"
