"""``cxrdecomp simulate`` (realistic radiographs and their targets from CT) and ``simulate-lung`` (lung views)."""

from __future__ import annotations

from pathlib import Path

import typer

from cxrdecomp.cli.app import app


@app.command("simulate")
def simulate_cmd(
    ct: list[Path] = typer.Argument(None, help="CT volumes: NIfTI, NRRD/MHA files or folders holding one DICOM series."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder of the samples."),
    example: bool = typer.Option(False, "--example", help="Use the example chest CT (with its label map)."),
    labels: list[Path] = typer.Option(None, "--labels", help="Label map per CT (same grid), in CT order."),
    label_names: Path | None = typer.Option(None, "--label-names", help="structures.csv (columns structure,id) for the label maps."),
    n_per_ct: int = typer.Option(100, "--n-per-ct", help="Samples per CT (may grow on a rerun)."),
    size: int = typer.Option(512, "--size", help="Detector size (square pixels, 256–1024)."),
    seed: int = typer.Option(0, "--seed"),
    split: str = typer.Option("train", "--split", help="train, or val: the held-out bank of validation anatomies."),
    target: str = typer.Option("volume", "--target", help="Bone in the soft-tissue target replaced by soft tissue of equal volume, of equal mass, or by air."),
    des: bool = typer.Option(False, "--des/--no-des", help="Also store the virtual dual-energy soft/bone pair."),
    anatomy_reuse: int = typer.Option(8, "--anatomy-reuse", help="Consecutive samples sharing one 3-D anatomy (deformation costs ~1 s)."),
    method: str = typer.Option("shearwarp", "--method", help="Projector: shearwarp (fast) or joseph (exact rays)."),
    shard: str | None = typer.Option(None, "--shard", help="K/N: render only every N-th sample starting at K (array jobs, several processes)."),
    device: str = typer.Option("cpu", "--device", help="torch device for rendering (cpu, cuda)."),
    previews: bool = typer.Option(True, "--previews/--no-previews", help="Write PNG previews."),
) -> None:
    """Simulate realistic radiographs with bone / soft-tissue / lung targets from CT (resumable; rerun to continue)."""
    from cxrdecomp.errors import ConfigError
    from cxrdecomp.io import ct as ctio
    from cxrdecomp.cli.common import parse_shard
    from cxrdecomp.simulate.generate import simulate
    from cxrdecomp.simulate.pipeline import TARGETS

    paths = list(ct or [])
    if not paths and not example:
        raise ConfigError("give CT paths or --example")
    if labels and len(labels) != len(paths):
        raise ConfigError(f"--labels given {len(labels)} times for {len(paths)} CTs; give one label map per CT")
    if target not in TARGETS:
        raise ConfigError(f"--target must be one of {', '.join(TARGETS)}, not {target!r}")
    if split not in ("train", "val"):
        raise ConfigError(f"--split must be train or val, not {split!r}")
    missing = [str(p) for p in [*paths, *(labels or [])] if not p.exists()]
    if missing:
        raise ConfigError(f"no such file or folder: {', '.join(missing)}")
    sources = [ctio.example_ct] if example else []
    for i, p in enumerate(paths):
        lab = labels[i] if labels else None
        sources.append(lambda p=p, lab=lab: ctio.read_ct(p, lab, label_names if lab is not None else None))
    res = simulate(sources, out, n_per_ct=n_per_ct, size=size, seed=seed, split=split, target=target, method=method, des=des,
                   anatomy_reuse=anatomy_reuse, shard=parse_shard(shard), device=device, previews=previews)
    typer.echo(f"{res['written']} written, {res['skipped']} already done, {res['total']} samples in {out}")


@app.command("simulate-lung")
def simulate_lung_cmd(
    out: Path = typer.Option(..., "-o", "--out", help="Output folder; gets train/ and val/ sub-folders."),
    n: int = typer.Option(400, "--n", help="Training views to render."),
    n_val: int = typer.Option(32, "--n-val", help="Validation views (another random stream)."),
    size: int = typer.Option(512, "--size", help="Square image size in pixels."),
    ct: Path | None = typer.Option(None, "--ct", help="CT NIfTI (HU); default: the example CT with its lobe labels."),
    seed: int = typer.Option(0, "--seed"),
    device: str | None = typer.Option(None, "--device", help="cuda or cpu (default: cuda when available)."),
    workers: int = typer.Option(4, "--workers", help="Threads for HE+CLAHE and PNG writing."),
) -> None:
    """Render simulated lung views: DRR, lung X-ray (Eq. 4), 2D lung and nodule masks (resumable)."""
    from cxrdecomp.simulate import lung_generate as G

    if ct is not None:
        from cxrdecomp.io.ct import read_ct

        cases = [G.prepare_case(read_ct(ct), ct.name.split(".")[0])]
    else:
        cases = [G.example_case()]
    cfg = G.LungSimConfig(size=size)
    G.simulate(out / "train", n, cases, cfg, seed=seed, device=device, workers=workers)
    if n_val > 0:
        G.simulate(out / "val", n_val, cases, cfg, seed=seed + 1_000_003, device=device, workers=workers)
    typer.echo(str(out))
