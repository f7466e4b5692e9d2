"""Score bone-suppression results against paired truth: per-image CSV, summary JSON, figure grid.

Three sources of predictions, one scoring path (:func:`score_images`):

* a cxrdecomp method: ``evaluate_pairs(DIR, OUT, method="bone")`` runs
  :class:`cxrdecomp.decomposer.Decomposer` on every ``DIR/cxr/NAME`` and scores its ``soft_tissue``;
* another tool's outputs: ``evaluate_pairs(DIR, OUT, pred_dir=PRED)`` reads ``PRED/NAME.*``;
* held-out simulated pairs: ``evaluate_simulated(SIMDIR, OUT, method=...)``.

Conventions (docs/metrics.md): everything is scored in the **display domain** ``[0, 1]`` (air dark, bone
bright) with ``data_range = 1``, at the **truth's resolution** (1024² for bse-jsrt). A prediction of a
different size is resized to the truth (bilinear) and the CSV says so; 8-bit files are divided by 255,
16-bit files by 65535, float TIFF / ``.npy`` files are taken as already in ``[0, 1]``. Predictions are
clipped to ``[0, 1]`` (what any image file would hold). The identity baseline (the radiograph returned
unchanged) is always scored alongside, since PSNR and SSIM are already high for it (38.44 dB, SSIM 0.9910
on bse-jsrt/val).

Outputs (each written atomically): ``OUT/per_image.csv`` (one row per image and prediction source),
``OUT/summary.json`` (per source and metric: mean, std, median, n) and ``OUT/grid.png`` (input,
prediction, truth, |prediction − truth| × 10 for the first images).
"""

from cxrdecomp.evaluate.report import write_results_page
from cxrdecomp.evaluate.run import evaluate_pairs, evaluate_simulated, format_table
from cxrdecomp.evaluate.scoring import (
    IDENTITY,
    LUNG_METRICS,
    METRIC_INFO,
    METRICS,
    Sample,
    read_image01,
    run_evaluation,
    score_images,
    summarize,
    write_grid,
)
from cxrdecomp.evaluate.sources import iter_pairs, iter_simulated

__all__ = [
    "IDENTITY", "LUNG_METRICS", "METRICS", "METRIC_INFO", "Sample", "evaluate_pairs", "evaluate_simulated", "format_table",
    "iter_pairs", "iter_simulated", "read_image01", "run_evaluation", "score_images", "summarize", "write_grid",
    "write_results_page",
]
