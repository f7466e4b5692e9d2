"""DRR benchmark: cxrdecomp's projector vs DiffDRR 0.6.1 (same CT, same geometry, same run).

Prints timings, their ratios and accuracy (vs an analytic phantom and vs a fine-step reference).
DiffDRR runs in a SEPARATE virtual environment (never a cxrdecomp dependency); create it with
``--setup-diffdrr`` (CPU) or point ``--diffdrr-python`` at any interpreter that can import diffdrr.

CPU (2 threads, the issue's setting)::

    python benchmarks/drr.py --setup-diffdrr          # once: /tmp/diffdrr-venv
    python benchmarks/drr.py --threads 2

GPU (200×200 DRRs per second vs DiffDRR)::

    python benchmarks/drr.py --device cuda --diffdrr-python python3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from cxrdecomp.physics.materials import hu_to_density, mass_attenuation  # noqa: E402
from cxrdecomp.projector.conebeam import PreparedVolume, forward_project  # noqa: E402
from cxrdecomp.projector.geometry import Detector, Pose, cone_rays, random_poses  # noqa: E402
from cxrdecomp.projector.parallel import parallel_projection  # noqa: E402

DIFFDRR_PKGS = [
    "diffdrr==0.6.1", "torchio", "kornia", "kornia-rs", "roma", "fastcore", "einops", "pandas", "numpy", "scipy",
    "SimpleITK", "nibabel", "tqdm", "jaxtyping", "wadler-lindig", "humanize", "deprecated", "wrapt", "python-dateutil",
    "rich", "typer", "packaging", "typing-extensions", "click", "shellingham", "markdown-it-py", "mdurl", "pygments",
    "six", "tzdata",
]


def setup_diffdrr(venv: Path) -> Path:
    """Create a separate venv with torch (local CPU wheel if present) and DiffDRR 0.6.1 (no torchvision)."""
    py = venv / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    wheels = sorted(Path("/opt/wheels").glob(f"torch-{torch.__version__.split('+')[0]}*.whl")) if Path("/opt/wheels").exists() else []
    subprocess.run([str(py), "-m", "pip", "install", "-q", str(wheels[0]) if wheels else f"torch=={torch.__version__.split('+')[0]}"], check=True)
    subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", *DIFFDRR_PKGS], check=True)
    subprocess.run([str(py), "-c", "import diffdrr.drr, diffdrr.data"], check=True)
    return py


def timeit(fn, repeats: int, device) -> tuple[float, list[float]]:
    fn()
    ts = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), ts


def smooth_ball(shape, spacing, radius):
    ax = [(torch.arange(n, dtype=torch.float32) - (n - 1) / 2) * s for n, s in zip(shape, spacing)]
    x, y, z = torch.meshgrid(*ax, indexing="ij")
    return ((1 - (x**2 + y**2 + z**2) / radius**2).clamp(min=0) ** 2) * 0.2


def ball_analytic(det, radius):
    src, pix = cone_rays(det, Pose.identity(dtype=torch.float64), dtype=torch.float64)
    d = pix - src[:, None, None]
    d = d / d.norm(dim=-1, keepdim=True)
    oc = src[:, None, None]
    b = (d * oc).sum(-1)
    p2 = ((oc * oc).sum(-1) - b * b).clamp(min=0)
    L = (radius**2 - p2).clamp(min=0).sqrt()
    return (16 / 15 * L * (L**2 / radius**2) ** 2 / 10.0 * 0.2)[0].float()


def rel_errors(img, ref, mask=None):
    img, ref = img.float().cpu(), ref.float().cpu()
    m = ref > 0.1 * ref.max()
    if mask is not None:
        m = m & mask.cpu()
    if not bool(m.any()):
        return {"mean_rel": float("nan"), "max_rel": float("nan")}
    return {"mean_rel": float((img - ref).abs()[m].mean() / ref[m].mean()), "max_rel": float(((img - ref).abs() / ref.clamp(min=1e-9))[m].max())}


def best_dihedral(a, ref):
    """DiffDRR image ``a`` in cxrdecomp's orientation: best of the 8 flips/transposes against ``ref``."""
    best = None
    for tr in (False, True):
        x = a.T if tr else a
        for f in ((), (0,), (1,), (0, 1)):
            y = torch.flip(x, f) if f else x
            if y.shape != ref.shape:
                continue
            e = float((y - ref).abs().mean())
            if best is None or e < best[0]:
                best = (e, y, (tr, f))
    return best[1], best[2]


