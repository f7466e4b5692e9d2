"""Wall time of rendering one 512² DRR / bone / soft-tissue sample of the example CT.

    PYTHONPATH=src python benchmarks/simulate_speed.py [--size 512] [--devices cpu cuda]

Prints seconds per sample on each device and the ratio to the first device (the baseline, measured in
the same run). Not a test.
"""

from __future__ import annotations

import argparse
import time

import torch

from cxrdecomp.io.ct import example_ct
from cxrdecomp.simulate.render import CTRenderer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    ct = example_ct()
    base = None
    for dev in a.devices:
        r = CTRenderer(ct, size=a.size, device=dev, soft_fill_hu=40.0)
        r.render(rot_x=3.0)  # warm-up
        if dev.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        for i in range(a.repeats):
            s = r.render(rot_x=5.0 - i, rot_y=-4.0, rot_z=8.0, flip=bool(i % 2), bone_density=1.1)
            s.stacked()  # includes the copy back to the host
        dt = (time.perf_counter() - t) / a.repeats
        base = base or dt
        print(f"{dev:6s} {a.size}²: {dt:.3f} s/sample  (ratio to {a.devices[0]}: {dt / base:.3f})")
        del r


if __name__ == "__main__":
    main()
