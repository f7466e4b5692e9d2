"""Which way back to full resolution loses less? (DESIGN.md "Full resolution"; Decomposer ``upsample``.)

An *oracle* model is simulated on the real BSE-JSRT validation pairs (1024², display domain): at model
size S it predicts the exact bone image ``area(I) − area(Soft)``. The two ways back to 1024² are then
compared with the true soft-tissue image, so only the resampling loss is measured:

* ``change`` (default): ``soft = I − w_s · up(bone_S)``  — the input's fine detail is kept;
* ``soft``: ``soft = up(I_S − bone_S)``               — the model-size soft-tissue image upsampled.

Printed: RMSE (8-bit grey levels), PSNR and BSR (1 − Σ(Ŝ−S)²/Σ(I−S)²; identity = 0, perfect = 1),
with the identity baseline (returning I) measured in the same run.

Usage: ``python benchmarks/full_resolution.py [--root ../shared/data/bse-jsrt/val] [--sizes 256 512]``
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
import torch.nn.functional as F


def main() -> None:
    from cxrdecomp.data.pairs import default_bse_jsrt, list_pairs, read_gray01

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", default=None, help="folder with cxr/ and soft/ (default: bse-jsrt/val)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    args = ap.parse_args()
    torch.set_num_threads(1)
    root = args.root or default_bse_jsrt() / "val"
    pairs = list_pairs(root)
    imgs = [(torch.from_numpy(read_gray01(c))[None, None], torch.from_numpy(read_gray01(s))[None, None]) for c, s in pairs]
    print(f"{len(imgs)} pairs from {root}, {imgs[0][0].shape[-2]}x{imgs[0][0].shape[-1]} px")

    def scores(est: list[torch.Tensor]) -> tuple[float, float, float]:
        se = sum(float(((e - s) ** 2).sum()) for e, (_, s) in zip(est, imgs))
        base = sum(float(((i - s) ** 2).sum()) for i, s in imgs)
        n = sum(s.numel() for _, s in imgs)
        rmse = math.sqrt(se / n)
        return rmse * 255, 20 * math.log10(1 / max(rmse, 1e-12)), 1 - se / base

    r = scores([i for i, _ in imgs])
    print(f"{'identity':<22} RMSE {r[0]:6.3f}  PSNR {r[1]:6.2f} dB  BSR {r[2]:6.3f}")
    for size in args.sizes:
        for mode in ("change", "soft"):
            est = []
            for i, s in imgs:
                h, w = i.shape[-2:]
                i_s = F.interpolate(i, size=(size, size), mode="area")
                bone_s = i_s - F.interpolate(s, size=(size, size), mode="area")  # oracle prediction
                up = lambda t: F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)  # noqa: E731
                est.append(i - up(bone_s) if mode == "change" else up(i_s - bone_s))
            r = scores(est)
            print(f"oracle@{size:<4} {mode:<10} RMSE {r[0]:6.3f}  PSNR {r[1]:6.2f} dB  BSR {r[2]:6.3f}")


if __name__ == "__main__":
    main()
