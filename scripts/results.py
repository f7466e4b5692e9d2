"""Regenerate docs/results.md (issue 4 §4) with one command.

    python scripts/results.py                           # bse-jsrt/val, every bundled method
    python scripts/results.py --simulated SIMDIR        # also held-out simulated pairs
    python scripts/results.py --pairs DIR -o docs/results.md --device cuda

Evaluates every checkpoint in ``cxrdecomp.checkpoint.available_pretrained()`` on the 12 validation pairs
of bse-jsrt (``$CXRDECOMP_BSE_JSRT`` or ../shared/data/bse-jsrt), prints the identity baseline beside
them, and lists the papers' published numbers with the data differences stated. Same as
``cxrdecomp evaluate --results``. Per-method CSV/JSON/grids go to out/results/<method>/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Regenerate docs/results.md")
    ap.add_argument("--pairs", type=Path, default=None, help="paired folder (default: bse-jsrt/val)")
    ap.add_argument("--simulated", type=Path, default=None, help="held-out simulated pairs (cxrdecomp simulate)")
    ap.add_argument("-o", "--out", type=Path, default=ROOT / "docs" / "results.md")
    ap.add_argument("--work", type=Path, default=ROOT / "out" / "results")
    ap.add_argument("--device", default=None)
    a = ap.parse_args(argv)

    import torch

    torch.set_num_threads(min(4, torch.get_num_threads()))
    from cxrdecomp.errors import CxrdecompError
    from cxrdecomp.evaluate import write_results_page

    try:
        p = write_results_page(a.out, pairs=a.pairs, simulated=a.simulated, device=a.device, work=a.work)
    except CxrdecompError as e:
        print(f"results: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
