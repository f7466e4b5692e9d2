"""Make the pictures of docs/simulation.md from the example CT (run from the repository root):

    PYTHONPATH=src python docs/figures_simulation.py

Writes docs/images/sim_drr_bone_soft.png, sim_labels_vs_hu.png, sim_paper_vs_physical.png and
prints the numbers quoted in docs/simulation.md.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from cxrdecomp.io.atomic import atomic_path
from cxrdecomp.io.ct import example_ct
from cxrdecomp.simulate import targets
from cxrdecomp.simulate.render import CTRenderer, display_window, intensity_physical, to_display

OUT = "docs/images"
H = 320  # panel size


def panel(a: torch.Tensor) -> np.ndarray:
    a = torch.nn.functional.interpolate(a.reshape(1, 1, *a.shape[-2:]), size=(H, H), mode="area")[0, 0]
    return a.clamp(0, 1).numpy()


def save(name: str, arr: np.ndarray) -> None:
    img = Image.fromarray((np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8))
    with atomic_path(f"{OUT}/{name}") as tmp:
        img.save(tmp, format="PNG", optimize=True)


def main() -> None:
    torch.set_num_threads(2)
    ct = example_ct()
    m_lab = targets.bone_mask(ct, "labels")
    m_hu = targets.bone_mask(ct, "hu")
    heart = np.isin(ct.labels, targets.labels_matching(ct.label_names, [r"^heart$", r"^aorta$", r"vena_cava", r"pulmonary"]))
    ribs = np.isin(ct.labels, targets.labels_matching(ct.label_names, [r"^rib_"]))
    print(f"bone voxels: labels {m_lab.sum():,}, HU window {m_hu.sum():,}")
    print(f"heart/aorta/great vessels voxels inside the HU window: {(m_hu & heart).sum():,} ({(m_hu & heart).sum() / m_hu.sum():.0%} of the window)")
    print(f"rib voxels outside the HU window: {(ribs & ~m_hu).sum() / ribs.sum():.0%} (of them > 700 HU: {(ribs & (ct.hu > 700)).sum() / ribs.sum():.0%})")
    s_lab = CTRenderer(ct, mask=m_lab, size=512).render()
    s_hu = CTRenderer(ct, mask=m_hu, size=512).render()
    s_fill = CTRenderer(ct, mask=m_lab, size=512, soft_fill_hu=40.0).render()
    lo, hi = display_window(s_lab.total[None])
    d = to_display(s_lab.total[None], lo, hi)
    bl, bh, bf = s_lab.bone[None] / (hi - lo), s_hu.bone[None] / (hi - lo), s_fill.bone[None] / (hi - lo)
    print(f"identity residual max |L - (L_bone + L_soft)| = {(s_lab.total - s_lab.bone - s_lab.soft).abs().max():.2e}")
    # 1. DRR | bone | soft tissue (paper definition) | soft tissue (bone voxels filled with 40 HU)
    save("sim_drr_bone_soft.png", np.concatenate([panel(d), panel(bl * 2), panel(d - bl), panel(d - bf)], axis=1))
    # 2. bone by labels | bone by HU window | difference (red: HU window only, cyan: labels only)
    diff = panel((bh - bl) * 4 + 0.5) - 0.5
    g = panel(d) * 0.5
    rgb = np.stack([g + np.clip(diff, 0, None) * 2, g + np.clip(-diff, 0, None) * 2, g + np.clip(-diff, 0, None) * 2], -1)
    grey = lambda a: np.repeat(a[..., None], 3, -1)  # noqa: E731
    save("sim_labels_vs_hu.png", np.concatenate([grey(panel(bl * 2)), grey(panel(bh * 2)), rgb], axis=1))
    # 3. physical intensity exp(-L) (air bright) | paper exp(β µ_av), per-image min–max | log display
    phys = intensity_physical(s_lab.total)
    paper = s_lab.paper_drr()
    pn = (paper - paper.min()) / (paper.max() - paper.min())
    ln = (s_lab.total - s_lab.total.min()) / (s_lab.total.max() - s_lab.total.min())
    print(f"paper DRR (min–max) vs line integral (min–max): max abs diff {float((pn - ln).abs().max()):.4f}")
    save("sim_paper_vs_physical.png", np.concatenate([panel(phys), panel(pn), panel(d)], axis=1))


if __name__ == "__main__":
    main()
