"""``cxrdecomp evaluate``: score bone suppression against paired truth, identity baseline alongside."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from cxrdecomp.cli.app import app


@app.command("evaluate")
def evaluate_cmd(
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="Folder with cxr/ and soft/ (matching names), e.g. shared/data/bse-jsrt/val."),
    method: Optional[str] = typer.Option(None, "--method", help="Method to run (bundled name, e.g. 'bone'); label when --checkpoint is given."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Checkpoint folder to run instead of the bundled default."),
    pred: Optional[Path] = typer.Option(None, "--pred", help="Score another tool's soft-tissue images (same file names as cxr/)."),
    masks: Optional[Path] = typer.Option(None, "--masks", help="Lung-mask folder (same names) or 'edited' (the lung fields from where soft/ differs from cxr/, as in BSE-JSRT): adds lung-field metrics."),
    simulated: Optional[Path] = typer.Option(None, "--simulated", help="Held-out simulated pairs written by `cxrdecomp simulate`."),
    split: Optional[str] = typer.Option(None, "--split", help="With --simulated: 'val' (held-out poses, default), 'all', or 'ct:I,J' (held-out CTs)."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Output folder (per_image.csv, summary.json, grid.png); with --results the page path."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu or cuda (default: cuda when available)."),
    save_pred: bool = typer.Option(False, "--save-pred", help="Also write the method's predictions as 16-bit PNGs in OUT/pred/."),
    results: bool = typer.Option(False, "--results", help="Regenerate the results page (docs/results.md) for every bundled method."),
) -> None:
    """Score bone suppression against paired truth (display domain, truth's resolution), identity baseline alongside."""
    from cxrdecomp import evaluate as ev
    from cxrdecomp.errors import ConfigError

    if results:
        path = ev.write_results_page(out or Path("docs/results.md"), pairs=pairs, simulated=simulated, device=device)
        typer.echo(f"wrote {path}")
        return
    if out is None:
        raise ConfigError("give an output folder with -o OUT")
    if (pairs is None) == (simulated is None):
        raise ConfigError("give exactly one of --pairs DIR or --simulated SIMDIR")
    if simulated is not None:
        s = ev.evaluate_simulated(simulated, out, method=method, checkpoint=checkpoint, split=split, device=device)
    else:
        s = ev.evaluate_pairs(pairs, out, method=method, checkpoint=checkpoint, pred_dir=pred, mask_dir=masks,
                              device=device, save_pred=save_pred)
    typer.echo(ev.format_table(s))
    for n in s["notes"]:
        typer.echo(f"note: {n}", err=True)
    typer.echo(f"wrote {out}/per_image.csv, summary.json, grid.png")
