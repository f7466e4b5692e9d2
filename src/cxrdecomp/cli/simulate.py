"""``cxrdecomp simulate`` (DRR / bone / soft-tissue pairs from CT) and ``simulate-lung`` (lung views)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cxrdecomp.cli.app import app


def _parse_pair(text: Optional[str], what: str) -> Optional[tuple[float, float]]:
    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        from cxrdecomp.errors import ConfigError

        raise ConfigError(f"{what} must be two numbers 'LO,HI', not {text!r}") from None
    return lo, hi


@app.command("simulate")
def simulate_cmd(
    ct: list[Path] = typer.Argument(None, help="CT volumes: NIfTI, NRRD/MHA files or folders holding one DICOM series."),
    out: Path = typer.Option(..., "-o", "--out", help="Output folder of the training pairs."),
    example: bool = typer.Option(False, "--example", help="Use the example chest CT (with its label map)."),
    labels: list[Path] = typer.Option(None, "--labels", help="Label map per CT (same grid), in CT order."),
    label_names: Optional[Path] = typer.Option(None, "--label-names", help="structures.csv (columns structure,id) for the label maps."),
    n_per_ct: int = typer.Option(100, "--n-per-ct", help="Samples per CT."),
    size: int = typer.Option(512, "--size", help="Detector size (square pixels)."),
    seed: int = typer.Option(0, "--seed"),
    bone: str = typer.Option("auto", "--bone", help="Bone voxels: auto (labels if present, else HU window), labels, hu."),
    hu_window: str = typer.Option("300,700", "--hu-window", help="Bone HU window LO,HI (paper: 300,700)."),
    soft_fill_hu: Optional[float] = typer.Option(None, "--soft-fill-hu", help="HU put in bone voxels of the soft-tissue volume (default: -1024 as the paper)."),
    max_rot: float = typer.Option(10.0, "--max-rot", help="Max rotation (degrees) per axis."),
    ray_step_mm: Optional[float] = typer.Option(None, "--ray-step-mm", help="Sample spacing along rays (default: CT Y spacing)."),
    device: str = typer.Option("cpu", "--device", help="torch device for rendering (cpu, cuda)."),
    previews: bool = typer.Option(True, "--previews/--no-previews", help="Write PNG previews."),
) -> None:
    """Simulate DRR / bone / soft-tissue training pairs from CT (resumable; rerun to continue)."""
    from cxrdecomp.errors import ConfigError
    from cxrdecomp.io import ct as ctio
    from cxrdecomp.simulate.generate import simulate

    paths = list(ct or [])
    if not paths and not example:
        raise ConfigError("give CT paths or --example")
    if labels and len(labels) != len(paths):
        raise ConfigError(f"--labels given {len(labels)} times for {len(paths)} CTs; give one label map per CT")
    sources = [ctio.example_ct] if example else []
    for i, p in enumerate(paths):
        lab = labels[i] if labels else None
        sources.append(lambda p=p, lab=lab: ctio.read_ct(p, lab, label_names if lab is not None else None))
    res = simulate(sources, out, n_per_ct=n_per_ct, size=size, seed=seed, bone=bone, hu_window=_parse_pair(hu_window, "--hu-window"),
                   soft_fill_hu=soft_fill_hu, max_rot_deg=max_rot, ray_step_mm=ray_step_mm, device=device, previews=previews)
    typer.echo(f"{res['written']} written, {res['skipped']} already done, {res['total']} samples in {out}")


@app.command("simulate-lung")
def simulate_lung_cmd(
    out: Path = typer.Option(..., "-o", "--out", help="Output folder; gets train/ and val/ sub-folders."),
    n: int = typer.Option(400, "--n", help="Training views to render."),
    n_val: int = typer.Option(32, "--n-val", help="Validation views (another random stream)."),
    size: int = typer.Option(512, "--size", help="Square image size in pixels."),
    ct: Optional[Path] = typer.Option(None, "--ct", help="CT NIfTI (HU); default: the example CT with its lobe labels."),
    seed: int = typer.Option(0, "--seed"),
    device: Optional[str] = typer.Option(None, "--device", help="cuda or cpu (default: cuda when available)."),
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
