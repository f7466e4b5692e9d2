"""Per-method inference benchmark: load time, latency (batch 1 and batch N), throughput, peak memory.

For every bundled checkpoint (``cxrdecomp.checkpoint.available_pretrained()``) — and, for registry
methods that have none yet, a checkpoint of the default (untrained) network written to a temporary
folder, which costs the same to load and run — on CPU and, when present, CUDA:

* load: ``Decomposer.from_pretrained(folder)`` wall time (median of ``--reps``);
* latency b1: one full-resolution radiograph (``--size``², display domain) through ``Decomposer``,
  median of ``--reps`` after one warm-up call;
* latency bN / throughput: a batch of ``--batch`` radiographs, time per radiograph and radiographs/s;
* peak memory: CPU — peak resident set of a fresh worker process (``ru_maxrss``), and its increase over
  the worker after ``import torch, cxrdecomp``; CUDA — ``torch.cuda.max_memory_allocated``.

Each measurement runs in its own worker process so peaks do not leak between methods. Baselines measured
in the same run: the "resize floor" row (the Decomposer pipeline with the network replaced by an identity,
i.e. resizing and composing only) and the reference method ``bone_unet``: every figure is printed with its
ratio to ``bone_unet``'s.

    python benchmarks/methods.py                 # all methods, CPU (+ CUDA), 2048² radiographs
    python benchmarks/methods.py --quick         # 512², batch 2, 1 rep (smoke test)
    python benchmarks/methods.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REFERENCE = "bone_unet"
FLOOR = "resize floor"


def _machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    s = f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}, Python {platform.python_version()}, torch {torch.__version__}"
    if torch.cuda.is_available():
        s += f", CUDA {torch.version.cuda} on {torch.cuda.get_device_name(0)}"
    return s


def _targets(tmp: Path) -> list[tuple[str, str]]:
    """``(label, checkpoint folder)`` for every bundled checkpoint and every registry method without one."""
    from cxrdecomp import checkpoint
    from cxrdecomp import methods as registry

    out, have = [], set()
    for name in checkpoint.available_pretrained():
        cfg = checkpoint.load_config(name)
        out.append((name, str(checkpoint.resolve(name))))
        have.add(cfg["method"])
    for method in registry.METHODS:
        if method in have:
            continue
        net = registry.build_model(method)
        folder = checkpoint.save(tmp / method, net, {"method": method, "model": {}, "input_size": 512},
                                 "untrained network for benchmarking only\n")
        out.append((f"{method} (untrained)", str(folder)))
    return out


def _rss_mb() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / 1024.0 if sys.platform != "darwin" else r / 2**20


def worker(folder: str, device: str, size: int, batch: int, reps: int, threads: int) -> dict:
    """Measure one checkpoint (``folder``; ``"floor"`` for the resize floor) on one device."""
    import torch

    torch.set_num_threads(threads)
    from cxrdecomp import decomposer

    rss0 = _rss_mb()
    cuda = device == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    loads = []
    for _ in range(max(1, reps)):
        t = time.perf_counter()
        if folder == "floor":
            dec = decomposer.Decomposer(torch.nn.Identity(), {"method": REFERENCE, "input_size": 512}, device=device)
            dec._predict = lambda model, x, options: {"bone": torch.zeros_like(x)}
        else:
            dec = decomposer.Decomposer.from_pretrained(folder, device=device)
        sync()
        loads.append(time.perf_counter() - t)
    g = torch.Generator().manual_seed(0)
    one = torch.rand(size, size, generator=g)
    many = torch.rand(batch, 1, size, size, generator=g)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    dec(one)  # warm-up
    sync()
    lat1 = []
    for _ in range(max(1, reps)):
        t = time.perf_counter()
        dec(one)
        sync()
        lat1.append(time.perf_counter() - t)
    dec(many)
    sync()
    latn = []
    for _ in range(max(1, reps)):
        t = time.perf_counter()
        dec(many)
        sync()
        latn.append((time.perf_counter() - t) / batch)
    r = {
        "load_s": statistics.median(loads),
        "latency_b1_s": statistics.median(lat1),
        "latency_bN_s": statistics.median(latn),
        "throughput_bN_per_s": 1.0 / statistics.median(latn),
        "method": dec.method,
        "model_size": dec.size,
        "params": sum(p.numel() for p in dec.model.parameters()),
    }
    if cuda:
        r["peak_mem_mb"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = _rss_mb()
        r["peak_mem_mb"] = peak
        r["peak_mem_over_import_mb"] = peak - rss0
    return r


def _run_worker(folder: str, device: str, a) -> dict:
    cmd = [sys.executable, __file__, "--worker", folder, "--device", device, "--size", str(a.size),
           "--batch", str(a.batch), "--reps", str(a.reps), "--threads", str(a.threads)]
    p = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": _pythonpath()})
    if p.returncode != 0:
        return {"error": (p.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def _pythonpath() -> str:
    src = str(Path(__file__).resolve().parents[1] / "src")
    return os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)


FIELDS = [("load_s", "load s", "{:.3f}"), ("latency_b1_s", "b1 s/img", "{:.3f}"), ("latency_bN_s", "bN s/img", "{:.3f}"),
          ("throughput_bN_per_s", "img/s", "{:.2f}"), ("peak_mem_mb", "peak MB", "{:.0f}")]


def _table(results: dict, device: str) -> str:
    rows = results.get(device, {})
    ref = next((v for k, v in rows.items() if k != FLOOR and v.get("method") == REFERENCE), None)
    head = f"{'method':<28}" + "".join(f"{h:>22}" for _, h, _ in FIELDS)
    lines = [f"[{device}] ratio = value / {REFERENCE}'s (same run)", head]
    for name, v in rows.items():
        if "error" in v:
            lines.append(f"{name:<28}  error: {v['error']}")
            continue
        cells = []
        for k, _, fmt in FIELDS:
            x = v.get(k)
            rr = f" ({x / ref[k]:.2f}x)" if ref and ref.get(k) else ""
            cells.append(f"{fmt.format(x) + rr:>22}")
        lines.append(f"{name:<28}" + "".join(cells))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=2048, help="radiograph side (full resolution), default 2048")
    ap.add_argument("--batch", type=int, default=4, help="batch size N, default 4")
    ap.add_argument("--reps", type=int, default=3, help="repetitions (median), default 3")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("CXRDECOMP_BENCH_THREADS", "1")),
                    help="CPU threads (torch.set_num_threads), default 1 or $CXRDECOMP_BENCH_THREADS")
    ap.add_argument("--device", default=None, help="cpu, cuda, or both when omitted (cuda only if present)")
    ap.add_argument("--quick", action="store_true", help="512² radiographs, batch 2, 1 repetition")
    ap.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.quick:
        a.size, a.batch, a.reps = 512, 2, 1
    if a.worker:
        print(json.dumps(worker(a.worker, a.device or "cpu", a.size, a.batch, a.reps, a.threads)))
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    import torch

    devices = [a.device] if a.device else (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    print(f"# methods benchmark\nmachine: {_machine()}")
    print(f"radiograph {a.size}x{a.size}, batch N = {a.batch}, {a.reps} rep(s) (median), {a.threads} CPU thread(s)")
    results: dict = {"machine": _machine(), "settings": vars(a) | {"json": str(a.json)}}
    with tempfile.TemporaryDirectory() as tmp:
        targets = [(FLOOR, "floor")] + _targets(Path(tmp))
        for dev in devices:
            results[dev] = {}
            for name, folder in targets:
                results[dev][name] = _run_worker(folder, dev, a)
            print(_table(results, dev))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(results, indent=2) + "\n")
    return 1 if any("error" in v for d in devices for v in results[d].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
