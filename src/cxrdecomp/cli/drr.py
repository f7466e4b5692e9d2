"""``cxrdecomp drr``: DRRs of your own CT through the realistic pipeline, fixed parameters (docs/drr.md)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from cxrdecomp.cli.app import app
from cxrdecomp.cli.common import cpu_setup


def _names(text: str | None) -> tuple[str, ...]:
    return tuple(s.strip() for s in (text or "").split(",") if s.strip())


def _read_spectrum(path: Path) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Two columns ``energy_keV, weight`` (comma, tab or space separated; ``#`` comments and a header line allowed)."""
    from cxrdecomp.errors import InputError

    e, w = [], []
    try:
        lines = path.read_text().splitlines()
    except OSError as err:
        raise InputError(f"cannot read the spectrum file {path}: {err}") from None
    for n, line in enumerate(lines, 1):
        line = line.split("#")[0].replace(",", " ").replace(";", " ").strip()
        if not line:
            continue
        try:
            a, b = (float(v) for v in line.split()[:2])
        except ValueError:
            if not e:  # a header line
                continue
            raise InputError(f"{path}:{n}: expected two numbers 'energy_keV weight', got {line!r}") from None
        e.append(a)
        w.append(b)
    if not e:
        raise InputError(f"{path} holds no 'energy_keV weight' lines")
    return tuple(e), tuple(w)


