"""Benchmark: wall time and peak memory of ``decompose`` on the real radiograph RG1_UNCI.dcm (CPU).

Goal (issue 2, §7): ≤ 1.0 s per radiograph after model load and peak RSS ≤ 2 GB on a 2-core machine.

Stages timed, each ``--repeats`` times, interleaved, best and median reported:

* ``read+resize`` (baseline): ``read_radiograph`` + area resize to the model size;
* ``forward``: the network alone on one model-size image (second baseline);
* ``decompose``: ``Decomposer(image)`` at full resolution (resize, network, upsample, weighted sums);
* ``end-to-end``: read + decompose + write every output (16-bit PNGs, DICOMs, preview, JSON),
  i.e. what ``cxrdecomp decompose`` spends per radiograph.

Ratios against the baselines measured in the same run are printed, since absolute times depend on
the machine and on its load (the 1-minute load average is printed too).

Usage (from the repository root)::

    python benchmarks/decompose.py --model tiny       # base 4, depth 2, 64²  (random weights)
    python benchmarks/decompose.py --model full       # base 32, depth 4, 512² (the paper's size, random weights)
    python benchmarks/decompose.py --model bone       # a bundled or saved checkpoint
    python benchmarks/decompose.py --model bone --workers 0 1 2   # archive mode: images/s per number of reader workers
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import tempfile
import time
import warnings
from pathlib import Path

# as the CLI does: idle OpenMP threads sleep instead of spinning (much faster on a shared, loaded CPU)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

MODELS = {"tiny": (4, 2, 64), "full": (32, 4, 512)}


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="full", help="tiny | full | a checkpoint name or folder")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    ap.add_argument("--no-channels-last", action="store_true")
    ap.add_argument("--bf16", action="store_true", help="bfloat16 autocast for the network (CPUs with AVX512-BF16/AMX)")
    ap.add_argument("--workers", type=int, nargs="*", default=None,
                    help="archive mode: images/s of decompose_files over --archive copies of the radiograph for each number "
                         "of reader workers given (e.g. --workers 0 1 2), ratio against the first")
    ap.add_argument("--archive", type=int, default=16, help="archive mode: number of copies")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")

    from cxrdecomp import checkpoint
    from cxrdecomp.batch import write_case
    from cxrdecomp.decomposer import Decomposer
    from cxrdecomp.io.examples import example_file
    from cxrdecomp.io.radiograph import read_radiograph
    from cxrdecomp.methods.bone_unet.network import build as build_bone_unet

    src = example_file("RG1_UNCI.dcm")
    tmp = Path(tempfile.mkdtemp(prefix="cxrdecomp-bench-"))
    if args.model in MODELS:
        base, depth, size = MODELS[args.model]
        torch.manual_seed(0)
        ckpt = checkpoint.save(tmp / "ckpt", build_bone_unet(base=base, depth=depth), {"method": "bone_unet", "model": {"base": base, "depth": depth}, "input_size": size}, "benchmark")
    else:
        ckpt = args.model
    rss0 = rss_mb()
    dec = Decomposer.from_pretrained(ckpt, device="cpu", channels_last=not args.no_channels_last, precision="bf16" if args.bf16 else "fp32")
    n_params = sum(p.numel() for p in dec.model.parameters())
    rss_model = rss_mb()
    S = dec.size

    def read_resize():
        rg = read_radiograph(src)
        F.interpolate(torch.from_numpy(rg.image)[None, None], size=(S, S), mode="area")
        return rg

    x = torch.rand(1, 1, S, S)

    def forward():
        dec.predict_model_size(x)

    rg = read_resize()

    def decompose():
        return dec(rg.image)

    out = tmp / "out"

    def end_to_end():
        r = read_radiograph(src)
        write_case(out / "RG1_UNCI", r, dec(r.image), dec.method, dict(dec.options))

    if args.workers:
        import shutil

        from cxrdecomp.batch import decompose_files

        arch = tmp / "archive"
        arch.mkdir()
        for i in range(args.archive):
            shutil.copy(src, arch / f"case{i:03d}.dcm")
        decompose_files([arch / "case000.dcm"], tmp / "warm", dec, progress=False)  # warm-up
        rates = {}
        for w in args.workers:
            t0 = time.perf_counter()
            decompose_files([arch], tmp / f"w{w}", dec, progress=False, resume=False, num_workers=w)
            rates[w] = args.archive / (time.perf_counter() - t0)
        print(f"archive of {args.archive} x {src.name}, model {args.model}, threads {args.threads}, "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        for w, r in rates.items():
            print(f"reader workers {w}: {r:.2f} images/s  (x{r / rates[args.workers[0]]:.2f} vs {args.workers[0]} workers)")
        return

    stages = {"read+resize": read_resize, "forward": forward, "decompose": decompose, "end-to-end": end_to_end}
    for fn in stages.values():  # warm-up (oneDNN primitive creation, imports)
        fn()
    rss_warm = rss_mb()
    times: dict[str, list[float]] = {k: [] for k in stages}
    cpu: dict[str, list[float]] = {k: [] for k in stages}
    for _ in range(args.repeats):
        for k, fn in stages.items():
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)

    print(f"model {args.model}: {n_params / 1e6:.2f} M parameters, input {S}x{S}, threads {args.threads}, "
          f"channels_last {not args.no_channels_last}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"radiograph {src.name}: {rg.image.shape[0]}x{rg.image.shape[1]} px")
    print(f"{'stage':<12} {'best s':>8} {'median s':>9} {'CPU s':>7}   (CPU s: process CPU time, all threads; less load-dependent)")
    for k, ts in times.items():
        print(f"{k:<12} {min(ts):8.3f} {statistics.median(ts):9.3f} {min(cpu[k]):7.3f}")
    best = {k: min(v) for k, v in times.items()}
    print(f"ratio decompose / forward      = {best['decompose'] / best['forward']:.2f}")
    print(f"ratio decompose / read+resize  = {best['decompose'] / best['read+resize']:.2f}")
    print(f"ratio end-to-end / read+resize = {best['end-to-end'] / best['read+resize']:.2f}")
    print(f"RSS MB: start {rss0:.0f}, model loaded {rss_model:.0f}, after warm-up {rss_warm:.0f}, "
          f"peak {peak_rss_mb():.0f} (goal <= 2048)")
    goal = best["end-to-end"]
    print(f"goal <= 1.0 s per radiograph after model load: end-to-end best {goal:.2f} s -> {'met' if goal <= 1.0 else 'NOT met'}"
          f" (end-to-end CPU time {min(cpu['end-to-end']):.2f} s over {args.threads} thread(s))")


if __name__ == "__main__":
    main()
