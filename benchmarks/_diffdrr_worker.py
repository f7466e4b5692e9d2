"""DiffDRR 0.6.1 timing/accuracy worker, run by benchmarks/drr.py inside a SEPARATE venv.

It is never imported by cxrdecomp. It reads a JSON job on argv[1], writes results (JSON + .npy images)
into the folder argv[2]. Geometry bridge to cxrdecomp's frame: ``read(orientation="PA")`` and the camera at
``(0, −sod, 0)`` with zero rotation give exactly cxrdecomp's identity pose (``Pose.identity()``, a PA view
with the same pixel order: 4e-5 mean difference at 1000 samples); detector at ``sdd`` from the source,
square pixels ``delx`` mm.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    torch.set_num_threads(int(job.get("threads", 2)))
    dev = torch.device(job.get("device", "cpu"))
    from diffdrr.data import read
    from diffdrr.drr import DRR
    import torchio

    res = {"version": __import__("diffdrr").__version__}
    for case in job["cases"]:
        vol = np.load(case["volume"])  # (X, Y, Z) µ or density, RAS
        affine = np.diag(list(case["spacing"]) + [1.0])
        img = torchio.ScalarImage(tensor=torch.from_numpy(vol)[None].float(), affine=affine)
        subject = read(img, orientation=case.get("orientation", "PA"))
        kw = {}
        drr = DRR(subject, sdd=case["sdd"], height=case["size"], delx=case["delx"], renderer=case["renderer"],
                  patch_size=case.get("patch_size")).to(dev)
        # Replace DiffDRR's HU->density mapping by the raw values so both renderers see the same µ.
        with torch.no_grad():
            drr.density.copy_(torch.from_numpy(vol).float().to(drr.density.device).reshape(drr.density.shape))
        nb = case.get("batch", 1)
        rot = torch.tensor([case.get("rot", [0.0, 0.0, 0.0])], device=dev).repeat(nb, 1)
        xyz = torch.tensor([case.get("xyz", [0.0, -case["sod"], 0.0])], device=dev).repeat(nb, 1)
        if case["renderer"] == "trilinear":
            kw["n_points"] = case.get("n_points", 500)

        def go():
            with torch.no_grad():
                return drr(rot, xyz, parameterization="euler_angles", convention="ZXY", **kw)

        y = go()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times = []
        for _ in range(case.get("repeats", 3)):
            t = time.perf_counter()
            y = go()
            if dev.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
        name = case["name"]
        np.save(out / f"{name}.npy", y[:1, 0].cpu().numpy()[0])
        res[name] = {"time_s": float(np.median(times)), "times": times}
    (out / "result.json").write_text(json.dumps(res))


if __name__ == "__main__":
    main()