@app.command("drr")
def drr_cmd(
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder: image.png, bone.png, soft_tissue.png ... and drr.json (all parameters).")],
    ct: Annotated[Path | None, typer.Argument(help="CT: NIfTI (.nii/.nii.gz), NRRD/MHA, or a folder holding one DICOM series (HU).")] = None,
    example: Annotated[bool, typer.Option("--example", help="Use the example chest CT with its label map (fetched once).")] = False,
    labels: Annotated[Path | None, typer.Option("--labels", help="Label map on the CT's grid (bones and lungs from labels instead of HU).")] = None,
    label_names: Annotated[Path | None, typer.Option("--label-names", help="structures.csv (columns structure,id) naming the labels.")] = None,
    size: Annotated[int, typer.Option("--size", help="Detector pixels per side.")] = 512,
    view: Annotated[str, typer.Option("--view", help="PA (source behind the patient) or AP (source in front; bedside).")] = "PA",
    sdd: Annotated[float, typer.Option("--sdd", help="Source-to-detector distance (mm).")] = 1800.0,
    air_gap: Annotated[float, typer.Option("--air-gap", help="Detector distance behind the body surface (mm).")] = 20.0,
    fov: Annotated[float, typer.Option("--fov", help="Field of view at the isocentre, fraction of the CT's larger width/height.")] = 1.0,
    azimuth: Annotated[float | None, typer.Option("--azimuth", help="Rotation about the patient's long axis (degrees).")] = None,
    tilt: Annotated[float, typer.Option("--tilt", help="Tilt about the left-right axis (degrees).")] = 0.0,
    roll: Annotated[float, typer.Option("--roll", help="In-plane rotation (degrees).")] = 0.0,
    sweep: Annotated[str | None, typer.Option("--sweep", help="A:B:N: N views from azimuth A to B degrees (both included).")] = None,
    kvp: Annotated[float, typer.Option("--kvp", help="Tube voltage (30-150 kVp) of the SpekPy spectrum.")] = 120.0,
    filtration: Annotated[float, typer.Option("--filtration", help="Total aluminium filtration (mm Al).")] = 2.5,
    energy: Annotated[float, typer.Option("--energy", help="Monochromatic beam of this energy (keV) instead of the spectrum.")] = 0.0,
    spectrum: Annotated[Path | None, typer.Option("--spectrum", help="Your own spectrum: a text file of 'energy_keV weight' lines.")] = None,
    materials: Annotated[str | None, typer.Option("--materials", help="Materials to render, e.g. bone or bone,soft_tissue (of bone, soft_tissue, lung, adipose; default all).")] = None,
    scatter: Annotated[float, typer.Option("--scatter", help="Scatter-to-primary ratio (0 = no scatter).")] = 0.0,
    scatter_sigma: Annotated[float, typer.Option("--scatter-sigma", help="Scatter kernel sigma at the detector (mm).")] = 60.0,
    grid: Annotated[bool, typer.Option("--grid", help="Anti-scatter grid (scatter x 0.2).")] = False,
    photons: Annotated[float, typer.Option("--photons", help="Quantum noise: photons per pixel of the open beam (0 = noise-free).")] = 0.0,
    electronic_noise: Annotated[float, typer.Option("--electronic-noise", help="Electronic noise sigma (photons).")] = 0.0,
    seed: Annotated[int, typer.Option("--seed", help="Noise seed (view k uses seed + k).")] = 0,
    blur: Annotated[float, typer.Option("--blur", help="Detector blur (MTF), Gaussian sigma in pixels.")] = 0.0,
    processing: Annotated[str, typer.Option("--processing", help="none (linear window) or presentation (detail boost, range compression, tone curve, 12 bit).")] = "none",
    target: Annotated[str, typer.Option("--target", help="Bone removal of soft_tissue: volume (bone -> soft tissue of its volume), mass, air.")] = "volume",
    outputs: Annotated[str, typer.Option("--outputs", help="Outputs: image, log, bone, soft_tissue, lung, lung_mask, bone_mask, field, t_bone, t_tissue.")] = "image,log,bone,soft_tissue",
    fmt: Annotated[str, typer.Option("--format", help="Comma-separated: png16, tiff (float32), nifti (stack of views), dicom (DX for presentation).")] = "png16",
    photometric: Annotated[str, typer.Option("--photometric", help="DICOM: MONOCHROME2 or MONOCHROME1 (inverted stored values).")] = "MONOCHROME2",
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1 ...")] = "cpu",
    method: Annotated[str, typer.Option("--method", help="Projector: joseph (exact rays) or shearwarp (faster on CPU, views within 45 degrees of PA/AP).")] = "joseph",
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="CPU threads for torch (default: torch's choice).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress output.")] = False,
) -> None:
    """Render DRRs of a CT: polyenergetic Beer-Lambert through the realistic simulation pipeline, fixed parameters.

    Example: cxrdecomp drr --example -o out/drr --format png16,dicom --sweep -20:20:5
    """
    cpu_setup(threads)
    from cxrdecomp.errors import ConfigError
    from cxrdecomp.io import ct as ctio
    from cxrdecomp.io import drr_out as O
    from cxrdecomp.simulate import drr as D

    # every option first, then the output folder, then the CT: nothing is written before all are valid
    if (ct is None) == (not example):
        raise ConfigError("give a CT (file or DICOM folder) or --example, not both" if ct is not None else "give a CT (file or DICOM folder) or --example")
    if example and (labels is not None or label_names is not None):
        raise ConfigError("--example brings its own label map; --labels/--label-names are for your own CT")
    if label_names is not None and labels is None:
        raise ConfigError("--label-names names the labels of --labels; give --labels LABELMAP too")
    if sweep is not None and azimuth is not None:
        raise ConfigError("give --azimuth or --sweep, not both")
    params = D.DRRParams(
        size=size, view=view, sdd_mm=sdd, air_gap_mm=air_gap, fov=fov, azimuth=azimuth or 0.0, tilt=tilt, roll=roll,
        sweep=D.parse_sweep(sweep) if sweep is not None else None, kvp=kvp, filtration_mm_al=filtration, energy_kev=energy,
        spectrum=_read_spectrum(spectrum) if spectrum is not None else None, materials=_names(materials), spr=scatter,
        scatter_sigma_mm=scatter_sigma, grid=grid, photons=photons, electronic_sigma=electronic_noise, seed=seed,
        mtf_sigma_px=blur, processing=processing, target=target, outputs=_names(outputs), device=device, method=method,
    )
    formats, photometric = O.check_formats(_names(fmt), photometric)
    O.check_out_dir(out)
    if example:
        volume = ctio.example_ct()
    else:
        volume = ctio.read_ct(ct, labels, label_names)  # type: ignore[arg-type]
    say = (lambda s: None) if quiet else (lambda s: print(f"cxrdecomp: {s}", file=sys.stderr))
    say(f"preparing {Path(str(volume.source)).name} ({'x'.join(map(str, volume.shape))} voxels) on {params.device}")
    renderer = D.DRRRenderer(volume, params)
    views = iter(renderer)
    if not quiet and len(renderer) > 1:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        progress = Progress(TextColumn("rendering"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(),
                            console=Console(stderr=True), transient=False)
        with progress:
            paths = O.write_drr(progress.track(views, total=len(renderer)), out, formats, photometric, ct=volume)
    else:
        paths = O.write_drr(views, out, formats, photometric, ct=volume)
    skipped = [o for o in params.outputs if not any(p.name.startswith(o + ".") or p.name.startswith(o + "_") for p in paths)]
    if skipped:
        say(f"note: {', '.join(skipped)} not written: {'/'.join(formats)} store(s) display-domain images only; add --format tiff or nifti")
    typer.echo(f"{len(renderer)} view(s), {len(paths) - 1} file(s) in {out}; parameters in {out / O.PARAMS_FILE}")
