"""How real do the simulated training images look? Three measures, before (old renderer) and after (pipeline).

    PYTHONPATH=src python scripts/realism.py --real ../shared/data/bse-jsrt/train/cxr [--n 64] [--json out/realism.json]

Sets, all at 256² in the display domain:

* **real**: ``--n`` radiographs of ``--real`` (bse-jsrt/train: real PA chest films; never the validation sets);
* **after**: ``--n`` training inputs of the realistic pipeline (:class:`cxrdecomp.simulate.pipeline.Simulator`,
  example CT, training stream);
* **before**: ``--n`` training inputs as the bone U-Net saw them before this pipeline (``--baseline-commit``, in a
  temporary git worktree): the parallel-beam ``CTRenderer`` pairs through ``SimulatedPairs`` with augmentation.

Measures (each: real vs set):

1. ``w1_histogram``: Wasserstein-1 distance between the pooled pixel-value distributions (display units; 0 = same).
2. ``spectrum_rms``: RMS difference (in decades) of the mean radially averaged power spectra of the standardised
   images (texture and sharpness; 0 = same).
3. ``classifier_accuracy``: 5-fold cross-validated accuracy of a small CNN (64² input) trained to tell the set from
   the real images (0.5 = indistinguishable, 1.0 = always told apart), mean ± sd over folds.

Not the paper's FID (that needs InceptionV3 weights from a hub).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
S = 256

OLD = r"""
import sys, numpy as np, torch
torch.manual_seed(0)
from cxrdecomp.simulate.generate import simulate
from cxrdecomp.io.ct import example_ct
from cxrdecomp.data.simulated import SimulatedPairs
out, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
simulate([example_ct], out, n_per_ct=n, size=size, previews=False, progress=False)
ds = SimulatedPairs(out, size=size, augment=True)
np.save(out + "/x.npy", np.stack([ds[i]["x"][0].numpy() for i in range(len(ds))]))
"""


def old_images(commit: str, n: int) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        wt = Path(tmp) / "old"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(wt), commit], check=True, capture_output=True)
        try:
            env = {**os.environ, "PYTHONPATH": str(wt / "src")}
            subprocess.run([sys.executable, "-c", OLD, str(Path(tmp) / "sim"), str(n), str(S)], env=env, check=True)
            return np.load(Path(tmp) / "sim" / "x.npy")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(wt)], capture_output=True)


def new_images(n: int) -> np.ndarray:
    from cxrdecomp.io.ct import example_ct
    from cxrdecomp.simulate.pipeline import Simulator

    sim = Simulator(example_ct(), S, view_reuse=1, anatomy_reuse=8)
    return np.stack([sim.sample(i * 5)["image"][0].numpy() for i in range(n)])  # spread over anatomies and views


def real_images(folder: Path, n: int) -> np.ndarray:
    from PIL import Image

    files = sorted(folder.glob("*.png"))[:n]
    if len(files) < n:
        raise SystemExit(f"{folder} holds {len(files)} PNG radiographs, need {n}")
    out = []
    for f in files:
        a = torch.from_numpy(np.asarray(Image.open(f).convert("L"), dtype=np.float32) / 255)
        out.append(F.interpolate(a[None, None], size=(S, S), mode="area")[0, 0].numpy())
    return np.stack(out)


def w1(a: np.ndarray, b: np.ndarray) -> float:
    qs = np.linspace(0, 1, 1001)
    return float(np.abs(np.quantile(a.ravel(), qs) - np.quantile(b.ravel(), qs)).mean())


def radial_spectrum(x: np.ndarray) -> np.ndarray:
    z = (x - x.mean(axis=(1, 2), keepdims=True)) / (x.std(axis=(1, 2), keepdims=True) + 1e-6)
    p = np.abs(np.fft.fftshift(np.fft.fft2(z), axes=(1, 2))) ** 2
    yy, xx = np.indices((S, S)) - S // 2
    r = np.hypot(yy, xx).astype(int)
    k = r < S // 2
    spec = np.stack([np.bincount(r[k], weights=im[k]) / np.bincount(r[k]) for im in p])
    return np.log10(spec.mean(0)[1:] + 1e-12)


def classifier_accuracy(real: np.ndarray, fake: np.ndarray, folds: int = 5, epochs: int = 30, seed: int = 0) -> tuple[float, float]:
    torch.manual_seed(seed)
    x = torch.from_numpy(np.concatenate([real, fake]))[:, None].float()
    x = F.interpolate(x, size=(64, 64), mode="area")
    y = torch.cat([torch.zeros(len(real)), torch.ones(len(fake))])
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))
    accs = []
    for f in range(folds):
        test = perm[f::folds]
        train = torch.tensor([i for i in perm.tolist() if i not in set(test.tolist())])
        net = torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
            torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
            torch.nn.Linear(32, 1))
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        for _ in range(epochs):
            for b in train[torch.randperm(len(train))].split(16):
                xb = x[b].flip(-1) if torch.rand(()) < 0.5 else x[b]
                loss = F.binary_cross_entropy_with_logits(net(xb)[:, 0], y[b])
                opt.zero_grad()
                loss.backward()
                opt.step()
        with torch.no_grad():
            accs.append(float(((net(x[test])[:, 0] > 0).float() == y[test]).float().mean()))
    return float(np.mean(accs)), float(np.std(accs))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--real", type=Path, default=ROOT.parent / "shared/data/bse-jsrt/train/cxr")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--baseline-commit", default="9915a64")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    torch.set_num_threads(2)
    real = real_images(a.real, a.n)
    sets = {"before (parallel-beam DRR, linear window + augmentation)": old_images(a.baseline_commit, a.n),
            "after (realistic pipeline)": new_images(a.n)}
    rs = radial_spectrum(real)
    res = {}
    for name, x in sets.items():
        acc, sd = classifier_accuracy(real, x)
        res[name] = {"w1_histogram": w1(real, x), "spectrum_rms": float(np.sqrt(((radial_spectrum(x) - rs) ** 2).mean())),
                     "classifier_accuracy": acc, "classifier_sd": sd}
    res["real vs real (two halves)"] = {"w1_histogram": w1(real[::2], real[1::2]),
                                        "spectrum_rms": float(np.sqrt(((radial_spectrum(real[::2]) - radial_spectrum(real[1::2])) ** 2).mean())),
                                        "classifier_accuracy": float("nan"), "classifier_sd": float("nan")}
    print(f"realism vs {a.n} real radiographs of {a.real} (256²)")
    print(f"  {'set':58s} {'W1 hist':>8s} {'spectrum':>9s} {'classifier acc':>15s}")
    for k, v in res.items():
        print(f"  {k:58s} {v['w1_histogram']:8.4f} {v['spectrum_rms']:9.3f} {v['classifier_accuracy']:8.3f} ± {v['classifier_sd']:.3f}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
