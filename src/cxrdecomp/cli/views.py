"""``cxrdecomp views``: novel views of one radiograph through XraySyn's CT prior (Peng et al., AAAI 2021)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from cxrdecomp.cli.app import app
from cxrdecomp.cli.common import cpu_setup


def render_views(radiograph: Path, out: Path, checkpoint: str, angles: tuple[float, ...], elevation: float = 0.0) -> Path:
    """Write the views of ``radiograph`` at azimuths ``angles`` (degrees) to ``out`` (replaced whole, atomically):
    ``view_KK.png`` (display domain, 8 bit), ``bone_KK.png`` (bone thickness, one scale for all views), ``views.gif``
    (the sweep, animated) and ``views.json`` (angles, checkpoint). Returns ``out``.

    Raises:
        ConfigError: the checkpoint is not an XraySyn model. InputError: an unreadable radiograph.
    """
    import json

    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from cxrdecomp import methods
    from cxrdecomp.errors import ConfigError
    from cxrdecomp.io.atomic import atomic_folder
    from cxrdecomp.io.radiograph import read_radiograph
    from cxrdecomp.methods.xraysyn.predict import views

    rg = read_radiograph(radiograph)  # bad input fails here, before anything is written
    model, cfg = methods.load(checkpoint)
    if cfg["method"] != "xraysyn":
        raise ConfigError(f"{checkpoint} is a {cfg['method']!r} model; views need an XraySyn checkpoint (cxrdecomp train xraysyn)")
    size = int(cfg["input_size"])
    x = F.interpolate(torch.from_numpy(rg.image)[None, None].float(), size=(size, size), mode="area").clamp(0, 1)
    ang = torch.tensor([[a, elevation] for a in angles], dtype=torch.float32)
    v = views(model, x, ang)
    img, bone = v["image"][0].numpy(), v["bone"][0].numpy()
    bone = bone / max(float(np.quantile(bone, 0.999)), 1e-6)
    show = 512  # written at a viewable size (nearest-neighbour free: bilinear)
    frames = []
    with atomic_folder(out) as tmp:
        for k in range(len(angles)):
            a = Image.fromarray((img[k].clip(0, 1) * 255).round().astype(np.uint8)).resize((show, show), Image.BILINEAR)
            a.save(Path(tmp) / f"view_{k:02d}.png")
            Image.fromarray((bone[k].clip(0, 1) * 255).round().astype(np.uint8)).resize((show, show), Image.BILINEAR).save(Path(tmp) / f"bone_{k:02d}.png")
            frames.append(a)
        frames[0].save(Path(tmp) / "views.gif", save_all=True, append_images=frames[1:] + frames[-2:0:-1], duration=80, loop=0)
        (Path(tmp) / "views.json").write_text(json.dumps({
            "radiograph": str(radiograph), "checkpoint": str(checkpoint), "model_size": size,
            "views": [{"file": f"view_{k:02d}.png", "bone": f"bone_{k:02d}.png", "azimuth_deg": a, "elevation_deg": elevation}
                      for k, a in enumerate(angles)],
        }, indent=1))
    return out


@app.command("views")
def views_cmd(
    radiograph: Annotated[Path, typer.Argument(help="A frontal chest radiograph (DICOM, PNG, JPEG, TIFF).")],
    out: Annotated[Path, typer.Option("-o", "--out", help="Output folder: view_KK.png, bone_KK.png, views.gif, views.json.")],
    angles: Annotated[str, typer.Option("--angles", help="START:STOP:N azimuths in degrees, both included (paper: -9:9:21).")] = "-9:9:21",
    elevation: Annotated[float, typer.Option("--elevation", help="Elevation of every view (degrees).")] = 0.0,
    checkpoint: Annotated[Optional[str], typer.Option("--checkpoint", help="XraySyn checkpoint folder (cxrdecomp train xraysyn) or bundled name.")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", help="CPU threads.")] = None,
) -> None:
    """Novel views of a radiograph from its XraySyn CT prior (3DPN), with the bone map of each view.

    Example: cxrdecomp views chest.dcm -o out/views --angles -9:9:21
    """
    cpu_setup(threads)
    from cxrdecomp import methods
    from cxrdecomp.simulate.drr import parse_sweep

    ang = parse_sweep(angles)
    ckpt = checkpoint if checkpoint is not None else methods.bundled_checkpoint("xraysyn")
    render_views(radiograph, out, ckpt, ang, elevation)
    typer.echo(f"{len(ang)} views of {radiograph.name} written to {out} (views.gif, view_KK.png, bone_KK.png)")
