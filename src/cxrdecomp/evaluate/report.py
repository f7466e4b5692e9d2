"""The results page (docs/results.md): every bundled method on the real pairs, identity alongside, and the
papers' published numbers with what differs from the data scored here."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from cxrdecomp.evaluate.run import evaluate_pairs, evaluate_simulated
from cxrdecomp.io.atomic import atomic_path
from cxrdecomp.evaluate.scoring import IDENTITY, run_evaluation
from cxrdecomp.evaluate.sources import iter_pairs

#: numbers the papers publish, with what differs from the data scored here
PUBLISHED = [
    {
        "paper": "Bone structures extraction and enhancement in chest radiographs via CNN trained on synthetic data (bone_unet)",
        "task": "bone image",
        "numbers": "RMSE 19.25 (8-bit units), PSNR 22.6 dB, SSIM 0.70, MS-SSIM 0.84",
        "data": "held-out simulated DRR pairs from the authors' CTs; scores the *bone* image. Its RMSE/PSNR equal "
                "those of the soft-tissue image (B̂ − B = S − Ŝ), its SSIM does not; compare with the simulated table "
                "(RMSE x255), not with bse-jsrt.",
    },
    {
        "paper": "Lung structures enhancement in chest radiographs via CT based FCNN training (lung method)",
        "task": "lung X-ray image",
        "numbers": "MAE 0.082, MSE 0.03, PSNR 24.98 dB, SSIM 0.80",
        "data": "held-out simulated lung X-rays from the authors' CTs; a different target (lung structures, not soft "
                "tissue), so it has no row in the bone-suppression tables here.",
    },
    {
        "paper": "Disentanglement AutoEncoder for bone suppression (DAE + MS-SSIM loss)",
        "task": "soft-tissue / bone image",
        "numbers": "BSR 0.91, RMAE 0.0091, PSNR 30.8 dB, SSIM 0.970",
        "data": "JSRT / BSE-JSRT like ours, but the authors' own split and resolution; their BSR and RMAE code is not "
                "public (our bsr follows Yang et al. 2017, our rmae divides by the true bone image's span).",
    },
    {
        "paper": "BS-Diff (conditional diffusion for bone suppression)",
        "task": "soft-tissue image",
        "numbers": "BSR 0.988, MSE 0.0002, SSIM 0.937, PSNR 38.25 dB",
        "data": "a private dual-energy-subtraction set (not BSE-JSRT); its BSR is most likely the mean-shift variant of "
                "the same group's BS-LDM code (our bsr_bsldm). Note that returning the input already scores "
                "PSNR 38.44 dB on bse-jsrt/val.",
    },
]

PAGE_COLUMNS = [("psnr", "PSNR dB", 2), ("ssim", "SSIM", 4), ("ssim_uniform7", "SSIM u7", 4), ("ms_ssim", "MS-SSIM", 4),
                ("bsr", "BSR", 3), ("bsr_tm", "BSR tone-matched", 3), ("bsr_bsldm", "BSR (BS-LDM code)", 3), ("rmae", "RMAE", 4), ("rmse", "RMSE x255", 2),
                ("mae", "MAE", 4)]


def _cell(stat: dict, key: str, digits: int) -> str:
    if not stat or stat.get("n", 0) == 0 or stat.get("mean") is None:
        return "–"
    k = 255.0 if key == "rmse" else 1.0
    return f"{stat['mean'] * k:.{digits}f} ± {stat['std'] * k:.{digits}f}"


def _table(rows: list[tuple[str, dict]]) -> list[str]:
    head = "| prediction | " + " | ".join(c[1] for c in PAGE_COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(PAGE_COLUMNS) + 1)]
    for name, res in rows:
        lines.append(f"| {name} | " + " | ".join(_cell(res.get(k, {}), k, d) for k, _, d in PAGE_COLUMNS) + " |")
    return lines


def _identity_summary(pairs: Path, out: Path) -> dict:
    names, gen, _ = iter_pairs(pairs)

    def ident():
        for s in gen():
            s.pred = s.image
            yield s

    return run_evaluation(ident(), out, label="input", progress=False, total=len(names))


def write_results_page(path: str | os.PathLike = "docs/results.md", *, pairs: str | os.PathLike | None = None,
                       simulated: str | os.PathLike | None = None, device: str | None = None,
                       work: str | os.PathLike = "out/results") -> Path:
    """Evaluate every bundled method (:func:`cxrdecomp.checkpoint.available_pretrained`) on bse-jsrt/val (and on
    held-out simulated pairs when ``simulated`` is given) and write the results page ``path`` (Markdown):
    our numbers, the identity baseline and the papers' published numbers with the data differences.

    Per-method outputs (CSV, JSON, grids) go to ``work/<name>/``.

    Raises:
        DataNotFoundError: the bse-jsrt pairs are not found (set ``$CXRDECOMP_BSE_JSRT`` or pass ``pairs``).
    """
    import datetime
    import platform

    from cxrdecomp import __version__
    from cxrdecomp import checkpoint as ckpt
    from cxrdecomp.data.pairs import default_bse_jsrt
    from cxrdecomp.errors import CxrdecompError

    pairs = Path(pairs) if pairs is not None else default_bse_jsrt() / "val"
    work = Path(work)
    ident = _identity_summary(pairs, work / "identity")
    real_rows = [("identity (input unchanged)", ident["results"]["input"])]
    sim_rows: list[tuple[str, dict]] = []
    skipped: list[str] = []
    methods = ckpt.available_pretrained()
    for name in methods:
        try:
            s = evaluate_pairs(pairs, work / name, method=name, checkpoint=name, device=device, progress=False)
            real_rows.append((f"{name} (`{s.get('method')}`, {s.get('input_size')}²)", s["results"][name]))
            if simulated is not None:
                t = evaluate_simulated(simulated, work / f"{name}-simulated", method=name, checkpoint=name, device=device, progress=False)
                if not sim_rows:
                    sim_rows.append(("identity (input unchanged)", t["results"][IDENTITY]))
                sim_rows.append((name, t["results"][name]))
        except CxrdecompError as e:
            skipped.append(f"`{name}`: {e}")
    n = ident["n_images"]
    base = Path(path).resolve().parent.parent  # the repository root for docs/results.md

    def rel(p) -> str:
        try:
            return os.path.relpath(Path(p).resolve(), base)
        except ValueError:
            return str(p)

    L = [
        "# Results",
        "",
        "Generated by `python scripts/results.py` (the same as `cxrdecomp evaluate --results`); do not edit by hand.",
        f"cxrdecomp {__version__}, {datetime.date.today().isoformat()}, {platform.platform()}, "
        f"torch {torch.__version__}, device {device or ('cuda' if torch.cuda.is_available() else 'cpu')}.",
        "",
        "All numbers: mean ± sample std over images, scored on the soft-tissue (bone-suppressed) image in the display "
        "domain [0, 1] with data_range = 1, at the truth's resolution. Definitions: [metrics.md](metrics.md). "
        "BSR: 0 = input returned unchanged, 1 = perfect. RMSE is shown in 8-bit units (x255).",
        "",
        f"## Real pairs: bse-jsrt/val ({n} pairs, 1024², 8-bit PNG)",
        "",
        f"Data: `{rel(pairs)}` (JSRT radiographs with BSE-JSRT soft-tissue images; ribs removed only inside the lung "
        "fields, clavicles kept).",
        "",
        *_table(real_rows),
        "",
    ]
    if not methods:
        L += ["No bundled checkpoint was found (`cxrdecomp.checkpoint.available_pretrained()` is empty): only the "
              "identity baseline is shown.", ""]
    if skipped:
        L += ["Not scored here: " + "; ".join(skipped), ""]
    L += ["## Held-out simulated pairs", ""]
    if sim_rows:
        L += [f"Data: `{rel(simulated)}` (held-out poses / CTs written by `cxrdecomp simulate`).", "", *_table(sim_rows), ""]
    else:
        L += ["Not run: regenerate with `python scripts/results.py --simulated SIMDIR` once held-out simulated pairs "
              "exist (`cxrdecomp simulate ...`).", ""]
    L += ["## Published numbers (not measured here)", "",
          "| paper | target | published | data and definitions differ how |", "|---|---|---|---|"]
    L += [f"| {p['paper']} | {p['task']} | {p['numbers']} | {p['data']} |" for p in PUBLISHED]
    L += ["", "Per-image values, summaries and figure grids: `" + rel(work) + "/<method>/` (not committed).", ""]
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(L))
    return path
