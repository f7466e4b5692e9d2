"""``cxrdecomp decompose`` and ``demo``: run a method on radiographs, write all outputs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from cxrdecomp.cli.app import app
from cxrdecomp.cli.common import cpu_setup, load_decomposer


@app.command("decompose")
def decompose_cmd(
    inputs: list[Path] = typer.Argument(..., help="Radiograph files (DICOM CR/DX, PNG, JPEG, TIFF) or folders (searched recursively)."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder: OUT/<name>/{bone,soft_tissue,enhanced}.{png,dcm}, preview.png; OUT/index.html."),
    method: Optional[str] = typer.Option(None, "--method", "-m", help="Method whose bundled checkpoint to use (bone, dae, bsdiff, lung); default: the best measured one."),
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
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Skip cases already decomposed the same way (a killed run continues)."),
    shard: Optional[str] = typer.Option(None, "--shard", help="K/N: decompose only every N-th input from the K-th (0-based), for N processes or nodes."),
    workers: int = typer.Option(0, "--workers", min=0, help="Reader processes decoding the next radiographs while the network runs."),
) -> None:
    """Decompose radiographs into bone, soft-tissue and enhanced images at full resolution.

    Every failed input gives one line on stderr and no outputs; the others are still processed;
    the exit code is then 2.
    """
    cpu_setup(threads)
    from cxrdecomp.batch import INDEX_FILE, decompose_files
    from cxrdecomp.cli.common import parse_shard

    k_n = parse_shard(shard)
    dec, ckpt = load_decomposer(method, checkpoint, device, w=w, w_s=w_s, steps=steps, upsample=upsample, batch_size=batch_size, precision=precision)
    results = decompose_files(
        inputs, out, dec, write_dicom=not no_dicom, batch_size=batch_size, progress=not quiet,
        log=lambda s: print(f"cxrdecomp: {'' if s.startswith('warning: ') else 'error: '}{s}", file=sys.stderr),
        checkpoint=ckpt, resume=resume, shard=k_n, num_workers=workers,
    )
    ok = sum(r.ok for r in results)
    skipped = sum(r.skipped for r in results)
    done = f" ({skipped} already done, skipped)" if skipped else ""
    typer.echo(f"{ok} of {len(results)} radiograph(s) decomposed{done}; see {out / INDEX_FILE}")
    if ok < len(results):
        raise SystemExit(2)


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("out/demo"), "-o", "--out", help="Output folder."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda ... (default: cuda when available)."),
) -> None:
    """Fetch the example radiograph (RG1_UNCI.dcm) and decompose it with the default model."""
    cpu_setup(None)
    from cxrdecomp.batch import INDEX_FILE, decompose_files
    from cxrdecomp.io import examples

    path = examples.fetch(("RG1_UNCI.dcm",), log=lambda s: print(s, file=sys.stderr))["RG1_UNCI.dcm"]
    dec, ckpt = load_decomposer(None, None, device)
    results = decompose_files(
        [path], out, dec, log=lambda s: print(f"cxrdecomp: {s}", file=sys.stderr), checkpoint=ckpt,
    )
    if not all(r.ok for r in results):
        raise SystemExit(2)
    typer.echo(str((out / INDEX_FILE).resolve()))
