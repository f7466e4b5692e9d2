"""Lung-method models on the same held-out anatomies of the realistic simulation (the lung paper's Table 1 metrics).

    python scripts/lung_check.py lung runs/lung_ext/model     # bundled vs a new checkpoint

For each model: lung X-ray MAE / PSNR / SSIM (prediction clamped to [0, 1] vs the pipeline's lung X-ray, lung area
normalised with the ground-truth mask as in training) and segmentation Dice at thresholds 0.95 (paper) and 0.5, on
the first N samples of the validation anatomy bank of the example CT.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="bundled names or checkpoint folders")
    ap.add_argument("-n", type=int, default=32, help="held-out samples")
    ap.add_argument("--size", type=int, default=256)
    a = ap.parse_args(argv)

    import torch

    from cxrdecomp import methods, metrics
    from cxrdecomp.data.online import SimulationDataModule
    from cxrdecomp.preprocess import he_clahe, lung_normalize

    torch.set_num_threads(min(2, torch.get_num_threads()))
    dm = SimulationDataModule(None, size=a.size, batch_size=8, train_length=8, val_length=a.n,
                              keys=("image", "lung", "lung_mask"), rename={"image": "input"})
    dm.setup("fit")
    items = [dm.val_set[i] for i in range(a.n)]
    b = {k: torch.stack([it[k] for it in items]) for k in ("input", "lung", "lung_mask")}
    x, y, truth = he_clahe(b["input"]), b["lung"], b["lung_mask"] > 0.5
    print(f"{a.n} held-out anatomies of the example CT at {a.size}² (realistic simulation, validation bank)")
    print(f"{'model':<32} {'MAE':>7} {'PSNR dB':>8} {'SSIM':>6} {'Dice@0.95':>10} {'Dice@0.5':>9}")
    for name in a.models:
        net, _ = methods.load(name)
        with torch.no_grad():
            prob = net.segment(x)
            pred = net.extract_lung(lung_normalize(x, b["lung_mask"])).clamp(0, 1)
        m = metrics.image_metrics(pred, y, data_range=1.0, with_ms_ssim=False)
        d95 = metrics.dice(prob > 0.95, truth).float().mean()
        d5 = metrics.dice(prob > 0.5, truth).float().mean()
        print(f"{name:<32} {float(metrics.mae(pred, y).mean()):7.4f} {float(m['psnr'].mean()):8.2f} {float(m['ssim'].mean()):6.3f} "
              f"{float(d95):10.3f} {float(d5):9.3f}")
    print("paper (Table 1, their CTs, 512²): MAE 0.082, PSNR 24.98, SSIM 0.80; Dice 0.953")
    return 0


if __name__ == "__main__":
    sys.exit(main())