def run_diffdrr(py: str, cases: list[dict], device: str, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "job.json"
        job.write_text(json.dumps({"threads": threads, "device": device, "cases": cases}))
        r = subprocess.run([py, str(ROOT / "benchmarks" / "_diffdrr_worker.py"), str(job), tmp], capture_output=True, text=True)
        if r.returncode != 0:
            print("DiffDRR worker failed:\n" + r.stderr[-3000:])
            return {}
        res = json.loads((Path(tmp) / "result.json").read_text())
        for c in cases:
            res[c["name"]]["image"] = torch.from_numpy(np.load(Path(tmp) / f"{c['name']}.npy"))
        return res


def memory_512(mu_path: str, spacing, method: str) -> tuple[float, float]:
    """Whole-process peak RSS in GB (Python + torch + CT volume + one 512×512 DRR), in a fresh subprocess:
    ``(peak before projecting, peak after)``; the difference is what the projection itself adds."""
    code = f"""
import resource, sys, numpy as np, torch
sys.path.insert(0, {str(ROOT / 'src')!r})
torch.set_num_threads(2)
from cxrdecomp.projector.conebeam import PreparedVolume, forward_project
from cxrdecomp.projector.geometry import Detector, Pose
pv = PreparedVolume(torch.from_numpy(np.load({mu_path!r})), {tuple(spacing)!r}).compact((1,))
det = Detector.covering(370.0, 512, sdd=1020.0, sod=800.0)
def hwm():  # this process's own peak RSS in GB. Not ru_maxrss: Linux carries the parent's RSS at fork over exec
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1e6
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
base = hwm()
forward_project(pv, Pose.from_angles([12.0], [-9.0]), det, method={method!r})
print(base, hwm())
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if r.returncode != 0:
        return float("nan"), float("nan")
    base, peak = r.stdout.strip().splitlines()[-1].split()
    return float(base), float(peak)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--diffdrr-python", default="/tmp/diffdrr-venv/bin/python")
    ap.add_argument("--setup-diffdrr", action="store_true", help="create /tmp/diffdrr-venv (CPU) and exit")
    ap.add_argument("--skip-diffdrr", action="store_true")
    ap.add_argument("--skip-reference", action="store_true", help="skip the slow fine-step references")
    args = ap.parse_args()
    if args.setup_diffdrr:
        print("DiffDRR venv python:", setup_diffdrr(Path("/tmp/diffdrr-venv")))
        return
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    use_dd = (not args.skip_diffdrr) and (Path(args.diffdrr_python).exists() or args.diffdrr_python in ("python3", "python"))

    from cxrdecomp.io.ct import example_ct

    ct = example_ct()
    sp = tuple(float(s) for s in ct.spacing)
    mu_np = (hu_to_density(ct.hu) * float(mass_attenuation("soft_tissue", [60.0])[0])).astype(np.float32)  # µ at 60 keV, cm⁻¹
    tmpd = tempfile.mkdtemp()
    mu_path = os.path.join(tmpd, "mu.npy")
    np.save(mu_path, mu_np)
    mu = torch.from_numpy(mu_np).to(dev)
    S = args.size
    sdd, sod, fov = 1020.0, 800.0, 370.0
    det = Detector.covering(fov, S, sdd=sdd, sod=sod)
    pose = Pose.from_angles([0.0], device=dev)
    print(f"CT {ct.shape} spacing {sp} mm; detector {S}x{S}, pitch {det.spacing[0]:.3f} mm, sdd {sdd}, sod {sod}; "
          f"device {dev}, threads {torch.get_num_threads()}, torch {torch.__version__}")

    res: dict = {}
    # --- memory-bandwidth floor and axis-aligned parallel beam
    # floor: one full reduction reads every voxel once (memory-bandwidth bound). torch.sum over the middle
    # axis of the (X, Y, Z) array is a poor kernel here (shown for reference), not a floor.
    t_sum, _ = timeit(lambda: mu.sum(), args.repeats * 4, dev)
    t_sumy, _ = timeit(lambda: mu.sum(1), args.repeats * 2, dev)
    t_par, _ = timeit(lambda: parallel_projection(mu, sp), args.repeats * 4, dev)
    pv_par = PreparedVolume(mu, sp)
    pv_par.layout(1)
    t_parp, _ = timeit(lambda: parallel_projection(pv_par, sp), args.repeats * 4, dev)
    del pv_par
    print(f"plain volume sum (floor)    {t_sum * 1e3:8.1f} ms")
    print(f"torch mu.sum(dim=Y)         {t_sumy * 1e3:8.1f} ms   ratio to floor {t_sumy / t_sum:5.2f}x")
    print(f"parallel AP DRR (raw CT)    {t_par * 1e3:8.1f} ms   ratio to floor {t_par / t_sum:5.2f}x")
    print(f"parallel AP DRR (prepared)  {t_parp * 1e3:8.1f} ms   ratio to floor {t_parp / t_sum:5.2f}x")

    # --- cone-beam, one pose
    t0 = time.perf_counter()
    pv = PreparedVolume(mu, sp).compact((1,))
    print(f"prepare volume (once per CT) {(time.perf_counter() - t0) * 1e3:7.1f} ms")
    ours = {}
    for name, kw in [("shearwarp", {"method": "shearwarp"}), ("joseph", {"method": "joseph"})]:
        t, _ = timeit(lambda: forward_project(pv, pose, det, **kw), args.repeats, dev)
        ours[name] = (t, forward_project(pv, pose, det, **kw)[0, 0])
        print(f"cone {S}² one pose  {name:14s} {t * 1e3:8.1f} ms")
    poses16 = random_poses(16, generator=torch.Generator().manual_seed(0), device=dev)
    for m in ("shearwarp", "joseph"):
        t16, _ = timeit(lambda: forward_project(pv, poses16, det, method=m), max(1, args.repeats // 2), dev)
        print(f"cone {S}² 16 poses ±18°  {m:10s} {t16:6.2f} s  = {16 / t16:6.1f} DRR/s")

    # --- accuracy: analytic phantom (smooth ball, same grid as the CT) and fine-step reference on the CT
    ball = smooth_ball(ct.shape, sp, 120.0).to(dev)
    ball_ref = ball_analytic(det, 120.0)
    pvb = PreparedVolume(ball, sp)
    acc = {}
    for name, kw in [("shearwarp", {"method": "shearwarp"}), ("shearwarp_os2", {"method": "shearwarp", "oversample": 2.0}), ("joseph", {"method": "joseph"}), ("trilinear500", {"method": "trilinear", "n_samples": 500})]:
        acc[name] = rel_errors(forward_project(pvb, pose, det, **kw)[0, 0], ball_ref)
        print(f"analytic ball  {name:14s} mean rel err {acc[name]['mean_rel']:.2e}  max {acc[name]['max_rel']:.2e}")
    fine = None
    # interior rays: away (≥ 4 px) from the projection of the volume's faces, where interpolant supports differ
    ones = forward_project(PreparedVolume(torch.ones(ct.shape, device=dev), sp), pose, det)[0, 0]
    interior = -torch.nn.functional.max_pool2d(-(ones > 0.9 * ones.max()).float()[None], 9, 1, 4)[0] > 0
    if not args.skip_reference:
        pvr = PreparedVolume(mu, sp)
        for pname, p in (("PA", pose), ("az12 el-9", Pose.from_angles([12.0], [-9.0], device=dev))):
            t0 = time.perf_counter()
            ref = forward_project(pvr, p, det, method="trilinear", n_samples=4000, chunk_elems=1 << 24)[0, 0]
            print(f"fine reference {pname} (trilinear, 4000 samples/ray) {time.perf_counter() - t0:.1f} s")
            for name, kw in [("shearwarp", {"method": "shearwarp"}), ("shearwarp_os2", {"method": "shearwarp", "oversample": 2.0}), ("joseph", {"method": "joseph"}), ("trilinear500", {"method": "trilinear", "n_samples": 500})]:
                e = rel_errors(forward_project(pvr, p, det, **kw)[0, 0], ref, interior if pname == "PA" else None)
                print(f"CT {pname:9s} vs fine ref  {name:14s} mean rel err {e['mean_rel']:.2e}  max {e['max_rel']:.2e}")
            if pname == "PA":
                fine = ref
        del pvr

    # --- DiffDRR in its own venv, same run
    if use_dd:
        ball_path = os.path.join(tmpd, "ball.npy")
        np.save(ball_path, ball.cpu().numpy())
        base = {"spacing": list(sp), "sdd": sdd, "sod": sod, "size": S, "delx": det.spacing[0]}
        cases = [
            dict(base, name="ct_tri500", volume=mu_path, renderer="trilinear", n_points=500, repeats=args.repeats),
            dict(base, name="ball_tri500", volume=ball_path, renderer="trilinear", n_points=500, repeats=1),
        ]
        if not args.skip_reference:
            cases.append(dict(base, name="ct_tri4000", volume=mu_path, renderer="trilinear", n_points=4000, repeats=1, patch_size=S // 4))
        dd = run_diffdrr(args.diffdrr_python, cases, args.device, args.threads)
        if dd:
            t_dd = dd["ct_tri500"]["time_s"]
            print(f"DiffDRR {dd['version']} trilinear 500 samples  {t_dd:.2f} s")
            for name, (t, _) in ours.items():
                print(f"speed-up vs DiffDRR: {name:14s} {t_dd / t:6.1f}x")
            # DiffDRR integrates density·mm: /10 → cm; orient to our convention on the ball (symmetric) and CT
            img_b = dd["ball_tri500"]["image"] / 10.0
            img_b, _ = best_dihedral(img_b, ball_ref)
            e = rel_errors(img_b, ball_ref)
            print(f"analytic ball  DiffDRR tri500  mean rel err {e['mean_rel']:.2e}  max {e['max_rel']:.2e}")
            if fine is not None:
                img, how = best_dihedral(dd["ct_tri500"]["image"] / 10.0, fine.cpu())
                e = rel_errors(img, fine, interior)
                print(f"CT PA vs our fine ref (interior)  DiffDRR tri500  mean rel err {e['mean_rel']:.2e}  max {e['max_rel']:.2e}  (orientation {how})")
                f2, _ = best_dihedral(dd["ct_tri4000"]["image"] / 10.0, fine.cpu())
                e2 = rel_errors(f2, fine, interior)
                print(f"geometry check: DiffDRR 4000 samples vs our fine ref: mean rel diff {e2['mean_rel']:.2e} "
                      "(same frame through the worker's bridge: orientation PA, camera at (0, -sod, 0))")
                e3 = rel_errors(img, f2, interior)
                print(f"CT vs DiffDRR's own fine ref  DiffDRR tri500  mean rel err {e3['mean_rel']:.2e}")
    if dev.type == "cpu":
        for m in ("shearwarp", "joseph"):
            base, peak = memory_512(mu_path, sp, m)
            print(f"peak process memory, 512² cone DRR incl. CT ({m}): {peak:.2f} GB (before projecting: {base:.2f} GB)")
    else:
        torch.cuda.reset_peak_memory_stats()
        det2 = Detector.covering(fov, 200, sdd=sdd, sod=sod)
        for B in (1, 32):
            poses = random_poses(B, generator=torch.Generator().manual_seed(1), device=dev)
            for m in ("shearwarp", "joseph"):
                t, _ = timeit(lambda: forward_project(pv, poses, det2, method=m), args.repeats, dev)
                print(f"GPU 200² batch {B:2d} {m:10s} {B / t:8.1f} DRR/s")
        if use_dd:
            base = {"spacing": list(sp), "sdd": sdd, "sod": sod, "size": 200, "delx": det2.spacing[0], "batch": 32}
            dd = run_diffdrr(args.diffdrr_python, [dict(base, name="g_tri", volume=mu_path, renderer="trilinear", n_points=500, repeats=args.repeats),
                                                   dict(base, name="g_sid", volume=mu_path, renderer="siddon", repeats=args.repeats)], args.device, args.threads)
            for k in ("g_tri", "g_sid"):
                if k in dd:
                    print(f"GPU 200² batch 32 DiffDRR {k[2:]:4s} {32 / dd[k]['time_s']:8.1f} DRR/s")
        print(f"GPU peak memory {torch.cuda.max_memory_allocated() / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
