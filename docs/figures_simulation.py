"""Make the pictures of docs/simulation.md from the example CT (run from the repository root):

    PYTHONPATH=src python docs/figures_simulation.py [--shared ../shared/data]

Writes docs/images/sim_stage_*.png (one figure per pipeline stage), sim_targets.png and sim_gallery.png
(random samples beside real radiographs: RG1_UNCI and, when the shared data folder exists, bse-jsrt/train
and des-dev radiographs — shown, never trained on).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from cxrdecomp.io.atomic import atomic_path
from cxrdecomp.io.ct import example_ct
from cxrdecomp.simulate import anatomy as A
from cxrdecomp.simulate.pipeline import GeometryParams, PhysicsParams, SampleParams, Simulator
from cxrdecomp.simulate.processing import PRESENTATION, ProcessingParams

OUT = Path("docs/images")
H = 256
LINEAR = ProcessingParams(window=(0.005, 0.995))


def panel(a, label: str = "") -> np.ndarray:
    t = torch.as_tensor(np.asarray(a, dtype=np.float32))
    t = F.interpolate(t.reshape(1, 1, *t.shape[-2:]), size=(H, H), mode="area")[0, 0].clamp(0, 1).numpy()
    img = Image.fromarray((t * 255 + 0.5).astype(np.uint8))
    if label:
        d = ImageDraw.Draw(img)
        d.rectangle([0, H - 14, 7 * len(label) + 4, H], fill=0)
        d.text((2, H - 13), label, fill=255)
    return np.asarray(img, dtype=np.float32) / 255


def save(name: str, rows: list[list[np.ndarray]]) -> None:
    grid = np.concatenate([np.concatenate(r, 1) for r in rows], 0)
    with atomic_path(OUT / name) as tmp:
        Image.fromarray((np.clip(grid, 0, 1) * 255 + 0.5).astype(np.uint8)).save(tmp, format="PNG")
    print("wrote", OUT / name)


def real_images(shared: Path) -> list[tuple[np.ndarray, str]]:
    from cxrdecomp.io.examples import example_file
    from cxrdecomp.io.radiograph import read_radiograph

    r = read_radiograph(example_file("RG1_UNCI.dcm"))
    out = [(np.asarray(r.image, dtype=np.float32), "real RG1_UNCI")]
    for sub, n in (("bse-jsrt/train/cxr", 2), ("des-dev/cxr", 1)):
        files = sorted((shared / sub).glob("*.png"))[:n]
        out += [(np.asarray(Image.open(f).convert("L"), dtype=np.float32) / 255, f"real {sub.split('/')[0]}") for f in files]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shared", type=Path, default=Path("../shared/data"))
    a = ap.parse_args()
    torch.set_num_threads(2)
    sim = Simulator(example_ct(), H, method="joseph", des=True)
    base = SampleParams(physics=PhysicsParams(kvp=120.0), processing=LINEAR)
    img = lambda p, k="image": sim.render(p)[k][0]  # noqa: E731

    # 1. anatomy
    rng = np.random.default_rng(3)
    anat = [A.draw_volume_anatomy(np.random.default_rng(k)) for k in (11, 12)]
    habitus = dataclasses.replace(anat[0], fat_layer_mm=25.0, breasts=(4.5, 0.17), nodules=((0.35, 0.3, 18.0, 1.0), (0.6, 0.75, 12.0, 0.6)))
    row = [panel(img(base), "CT as it is"), panel(img(dataclasses.replace(base, anatomy=anat[0])), "deformed + scaled"),
           panel(img(dataclasses.replace(base, anatomy=anat[1])), "another anatomy"),
           panel(img(dataclasses.replace(base, anatomy=habitus)), "fat, breasts, nodules")]
    save("sim_stage_anatomy.png", [row])
    del rng

    # 2. geometry
    g = lambda **kw: dataclasses.replace(base, geometry=GeometryParams(**kw))  # noqa: E731
    row = [panel(img(g()), "PA 1800 mm"), panel(img(g(view="AP", sdd_mm=1000.0)), "AP 1000 mm"),
           panel(img(g(azimuth=5.0, tilt=-5.0, roll=3.0)), "rotated 5°, tilted"), panel(img(g(fov=0.85, collimation=(0.05, 0.08, 0.06, 0.04))), "collimated")]
    save("sim_stage_geometry.png", [row])

    # 3. physics
    ph = lambda **kw: dataclasses.replace(base, physics=PhysicsParams(**kw))  # noqa: E731
    row = [panel(img(ph(energy_kev=60.0)), "60 keV mono"), panel(img(ph(kvp=70.0)), "70 kVp"),
           panel(img(ph(kvp=150.0)), "150 kVp"), panel(img(ph(kvp=120.0, materials=("bone",))), "bone only, 120 kVp")]
    save("sim_stage_physics.png", [row])

    # 4. detector
    row = [panel(img(ph(kvp=120.0)), "primary only"), panel(img(ph(kvp=120.0, spr=1.5)), "scatter SPR 1.5"),
           panel(img(ph(kvp=120.0, spr=1.5, grid=True)), "SPR 1.5 + grid"),
           panel(img(ph(kvp=120.0, spr=0.5, mtf_sigma_px=1.0, photons=5e3, electronic_sigma=3.0, noise_seed=1)), "blur + low dose")]
    save("sim_stage_detector.png", [row])

    # 5. processing
    pr = lambda p: dataclasses.replace(base, physics=PhysicsParams(kvp=120.0, spr=0.8, grid=True, photons=1e5, noise_seed=2), processing=p)  # noqa: E731
    from cxrdecomp.simulate.processing import draw_processing

    row = [panel(img(pr(LINEAR)), "linear window (log)"), panel(img(pr(PRESENTATION)), "presentation chain")]
    row += [panel(img(pr(draw_processing(np.random.default_rng(s)))), f"random chain {s}") for s in (4, 9)]
    save("sim_stage_processing.png", [row])

    # 6. targets of one random sample
    o = sim.sample(5)
    row = [panel(o["image"][0], "image"), panel(o["soft_tissue"][0], "soft tissue"), panel(3 * o["bone"][0], "bone ×3"),
           panel(3 * o["lung"][0], "lung X-ray ×3"), panel(o["lung_mask"][0], "lung mask")]
    row2 = [panel(o["des_soft"][0], "DES soft"), panel(3 * o["des_bone"][0], "DES bone ×3"), panel(o["t_bone"][0] / 6, "t_bone /6 g/cm²"),
            panel(o["t_tissue"][0] / 40, "t_tissue /40 g/cm²"), panel(o["bone_mask"][0], "bone mask")]
    save("sim_targets.png", [row, row2])

    # gallery beside real radiographs
    sims = [panel(sim.sample(i * 37 + 1)["image"][0], f"simulated {i * 37 + 1}") for i in range(8)]
    reals = [panel(im, lab) for im, lab in real_images(a.shared)]
    while len(reals) < 4:
        reals.append(np.zeros((H, H), np.float32))
    save("sim_gallery.png", [sims[:4], sims[4:], reals[:4]])


if __name__ == "__main__":
    main()
