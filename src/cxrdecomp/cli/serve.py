"""``cxrdecomp serve`` (web viewer) and ``pacs`` (DICOM storage node)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cxrdecomp.cli.app import app
from cxrdecomp.cli.common import cpu_setup, load_decomposer


def _served_methods(method: str, checkpoint: Optional[str]) -> dict[str, str]:
    """Methods a server offers: installed bundled checkpoints, plus ``--checkpoint`` as ``--method``."""
    from cxrdecomp.serve.models import bundled_methods

    methods = bundled_methods()
    if checkpoint is not None:
        methods[method] = checkpoint
    return methods


@app.command("serve")
def serve_cmd(
    method: Optional[str] = typer.Option(None, "--method", "-m", help="Method pre-selected in the page (default: the default bundled one), or the name given to --checkpoint."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", "-c", help="Checkpoint folder served as --method (besides the bundled ones)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0: every interface; no authentication, keep it on a trusted network)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)."),
    max_results: int = typer.Option(20, "--max-results", min=1, help="Results kept in the temporary folder (least recently used removed)."),
    max_queue: int = typer.Option(8, "--max-queue", min=1, help="Uploads in progress at most; more get HTTP 503 with Retry-After."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for torch (default: torch's choice)."),
) -> None:
    """Web viewer: upload a radiograph, see input / bone / soft tissue / enhanced, tune w in the browser."""
    cpu_setup(threads)
    from cxrdecomp import methods as registry
    from cxrdecomp.errors import ConfigError
    from cxrdecomp.serve.web import create_app, serve

    if method is None or checkpoint is None:
        method = registry.bundled_checkpoint(method) if checkpoint is None else method or "custom"
    methods = _served_methods(method, checkpoint)
    if method not in methods:
        raise ConfigError(f"no bundled checkpoint for --method {method!r} (installed: {sorted(methods) or 'none'}); give --checkpoint FOLDER")
    app_ = create_app(lambda m: load_decomposer(m, methods[m], device)[0], methods, default_method=method, max_results=max_results,
                      max_queue=max_queue)
    typer.echo(f"cxrdecomp viewer on http://{host}:{port}/  (Ctrl-C to stop)", err=True)
    serve(app_, host=host, port=port)


@app.command("pacs")
def pacs_cmd(
    ae_title: str = typer.Option("CXRDECOMP", "--ae-title", help="This node's AE title (1-16 characters)."),
    port: int = typer.Option(11112, "--port", help="TCP port to listen on."),
    host: str = typer.Option("0.0.0.0", "--host", help="Interface to listen on (default: every interface, so that a PACS can reach it)."),
    method: Optional[str] = typer.Option(None, "--method", "-m", help="Method whose bundled checkpoint to use (default: the default one)."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", "-c", help="Checkpoint folder or bundled name; overrides --method."),
    out: Path = typer.Option(Path("out/pacs"), "-o", "--out", help="Output folder: OUT/<StudyInstanceUID>/<SOPInstanceUID>/{bone,soft_tissue,enhanced}.dcm ..."),
    forward: Optional[str] = typer.Option(None, "--forward", help="HOST:PORT:AET to C-STORE the derived instances to (e.g. the originating PACS)."),
    w: Optional[float] = typer.Option(None, "--w", help="Enhancement weight: enhanced = I + w*bone."),
    w_s: Optional[float] = typer.Option(None, "--w-s", help="Suppression weight: soft tissue = I - w_s*bone."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for torch (default: torch's choice)."),
    retry_max: float = typer.Option(300.0, "--retry-max", min=1, help="Longest wait (s) between attempts of a pending forward (backoff from 5 s)."),
    status: bool = typer.Option(False, "--status", help="List the forwards pending in OUT's outbox and exit."),
) -> None:
    """DICOM node (C-ECHO, C-STORE of CR/DX/Secondary Capture): decompose each received radiograph."""
    if status:
        import datetime

        from cxrdecomp.serve.pacs import OUTBOX, Outbox

        jobs = Outbox(out / OUTBOX).status()
        for j in jobs:
            when = datetime.datetime.fromtimestamp(j["next_attempt"]).isoformat(timespec="seconds")
            typer.echo(f"{j['name']}: {j['instances']} instance(s) to {j['destination']}, {j['attempts']} attempt(s), "
                       f"next {when}, last error: {j['last_error']}")
        typer.echo(f"{len(jobs)} forward(s) pending in {out / OUTBOX}")
        return
    cpu_setup(threads)
    import logging
    import signal

    from cxrdecomp.serve.pacs import DecompositionSCP, Destination

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    dest = Destination.parse(forward) if forward else None
    dec, ckpt = load_decomposer(method, checkpoint, device, w=w, w_s=w_s)

    def _term(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    scp = DecompositionSCP(dec, out, ae_title=ae_title, forward=dest, checkpoint=ckpt, retry_max_s=retry_max).start(host, port)
    typer.echo(f"cxrdecomp DICOM node {ae_title} on {host}:{scp.port}, writing to {out}  (Ctrl-C to stop)", err=True)
    scp.serve_forever()
