"""BS-Diff quality and time against the number of sampling steps, in one run.

For each sampler configuration (default: DDPM 1000 steps — the paper's — and DDIM 50/20/10 steps) the
12 bse-jsrt validation radiographs are sampled in ONE batch with the same seed, with and without the
stage-2 enhancer (the paper's Table 2 ablation). Reported, in the display domain:

* at model size (256²) and at 1024² — the full-resolution output is made as the Decomposer makes it:
  ``soft = I − upsample(I_small − soft_small)`` (DESIGN.md "Full resolution");
* PSNR (dB), SSIM, BSR = 1 − Σ(Ŝ−S)²/Σ(I−S)² (:func:`cxrdecomp.metrics.suppression_metrics`), with the
  identity baseline (output = input) beside them;
* seconds per image of the sampler (CUDA-synchronised), speed-up and ΔPSNR against DDPM-1000 measured
  in the same run.

Usage (repo root)::

    PYTHONPATH=src python benchmarks/bsdiff_steps.py --checkpoint runs/bsdiff/stage2/model \\
        --data .gpu/bse-jsrt/val --out runs/bsdiff/steps.md

Quick CPU smoke test: ``--configs ddim:2 --limit 2``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="bsdiff", help="checkpoint folder or bundled name")
    ap.add_argument("--data", default=None, help="folder with cxr/ and soft/ (default: bse-jsrt/val)")
    ap.add_argument("--configs", default="ddpm:1000,ddim:50,ddim:20,ddim:10", help="sampler:steps,...; the first is the baseline")
    ap.add_argument("--device", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=None, help="use the first N pairs only")
    ap.add_argument("--full-size", type=int, default=1024, help="size of the full-resolution comparison")
    ap.add_argument("--no-amp", action="store_true", help="float32 sampling on CUDA (default bfloat16 autocast)")
    ap.add_argument("--out", default=None, help="write the table (Markdown) and a .json beside it")
    a = ap.parse_args(argv)

    from cxrdecomp import methods
    from cxrdecomp.data.pairs import PairedImages, default_bse_jsrt
    from cxrdecomp.io.atomic import atomic_path
    from cxrdecomp.methods.bsdiff.predict import condition
    from cxrdecomp.metrics import suppression_metrics

    if a.device is None and not torch.cuda.is_available():
        torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    dev = torch.device(a.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, cfg = methods.load(a.checkpoint)
    model = model.float().to(dev).eval()
    S = int(cfg["input_size"])
    inf = cfg.get("inference", {})
    root = Path(a.data) if a.data else default_bse_jsrt() / "val"
    ds = PairedImages(root, size=a.full_size)
    n = min(len(ds), a.limit or len(ds))
    I_full, S_full = ds.cxr[:n].to(dev), ds.soft[:n].to(dev)
    I_small = F.interpolate(I_full, size=(S, S), mode="area")
    S_small = F.interpolate(S_full, size=(S, S), mode="area")
    cond = condition(model, I_small, use_clahe=bool(inf.get("clahe", True)))
    has_enh = bool(inf.get("enhance", False))
    amp = not a.no_amp

    def full_res(soft_small):
        bone = F.interpolate(I_small - soft_small, size=I_full.shape[-2:], mode="bilinear", align_corners=False)
        return I_full - bone

    def metrics(soft_small):
        ms = suppression_metrics(soft_small, S_small, I_small)
        mf = suppression_metrics(full_res(soft_small), S_full, I_full)
        return {**{f"{k}_small": float(v.mean()) for k, v in ms.items()}, **{f"{k}_full": float(v.mean()) for k, v in mf.items()}}

    rows = [{"config": "identity (input)", "sampler": "-", "steps": 0, "enhancer": False, "s_per_image": 0.0, **metrics(I_small)}]
    # warm-up (CUDA kernels, autotuning) outside the timings
    model.sample(cond, steps=2, sampler="ddim", seed=a.seed, amp=amp, cxr=I_small)
    if has_enh:
        model.enhance(cond[:, :1], amp=amp)
    for spec in a.configs.split(","):
        sampler, steps = spec.split(":")
        steps = int(steps)
        _sync(dev)
        t0 = time.perf_counter()
        y = model.sample(cond, steps=steps, sampler=sampler, seed=a.seed, amp=amp, cxr=I_small)
        _sync(dev)
        dt = (time.perf_counter() - t0) / n
        name = f"{sampler.upper()} {model.num_train_timesteps if sampler == 'ddpm' else steps}"
        rows.append({"config": name, "sampler": sampler, "steps": model.num_train_timesteps if sampler == "ddpm" else steps,
                     "enhancer": False, "s_per_image": dt, **metrics((y + 1) / 2)})
        if has_enh:
            _sync(dev)
            t1 = time.perf_counter()
            e = model.enhance(y, amp=amp)
            _sync(dev)
            de = (time.perf_counter() - t1) / n
            rows.append({"config": name + " + enhancer", "sampler": sampler, "steps": rows[-1]["steps"], "enhancer": True,
                         "s_per_image": dt + de, **metrics((e + 1) / 2)})
        print(f"done {name}: {dt:.3f} s/image", file=sys.stderr)

    base = {r["enhancer"]: r for r in rows[1:] if r["config"].startswith(rows[1]["config"])}
    lines = [
        (f"BS-Diff quality vs sampling steps — {n} pairs of {root}, checkpoint {a.checkpoint}, device {dev}"
         f"{' (' + torch.cuda.get_device_name(dev) + ')' if dev.type == 'cuda' else ''}, bf16={amp and dev.type == 'cuda'}, seed {a.seed}"),
        "",
        f"| sampler | s/image | speed-up | PSNR {a.full_size}² | ΔPSNR | SSIM {a.full_size}² | BSR {a.full_size}² | PSNR {S}² | SSIM {S}² | BSR {S}² |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        b = base.get(r["enhancer"])
        sp = f"{b['s_per_image'] / r['s_per_image']:.1f}x" if b and r["s_per_image"] > 0 else "-"
        dp = f"{r['psnr_full'] - b['psnr_full']:+.2f}" if b and r["steps"] else "-"
        lines.append(
            f"| {r['config']} | {r['s_per_image']:.3f} | {sp} | {r['psnr_full']:.2f} | {dp} | {r['ssim_full']:.4f} | {r['bsr_full']:.3f} "
            f"| {r['psnr_small']:.2f} | {r['ssim_small']:.4f} | {r['bsr_small']:.3f} |"
        )
    lines += ["", "Speed-up and ΔPSNR are relative to the first configuration with the same enhancer setting, measured in this run.",
              "Identity = the radiograph returned unchanged (BSR 0)."]
    table = "\n".join(lines)
    print(table)
    if a.out:
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            Path(tmp).write_text(table + "\n")
        with atomic_path(out.with_suffix(".json")) as tmp:
            Path(tmp).write_text(json.dumps({"rows": rows, "checkpoint": str(a.checkpoint), "device": str(dev), "n": n}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    with torch.no_grad():
        sys.exit(main())
