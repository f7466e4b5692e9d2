"""The results page (docs/results.md): every bundled method on the real pairs, identity alongside, and the
papers' published numbers with what differs from the data scored here."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from cxrdecomp.evaluate.run import evaluate_pairs, evaluate_simulated
from cxrdecomp.io.atomic import atomic_path
from cxrdecomp.evaluate.scoring import IDENTITY, run_evaluation
from cxrdecomp.evaluate.sources import EDITED, iter_pairs

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

PUBLISHED.append({
    "paper": "XraySyn (3DPN + 2DRN; bone suppression by reversing CT2Xray)",
    "task": "novel views; soft-tissue image",
    "numbers": "3DPN novel view T′: I_CT 27.22 dB / 0.929, t_bone 21.63 / 0.780, t_tissue 24.27 / 0.860; real radiographs, "
               "input-view reconstruction 3DPN 22.75 / 0.819, XraySyn 30.33 / 0.865; no bone-suppression score",
    "data": "their 128³ CTs (LIDC) and NIH radiographs; our held-out deformations of one CT (docs/xraysyn.md, "
            "scripts/xraysyn_eval.py) are not comparable cases",
})

PAGE_COLUMNS = [("psnr", "PSNR dB", 2), ("ssim", "SSIM", 4), ("ssim_uniform7", "SSIM u7", 4), ("ms_ssim", "MS-SSIM", 4),
                ("bsr", "BSR", 3), ("bsr_tm", "BSR tone-matched", 3), ("bsr_bsldm", "BSR (BS-LDM code)", 3), ("rmae", "RMAE", 4), ("rmse", "RMSE x255", 2),
                ("mae", "MAE", 4)]


LUNG_COLUMNS = [("bsr_lung", "lung-field BSR", 3), ("mae_lung", "lung-field MAE", 4)]


def _cell(stat: dict, key: str, digits: int) -> str:
    if not stat or stat.get("n", 0) == 0 or stat.get("mean") is None:
        return "–"
    k = 255.0 if key == "rmse" else 1.0
    return f"{stat['mean'] * k:.{digits}f} ± {stat['std'] * k:.{digits}f}"


def _table(rows: list[tuple[str, dict]], lung: bool = False) -> list[str]:
    cols = PAGE_COLUMNS + (LUNG_COLUMNS if lung else [])
    head = "| prediction | " + " | ".join(c[1] for c in cols) + " |"
    lines = [head, "|" + "---|" * (len(cols) + 1)]
    for name, res in rows:
        lines.append(f"| {name} | " + " | ".join(_cell(res.get(k, {}), k, d) for k, _, d in cols) + " |")
    return lines


def _identity_summary(pairs: Path, out: Path, mask_dir=None) -> dict:
    names, gen, _ = iter_pairs(pairs, mask_dir=mask_dir)

    def ident():
        for s in gen():
            s.pred = s.image
            yield s

    return run_evaluation(ident(), out, label="input", progress=False, total=len(names))


from cxrdecomp.methods import RANKING  # noqa: E402 - the file naming the default model, read by methods.default_checkpoint

CRITERION = ("tone-matched BSR on des-dev: real dual-energy pairs, every bone removed, from other hospitals and "
             "processing than any training data (bse-jsrt/val is in-domain for the models trained on BSE-JSRT and keeps "
             "clavicles and spine, so it is shown, not used to choose)")


def real_score(des_tm: float | None) -> float | None:
    """The real-radiograph score that ranks the bundled models (:data:`CRITERION`); ``None`` when not measured."""
    return None if des_tm is None else float(des_tm)


def _mean(res: dict, key: str) -> float | None:
    v = (res or {}).get(key) or {}
    return v.get("mean") if v.get("n") else None


def _trained_on(cfg: dict) -> str:
    o = (cfg.get("training") or {}).get("options") or {}
    if cfg.get("method") in ("dae", "bsdiff"):
        return "BSE-JSRT pairs"
    if cfg.get("method") == "xraysyn":
        real = " on BSE-JSRT radiographs (L1 + LSGAN)" if o.get("stage") == "real" else ""
        return "CT deformation bank (CT2Xray)" + (" + 2DRN" + real if (cfg.get("model") or {}).get("refine") else "")
    src = "CT simulation" if o.get("online") else "stored CT simulation"
    return src + (" + BSE-JSRT lung fields" if o.get("real_pairs") else "")


def _per_image(folder: Path, key: str) -> dict[str, float]:
    import csv

    f = folder / "per_image.csv"
    if not f.is_file():
        return {}
    with open(f, newline="") as fh:
        return {r["name"]: float(r[key]) for r in csv.DictReader(fh) if r.get(key) not in (None, "")}


def _fmt(v: float | None, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def write_results_page(path: str | os.PathLike = "docs/results.md", *, pairs: str | os.PathLike | None = None,
                       des: str | os.PathLike | None = None, simulated: str | os.PathLike | None = None,
                       device: str | None = None, work: str | os.PathLike = "out/results", ranking: bool = True) -> Path:
    """Evaluate every bundled method (:func:`cxrdecomp.checkpoint.available_pretrained`) on the real pairs of
    bse-jsrt/val (with lung-field metrics, ``--masks edited``) and des-dev (real dual-energy pairs), and on held-out
    simulated pairs when ``simulated`` is given; write the results page ``path`` (Markdown): a "which model" table,
    every metric per set, the identity baseline and the papers' published numbers with the data differences.

    With ``ranking`` and des-dev scored, the bundled models are ranked by :func:`real_score` and the best
    is written as the default (``pretrained/ranking.json``, read by :func:`cxrdecomp.methods.default_checkpoint`).
    Per-method outputs (CSV, JSON, grids) go to ``work/<set>/<name>/``.

    Raises:
        DataNotFoundError: the bse-jsrt pairs are not found (set ``$CXRDECOMP_BSE_JSRT`` or pass ``pairs``).
    """
    import datetime
    import json
    import platform

    from cxrdecomp import __version__
    from cxrdecomp import checkpoint as ckpt
    from cxrdecomp.data.pairs import default_bse_jsrt, default_des_dev
    from cxrdecomp.errors import CxrdecompError

    pairs = Path(pairs) if pairs is not None else default_bse_jsrt() / "val"
    des = Path(des) if des is not None else default_des_dev()
    work = Path(work)
    sets = [("bse-jsrt/val", pairs, EDITED)] + ([("des-dev", des, None)] if (des / "cxr").is_dir() else [])
    methods = ckpt.available_pretrained()
    results: dict[str, dict[str, dict]] = {}
    info: dict[str, dict] = {}
    idents: dict[str, dict] = {}
    skipped: dict[str, str] = {}
    for set_name, root, mask in sets:
        key = set_name.replace("/", "-")
        idents[set_name] = _identity_summary(root, work / key / "identity", mask)
        results[set_name] = {}
        for name in methods:
            if name in skipped:
                continue
            try:
                s = evaluate_pairs(root, work / key / name, method=name, checkpoint=name, mask_dir=mask, device=device, progress=False)
            except CxrdecompError as e:
                skipped[name] = str(e)
                continue
            results[set_name][name] = s["results"][name]
            info[name] = {"method": s.get("method"), "size": s.get("input_size"), "cfg": ckpt.load_config(name)}
    scored = [n for n in methods if n in info]
    sim_rows: list[tuple[str, dict]] = []
    if simulated is not None:
        for name in scored:
            t = evaluate_simulated(simulated, work / "simulated" / name, method=name, checkpoint=name, device=device, progress=False)
            if not sim_rows:
                sim_rows.append(("identity (input unchanged)", t["results"][IDENTITY]))
            sim_rows.append((name, t["results"][name]))

    bse, dd = results.get("bse-jsrt/val", {}), results.get("des-dev")
    scores = {n: real_score(_mean((dd or {}).get(n), "bsr_tm")) for n in scored}
    ranked = sorted((n for n in scored if scores[n] is not None), key=lambda n: -scores[n])
    default = ranked[0] if ranked else None
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
        "## Which model to pick",
        "",
        "Two real targets, two different tasks: **bse-jsrt/val** (BSE-JSRT) removes the ribs only inside the lung fields "
        "and keeps clavicles and spine; **des-dev** (dual-energy subtraction) removes every bone. A model trained on "
        "BSE-JSRT alone cannot learn to remove clavicles or spine. *Lung-field BSR* scores bse-jsrt/val inside the lung "
        "fields only (`evaluate --masks edited`); *tone-matched BSR* scores des-dev after a per-image linear tone fit of "
        "prediction and identity alike (its soft-tissue images were processed differently from their radiographs).",
        "",
        f"The default model (`decompose`, `Decomposer.from_pretrained()`, `evaluate` and `make demo` without `--method`) is "
        f"the best by the {CRITERION}.",
        "",
        "| model | network, input | trained on | bse-jsrt/val BSR | lung-field BSR | des-dev BSR | des-dev BSR tone-matched "
        "| des-dev PSNR dB |",
        "|---|---|---|---|---|---|---|---|",
        f"| identity (input unchanged) | – | – | 0.000 | 0.000 | {'0.000' if dd is not None else '–'} | "
        f"{'0.000' if dd is not None else '–'} | {_fmt(_mean(idents.get('des-dev', {}).get('results', {}).get('input'), 'psnr'), 2)} |",
    ]
    for n in sorted(scored, key=lambda n: -(scores[n] if scores[n] is not None else -9)):
        i = info[n]
        mark = " **(default)**" if n == default else ""
        L.append(f"| {n}{mark} | `{i['method']}`, {i['size']}² | {_trained_on(i['cfg'])} | {_fmt(_mean(bse.get(n), 'bsr'))} | "
                 f"{_fmt(_mean(bse.get(n), 'bsr_lung'))} | {_fmt(_mean((dd or {}).get(n), 'bsr'))} | "
                 f"{_fmt(_mean((dd or {}).get(n), 'bsr_tm'))} | {_fmt(_mean((dd or {}).get(n), 'psnr'), 2)} |")
    L.append("")
    if dd is None:
        L += [f"des-dev was not found at `{rel(des)}`: no score, no ranking (set `$CXRDECOMP_DES_DEV`).", ""]
    if skipped:
        L += ["Not scored (not a bone-suppression model or failed): "
              + "; ".join(f"`{n}`: {e}" for n, e in skipped.items()), ""]
    descriptions = {"bse-jsrt/val": "JSRT radiographs with BSE-JSRT soft-tissue images; ribs removed only inside the lung "
                                    "fields, clavicles kept", "des-dev": "real dual-energy pairs, every bone removed; "
                                    "their soft-tissue images' tone differs from the radiographs'"}
    for set_name, root, _ in sets:
        ident = idents[set_name]
        n_img = ident["n_images"]
        rows = [("identity (input unchanged)", ident["results"]["input"])]
        rows += [(f"{n} (`{info[n]['method']}`, {info[n]['size']}²)", results[set_name][n]) for n in scored if n in results[set_name]]
        L += [f"## Real pairs: {set_name} ({n_img} pairs)", "", f"Data: `{rel(root)}` ({descriptions[set_name]}).", "", *_table(rows, set_name == "bse-jsrt/val"), ""]
        if set_name == "des-dev":
            key = set_name.replace("/", "-")
            per = {n: _per_image(work / key / n, "bsr_tm") for n in scored}
            names = sorted(_per_image(work / key / "identity", "psnr"))
            L += ["Six pairs are few: the tone-matched BSR per image.", "",
                  "| image | " + " | ".join(scored) + " |", "|---|" + "---|" * len(scored)]
            L += [f"| {im} | " + " | ".join(_fmt(per[n].get(im)) for n in scored) + " |" for im in names]
            L.append("")
    if not methods:
        L += ["No bundled checkpoint was found (`cxrdecomp.checkpoint.available_pretrained()` is empty): only the "
              "identity baseline is shown.", ""]
    L += ["## Held-out simulated pairs", ""]
    if sim_rows:
        L += [f"Data: `{rel(simulated)}` (held-out poses / CTs written by `cxrdecomp simulate`).", "", *_table(sim_rows), ""]
    else:
        L += ["Not run: regenerate with `python scripts/results.py --simulated SIMDIR` once held-out simulated pairs "
              "exist (`cxrdecomp simulate ... --split val`).", ""]
    L += ["## Published numbers (not measured here)", "",
          "| paper | target | published | data and definitions differ how |", "|---|---|---|---|"]
    L += [f"| {p['paper']} | {p['task']} | {p['numbers']} | {p['data']} |" for p in PUBLISHED]
    L += ["", "Per-image values, summaries and figure grids: `" + rel(work) + "/<set>/<method>/` (not committed).", ""]
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(L))
    if ranking and default is not None and dd is not None:
        doc = {"criterion": CRITERION, "default": default, "date": datetime.date.today().isoformat(),
               "scores": {n: {"score": scores[n], "bse_jsrt_val": {k: _mean(bse.get(n), k) for k in ("bsr", "bsr_lung", "psnr")},
                              "des_dev": {k: _mean(dd.get(n), k) for k in ("bsr", "bsr_tm", "psnr")}} for n in ranked}}
        with atomic_path(ckpt.PRETRAINED_DIR / RANKING) as tmp:
            tmp.write_text(json.dumps(doc, indent=2) + "\n")
    return path
