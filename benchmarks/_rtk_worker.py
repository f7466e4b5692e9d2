"""RTK (itk-rtk, CPU) Joseph forward-projection worker, run by benchmarks/drr.py inside a SEPARATE venv.

It is never imported by cxrdecomp (it needs only ``itk-rtk`` and ``numpy``). It reads a JSON job on argv[1]
and writes results (``result.json`` + one ``<case>.npy`` per case) into the folder argv[2].

Job::

    {"threads": 2,
     "cases": [{"name": "ct_pa", "volume": "/tmp/mu.npy",         # (X, Y, Z) float32, cxrdecomp's RAS array
                "spacing": [sx, sy, sz],                           # mm, per array axis
                "origin": [...], "direction": [[...], [...], [...]],  # RTK fixed frame of voxel index (X, Y, Z)
                "size": [W, H], "pitch": [pw, ph], "det_origin": [u0, v0],  # projection stack, mm
                "views": [{"sid", "sdd", "gantry", "proj_offset": [x, y], "out_of_plane", "in_plane",
                           "source_offset": [x, y]}, ...],         # AddProjection's parameters, degrees
                "repeats": 5}]}

The geometry mapping from cxrdecomp's frame (``Pose``/``Detector``) to these parameters is done by
``benchmarks/drr.py::rtk_geometry``; this worker only builds the ITK images and runs the filter. The voxel
index (i, j, k) = the array's (X, Y, Z) axes, i.e. ITK sees ``volume.transpose(2, 1, 0)`` (i fastest). The
projection stack is a 3-D image (W, H, views) with unit spacing along the view axis; its array
``(views, H, W)`` comes back as line integrals of the volume's values times mm (no unit conversion here).

Timings: ``Update()`` of one ``rtk.JosephForwardProjectionImageFilter`` on all the case's views, after one
warm-up, median of ``repeats``; ITK's global thread count is set to ``threads`` (as torch's in drr.py).
"""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np


def main() -> None:
    job = json.loads(Path(sys.argv[1]).read_text())
    out = Path(sys.argv[2])
    threads = int(job.get("threads", 2))
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(threads)
    import itk
    from itk import RTK as rtk

    itk.MultiThreaderBase.SetGlobalMaximumNumberOfThreads(threads)
    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(threads)
    ImageType = itk.Image[itk.F, 3]
    res = {"itk": itk.Version.GetITKVersion(), "threads": itk.MultiThreaderBase.GetGlobalDefaultNumberOfThreads()}
    try:
        from importlib.metadata import version

        res["itk_rtk"] = version("itk-rtk")
    except Exception:  # noqa: BLE001 - version metadata is informative only
        res["itk_rtk"] = "?"
    volumes: dict = {}
    for case in job["cases"]:
        key = (case["volume"], tuple(case["spacing"]), tuple(case["origin"]), json.dumps(case["direction"]))
        if key not in volumes:
            arr = np.ascontiguousarray(np.load(case["volume"]).astype(np.float32, copy=False).transpose(2, 1, 0))
            vol = itk.image_from_array(arr)  # ITK index (i, j, k) = array axes (X, Y, Z)
            vol.SetSpacing([float(s) for s in case["spacing"]])
            vol.SetOrigin([float(o) for o in case["origin"]])
            vol.SetDirection(itk.matrix_from_array(np.asarray(case["direction"], dtype=np.float64)))
            volumes = {key: (vol, arr)}  # keep the numpy buffer alive with its image; one volume at a time
        vol = volumes[key][0]

        geo = rtk.ThreeDCircularProjectionGeometry.New()
        for v in case["views"]:
            po, so = v.get("proj_offset", [0.0, 0.0]), v.get("source_offset", [0.0, 0.0])
            geo.AddProjection(float(v["sid"]), float(v["sdd"]), float(v["gantry"]), float(po[0]), float(po[1]),
                              float(v.get("out_of_plane", 0.0)), float(v.get("in_plane", 0.0)), float(so[0]), float(so[1]))
        w, h = (int(s) for s in case["size"])
        n = len(case["views"])
        stack = itk.image_from_array(np.zeros((n, h, w), dtype=np.float32))  # (W, H, views) in ITK order
        stack.SetSpacing([float(case["pitch"][0]), float(case["pitch"][1]), 1.0])
        stack.SetOrigin([float(case["det_origin"][0]), float(case["det_origin"][1]), 0.0])

        fp = rtk.JosephForwardProjectionImageFilter[ImageType, ImageType].New()
        fp.SetInput(0, stack)
        fp.SetInput(1, vol)
        fp.SetGeometry(geo)
        fp.InPlaceOff()

        def go(fp=fp):
            fp.Modified()
            fp.Update()
            return fp.GetOutput()

        go()  # warm-up
        times = []
        for _ in range(int(case.get("repeats", 3))):
            t = time.perf_counter()
            img = go()
            times.append(time.perf_counter() - t)
        np.save(out / f"{case['name']}.npy", np.array(itk.array_view_from_image(img), dtype=np.float32, copy=True))
        res[case["name"]] = {"time_s": float(np.median(times)), "times": times, "views": n}
    (out / "result.json").write_text(json.dumps(res))


if __name__ == "__main__":
    main()
