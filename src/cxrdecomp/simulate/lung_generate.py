"""Simulated training data of the lung-structure method: DRR, lung X-ray, 2D lung and nodule masks.

Lung paper §2.1 ("Lung structures enhancement in chest radiographs via CT based FCNN training").
From one CT case, each sample is a new view: synthetic nodules inserted into the volume, a small
random rotation (and optional left–right flip) of the volume, then an AP parallel projection
(:func:`cxrdecomp.projector.parallel.line_integral_ap`) of

* the whole volume → the input DRR (attenuation domain, mapped to the display domain by the bone
  simulation's window, :func:`cxrdecomp.simulate.render.display_window` + ``to_display``, clipped to
  ``[0, 1]``: both methods see the same input domain, and HE + CLAHE follows anyway);
* the lung voxels only (Eq. 4, others set to air) → the lung X-ray, display value ``L_lung / lung_scale``
  (``lung_scale`` = 1.0 line-integral unit by default, so the target keeps its physical scale);
* the 3D lung mask → the 2D lung mask; the 3D nodule mask → the 2D nodule mask.

Output folder (one sample = four PNGs with the same name, written atomically; a rerun skips
complete samples, so an interrupted run resumes)::

    OUT/drr/NAME.png          16-bit, display domain, DRR
    OUT/input/NAME.png        16-bit, the DRR after HE + CLAHE (cxrdecomp.preprocess.he_clahe)
    OUT/lung/NAME.png         16-bit, display domain, lung X-ray (value · lung_scale = line integral)
    OUT/lung_mask/NAME.png    8-bit 0/255
    OUT/nodule_mask/NAME.png  8-bit 0/255
    OUT/meta/NAME.json        pose and nodules (written last: marks the sample complete)
    OUT/simulation.json       parameters

:class:`cxrdecomp.methods.lung.data.LungSimDataset` reads such a folder back for training.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cxrdecomp.errors import ConfigError
from cxrdecomp.io.atomic import atomic_path
from cxrdecomp.physics.materials import hu_to_mu
from cxrdecomp.projector.parallel import line_integral_ap
from cxrdecomp.simulate import lung as L
from cxrdecomp.simulate.render import display_window, rotation_matrix, to_display

FOLDERS = ("drr", "input", "lung", "lung_mask", "nodule_mask")


@dataclass
class LungCase:
    """A CT case ready for rendering: HU ``(X, Y, Z)`` RAS, spacing (mm), 3D lung mask, name."""

    hu: np.ndarray
    spacing: tuple[float, float, float]
    lung: np.ndarray
    name: str
    mask_source: str = "threshold"
    _cand: tuple[np.ndarray, np.ndarray] | None = None
    _lung_t: torch.Tensor | None = None

    def lung_tensor(self, device) -> torch.Tensor:
        """The lung mask as a float32 tensor on ``device`` (cached)."""
        if self._lung_t is None or self._lung_t.device.type != torch.device(device).type:
            self._lung_t = torch.from_numpy(self.lung).to(device=device, dtype=torch.float32)
        return self._lung_t

    def lung_candidates(self) -> tuple[np.ndarray, np.ndarray]:
        """Lung voxels and their distance (mm) to the lung border (cached; for nodule placement)."""
        if self._cand is None:
            self._cand = L.lung_candidates(self.lung, self.spacing)
        return self._cand


def example_case() -> LungCase:
    """The example CT (fetched on first use) with its lobe-label lung mask.

    Raises:
        DataNotFoundError: the example data cannot be fetched.
    """
    from cxrdecomp.io.ct import example_ct

    return prepare_case(example_ct(), "example")


def downsample_case(case: LungCase, factor: int) -> LungCase:
    """Average ``factor × factor`` voxels in the axial plane (X, Y): fewer voxels to rotate and
    project when the output pixels are much larger than the CT's (small training sizes, CPU).
    The lung mask keeps voxels that are at least half lung."""
    if factor <= 1:
        return case
    t = torch.from_numpy(np.ascontiguousarray(case.hu, dtype=np.float32)).permute(2, 0, 1)[:, None]
    m = torch.from_numpy(case.lung).permute(2, 0, 1)[:, None].float()
    hu = F.avg_pool2d(t, factor)[:, 0].permute(1, 2, 0).numpy()
    lung = (F.avg_pool2d(m, factor)[:, 0].permute(1, 2, 0) >= 0.5).numpy()
    sp = (case.spacing[0] * factor, case.spacing[1] * factor, case.spacing[2])
    return LungCase(np.ascontiguousarray(hu), sp, np.ascontiguousarray(lung), case.name, case.mask_source)


def auto_downsample_factor(case: LungCase, size: int) -> int:
    """Largest in-plane factor that keeps voxels no larger than the output pixels."""
    side = min(case.hu.shape[2] * case.spacing[2], case.hu.shape[0] * case.spacing[0])
    return max(1, int((side / size) // case.spacing[0]))


def prepare_case(ct, name: str = "ct", use_labels: bool = True) -> LungCase:
    """3D lung mask of a :class:`cxrdecomp.io.ct.CTVolume`: its label map's lung structures when it
    has them (and ``use_labels``), else :func:`cxrdecomp.simulate.lung.lung_mask_threshold`."""
    if use_labels and ct.labels is not None and any("lung" in v.lower() for v in ct.label_names.values()):
        return LungCase(ct.hu, tuple(ct.spacing), L.lung_mask_from_labels(ct.labels, ct.label_names), name, "labels")
    return LungCase(ct.hu, tuple(ct.spacing), L.lung_mask_threshold(ct.hu, ct.spacing), name, "threshold")


@dataclass
class LungSimConfig:
    """Parameters of the simulation (stored in ``OUT/simulation.json``)."""

    size: int = 512
    nodules: tuple[int, int] = (1, 3)  # number per view, inclusive range
    nodule_diameter_mm: tuple[float, float] = (5.0, 30.0)
    nodule_hu: tuple[float, float] = (0.0, 80.0)
    rotation_deg: float = 5.0  # about the cranio-caudal axis; a third of it about the other two
    flip_prob: float = 0.0
    lung_scale: float = 1.0
    mu_water: float = L.MU_WATER_CM


def rotate_volume(vol: torch.Tensor, spacing: Sequence[float], rot: torch.Tensor, flip_x: bool = False) -> torch.Tensor:
    """Rotate ``(C, X, Y, Z)`` channels about the volume centre (trilinear, zeros outside).

    ``rot`` is a 3×3 rotation in physical (mm) RAS coordinates; ``flip_x`` mirrors left–right.
    """
    _, nx, ny, nz = vol.shape
    ext = torch.tensor([nx * spacing[0], ny * spacing[1], nz * spacing[2]], dtype=torch.float64)
    # grid_sample coords: normalised [-1, 1] per axis; physical p = n * ext/2. Output n_out -> input n_in:
    # n_in = D^-1 R^T D n_out with D = diag(ext/2).
    d = torch.diag(ext / 2)
    m = torch.linalg.inv(d) @ rot.T @ d
    if flip_x:
        m = m @ torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64))
    # grid_sample's last dim is (x, y, z) = (W, H, D) of a (N, C, D, H, W) input: permute to (C, Z, Y, X)
    inp = vol.permute(0, 3, 2, 1)[None]
    theta = torch.zeros(1, 3, 4, dtype=torch.float64)
    theta[0, :, :3] = m
    grid = F.affine_grid(theta.to(vol.dtype).to(vol.device), list(inp.shape), align_corners=False)
    out = F.grid_sample(inp, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[0].permute(0, 3, 2, 1)


def square_view(img: torch.Tensor, spacing_zx: tuple[float, float], size: int) -> torch.Tensor:
    """Resample ``(C, Z, X)`` projections (pixel ``spacing_zx`` mm) to ``(C, size, size)`` square pixels.

    The square field of view has the side of the shorter physical extent and is centred.
    """
    _, nz, nx = img.shape
    ez, ex = nz * spacing_zx[0], nx * spacing_zx[1]
    side = min(ez, ex)
    theta = torch.tensor([[[side / ex, 0, 0], [0, side / ez, 0]]], dtype=img.dtype, device=img.device)
    grid = F.affine_grid(theta, [1, img.shape[0], size, size], align_corners=False)
    return F.grid_sample(img[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]


def render_sample(case: LungCase, rng: np.random.Generator, cfg: LungSimConfig, device: str | torch.device = "cpu", mu: torch.Tensor | None = None) -> dict:
    """Render one simulated view of ``case``.

    Returns:
        dict of ``(size, size)`` float32 CPU tensors ``drr`` (display domain), ``drr_li`` and
        ``lung_li`` (attenuation domain line integrals), ``lung`` (display domain,
        ``lung_li / lung_scale`` clipped), ``lung_mask`` and ``nodule_mask`` (0/1), plus ``meta``
        (``rotation_deg``: the angles in degrees about the RAS X, Y and Z axes of
        :func:`cxrdecomp.simulate.render.rotation_matrix`, ``flip_lr``, the nodules).
    """
    n_nod = int(rng.integers(cfg.nodules[0], cfg.nodules[1] + 1))
    nodules = (
        L.random_nodules(case.lung, case.spacing, rng, n_nod, cfg.nodule_diameter_mm, cfg.nodule_hu, candidates=case.lung_candidates())
        if n_nod
        else []
    )
    if mu is None:
        mu = torch.from_numpy(hu_to_mu(np.asarray(case.hu, dtype=np.float32), cfg.mu_water)).to(device)
    mu = mu.clone()
    lung = case.lung_tensor(mu.device)
    nod = torch.zeros_like(lung)
    for n in nodules:
        sl, m = L.ellipsoid_box(case.hu.shape, case.spacing, n)
        m = torch.from_numpy(m & case.lung[sl]).to(device)
        mu[sl][m] = cfg.mu_water * (1.0 + n.hu / 1000.0)
        nod[sl][m] = 1.0
    # degrees about the RAS Z (cranio-caudal) axis, then a third of the range about X and Y
    az = rng.uniform(-cfg.rotation_deg, cfg.rotation_deg)
    ax, ay = (rng.uniform(-cfg.rotation_deg, cfg.rotation_deg) / 3 for _ in range(2))
    flip = bool(rng.random() < cfg.flip_prob)
    rot = torch.from_numpy(rotation_matrix(ax, ay, az))
    vol = rotate_volume(torch.stack([mu, lung, nod]), case.spacing, rot, flip)
    mu_r, lung_r, nod_r = vol[0], vol[1], vol[2]
    sy = case.spacing[1]
    proj = torch.stack(
        [
            line_integral_ap(mu_r, sy),
            L.lung_xray(mu_r, lung_r, sy),
            line_integral_ap(lung_r, sy) * 10.0,  # lung thickness, mm
            line_integral_ap(nod_r, sy) * 10.0,
        ]
    )
    proj = square_view(proj, (case.spacing[2], case.spacing[0]), cfg.size).cpu()
    drr_li, lung_li = proj[0].clamp_min(0), proj[1].clamp_min(0)
    li = drr_li[None, None]
    return {
        "drr_li": drr_li,
        "lung_li": lung_li,
        "drr": to_display(li, *display_window(li))[0, 0].clamp(0, 1),
        "lung": (lung_li / cfg.lung_scale).clamp(0, 1),
        "lung_mask": (proj[2] >= 1.0).float(),
        "nodule_mask": (proj[3] >= 1.0).float(),
        "meta": {
            "case": case.name,
            "mask_source": case.mask_source,
            "rotation_deg": [float(a) for a in (ax, ay, az)],
            "flip_lr": flip,
            "nodules": [
                {"center_voxel": list(n.center), "semi_axes_mm": list(n.semi_axes_mm), "hu": n.hu, "diameter_mm": n.diameter_mm}
                for n in nodules
            ],
        },
    }


def _save_png(path: Path, img: torch.Tensor, bits: int) -> None:
    from PIL import Image

    a = img.detach().cpu().numpy().clip(0, 1)
    with atomic_path(path) as tmp:
        if bits == 16:
            Image.fromarray((a * 65535 + 0.5).astype(np.uint16)).save(tmp, format="PNG")
        else:
            Image.fromarray((a * 255 + 0.5).astype(np.uint8)).save(tmp, format="PNG")


def sample_complete(out: Path, name: str) -> bool:
    """Whether sample ``name`` of folder ``out`` has all its PNGs and its ``meta`` JSON."""
    return (out / "meta" / f"{name}.json").is_file() and all((out / f / f"{name}.png").is_file() for f in FOLDERS)


def write_sample(out: Path, name: str, s: dict) -> None:
    """Write one rendered sample (see module docstring); ``meta`` last, marking it complete."""
    from cxrdecomp.preprocess import he_clahe

    _save_png(out / "drr" / f"{name}.png", s["drr"], 16)
    _save_png(out / "input" / f"{name}.png", he_clahe(s["drr"][None, None])[0, 0], 16)
    _save_png(out / "lung" / f"{name}.png", s["lung"], 16)
    _save_png(out / "lung_mask" / f"{name}.png", s["lung_mask"], 8)
    _save_png(out / "nodule_mask" / f"{name}.png", s["nodule_mask"], 8)
    with atomic_path(out / "meta" / f"{name}.json") as tmp:
        tmp.write_text(json.dumps(s["meta"], indent=1) + "\n")


def simulate(
    out: str | os.PathLike,
    n: int,
    cases: Sequence[LungCase] | None = None,
    cfg: LungSimConfig | None = None,
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
    prefix: str = "",
    workers: int = 4,
) -> Path:
    """Write ``n`` simulated views into ``out`` (resumable; see the module docstring).

    Sample ``i`` uses the random stream ``(seed, i)`` and case ``i mod len(cases)``, so a rerun
    reproduces the same samples and skips those already complete.

    Args:
        out: output folder.
        n: number of views.
        cases: CT cases (default: the example CT with its lobe labels).
        cfg: simulation parameters.
        seed: random seed (use different seeds for train and validation).
        device: ``"cuda"`` / ``"cpu"`` (default: CUDA when available).
        workers: threads for HE + CLAHE and PNG writing.

    Raises:
        ConfigError: ``n < 1``, or ``out`` holds a simulation with other parameters.
        DataNotFoundError: the example CT cannot be fetched.
    """
    if n < 1:
        raise ConfigError(f"number of samples must be ≥ 1, got {n}")
    cfg = cfg or LungSimConfig()
    out = Path(out)
    params = {**asdict(cfg), "seed": seed}
    params = json.loads(json.dumps(params))
    manifest = out / "simulation.json"
    if manifest.is_file():
        old = json.loads(manifest.read_text())
        if {k: v for k, v in old.items() if k != "cases"} != params:
            raise ConfigError(f"{out} holds a simulation with other parameters ({manifest}); use a new folder")
    todo = [i for i in range(n) if not sample_complete(out, f"{prefix}{i:05d}")]
    if not todo:
        return out
    if cases is None:
        cases = [example_case()]
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    with atomic_path(manifest) as tmp:
        tmp.write_text(json.dumps({**params, "cases": [c.name for c in cases]}, indent=1) + "\n")
    cases = [downsample_case(c, auto_downsample_factor(c, cfg.size)) for c in cases]
    mus: dict[str, torch.Tensor] = {}
    it = todo
    if progress:
        from rich.progress import track

        it = track(todo, description=f"simulating {len(todo)}/{n} lung views")
    # rendering runs on the device in this thread; HE + CLAHE and PNG encoding in a thread pool
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending = []
        for i in it:
            case = cases[i % len(cases)]
            if case.name not in mus:
                mus = {case.name: torch.from_numpy(hu_to_mu(np.asarray(case.hu, dtype=np.float32), cfg.mu_water)).to(dev)}
            rng = np.random.default_rng([seed, i])
            s = render_sample(case, rng, cfg, dev, mu=mus[case.name])
            pending.append(pool.submit(write_sample, out, f"{prefix}{i:05d}", s))
            if len(pending) > 4 * max(1, workers):
                pending.pop(0).result()
        for f in pending:
            f.result()
    return out
