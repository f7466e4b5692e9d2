"""Figure of the lung-structure method on the real example radiograph (for docs/lung.md).

Usage (from the repository root; the default is the bundled checkpoint ``lung``, or give the folder
exported by ``cxrdecomp train lung --stage extract --seg-checkpoint runs/seg/model ... -o runs/ext``)::

    PYTHONPATH=src python docs/scripts/lung_figure.py runs/ext/model docs/img/lung_rg1.png

Panels: input (RG1_UNCI.dcm, display domain), lung probability, lung X-ray, enhanced w = 1, w = 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pydicom
import torch
import torch.nn.functional as F
from PIL import Image

from cxrdecomp.decomposer import Decomposer
from cxrdecomp.io.examples import example_file


def main(ckpt: str = "lung", out: str = "docs/img/lung_rg1.png", height: int = 512) -> None:
    ds = pydicom.dcmread(example_file("RG1_UNCI.dcm"))
    a = ds.pixel_array.astype(np.float32)
    a = (a - a.min()) / (a.max() - a.min())
    if ds.PhotometricInterpretation == "MONOCHROME1":
        a = 1.0 - a
    o = Decomposer.from_pretrained(ckpt)(a)
    panels = [torch.from_numpy(a), o.extra["lung_mask"], o.extra["lung"], o.enhanced, o.extra.get("enhanced_w2", o.enhanced)]
    w = int(round(height * a.shape[1] / a.shape[0]))
    panels = [F.interpolate(p[None, None].float(), size=(height, w), mode="area")[0, 0].clamp(0, 1).numpy() for p in panels]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.concatenate(panels, 1) * 255 + 0.5).astype(np.uint8)).save(out)
    print(out)


if __name__ == "__main__":
    main(*sys.argv[1:])
