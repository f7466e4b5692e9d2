"""Online rendering speed: realistic samples per second at 256² (all targets) vs the renderers they replaced.

    PYTHONPATH=src python benchmarks/simulate_speed.py [--size 256] [--n 64] [--baseline-commit 9915a64]

Runs, in the same session, on the example CT:

* **new**: :class:`cxrdecomp.data.online.SimulationDataModule` (anatomy variation, cone beam, polyenergetic
  four-material physics, scatter, blur, noise, processing, every target), through its training DataLoader with
  0 workers (2 torch threads) and with 2 workers (1 thread each);
* **old** (from ``--baseline-commit``, checked out into a temporary git worktree and run in a subprocess): the
  parallel-beam ``CTRenderer`` that produced every bone training pair before (line integrals of one CT, small
  rotations) and the earlier ``OnlineDRRDataset`` (cone beam, three materials, noise; no anatomy variation, no
  scatter, no processing).

Prints samples/s and the ratio of each to the old parallel-beam renderer. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

OLD = r"""
import json, sys, time, torch
torch.set_num_threads(2)
from cxrdecomp.io.ct import example_ct
from cxrdecomp.simulate.render import CTRenderer
from cxrdecomp.data.online import OnlineDRRDataset
size, n = int(sys.argv[1]), int(sys.argv[2])
ct = example_ct()
r = CTRenderer(ct, size=size)
r.render(rot_x=1.0)
t = time.perf_counter()
for i in range(n):
    r.render(rot_x=(i % 7) - 3.0, rot_y=2.0, rot_z=-1.0, flip=bool(i % 2), bone_density=1.1).stacked()
parallel = n / (time.perf_counter() - t)
ds = OnlineDRRDataset([ct], size=size, length=n, device="cpu")
ds[0]
t = time.perf_counter()
for i in range(n):
    ds[i]
online = n / (time.perf_counter() - t)
print(json.dumps({"old parallel-beam CTRenderer": parallel, "old OnlineDRRDataset (cone beam, 3 materials)": online}))
"""


def run_old(commit: str, size: int, n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        wt = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(wt), commit], check=True, capture_output=True)
        try:
            env = {**os.environ, "PYTHONPATH": str(wt / "src")}
            n_old = min(n, 24)  # the parallel-beam renderer takes ~2 s per sample
            out = subprocess.run([sys.executable, "-c", OLD, str(size), str(n_old)], env=env, capture_output=True, text=True, check=True)
            return json.loads(out.stdout.strip().splitlines()[-1])
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(wt)], capture_output=True)


def run_new(size: int, n: int, workers: int) -> float:
    import torch

    from cxrdecomp.data.online import SimulationDataModule

    torch.set_num_threads(2 if workers == 0 else 1)
    keys = ("image", "soft_tissue", "bone", "lung", "lung_mask", "bone_mask", "nodule_mask", "t_bone", "t_tissue")
    dm = SimulationDataModule(size=size, batch_size=8, num_workers=workers, train_length=n + 8, keys=keys)
    dm.setup()
    it = iter(dm.train_dataloader())
    next(it)  # start-up (workers, first anatomy, spectra)
    t = time.perf_counter()
    count = sum(b["image"].shape[0] for b in it)
    rate = count / (time.perf_counter() - t)
    torch.set_num_threads(2)
    return rate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--baseline-commit", default="9915a64")
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    rates = run_old(a.baseline_commit, a.size, a.n)
    for w in (0, 2):
        rates[f"new SimulationDataModule, {w} workers (all targets)"] = run_new(a.size, a.n, w)
    base = rates["old parallel-beam CTRenderer"]
    print(f"{a.size}² samples per second, example CT, {os.cpu_count()} CPU cores")
    for k, v in rates.items():
        print(f"  {k:58s} {v:7.1f}/s   ratio to the old parallel-beam renderer {v / base:5.2f}")


if __name__ == "__main__":
    main()
