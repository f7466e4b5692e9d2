"""Regenerate docs/results.md (issue 4 §4) with one command.

    python scripts/results.py                           # bse-jsrt/val + des-dev, every bundled method; ranks them
    python scripts/results.py --simulated SIMDIR        # also held-out simulated pairs
    python scripts/results.py --pairs DIR -o docs/results.md --device cuda

Evaluates every checkpoint in ``cxrdecomp.checkpoint.available_pretrained()`` on the 12 validation pairs
of bse-jsrt (``$CXRDECOMP_BSE_JSRT`` or ../shared/data/bse-jsrt; lung-field metrics too) and the 6 real
dual-energy pairs of des-dev (``$CXRDECOMP_DES_DEV``), prints the identity baseline beside them, lists the
papers' published numbers with the data differences stated, and writes the best model by real-radiograph
score as the default (src/cxrdecomp/pretrained/ranking.json). Same as ``cxrdecomp evaluate --results``.
Per-method CSV/JSON/grids go to out/results/<set>/<method>/.
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
    ap.add_argument("--des", type=Path, default=None, help="real dual-energy pairs (default: des-dev)")
    ap.add_argument("--no-ranking", action="store_true", help="do not write pretrained/ranking.json (the default model)")
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md",
                    help="also put the 'which model to pick' table between the results markers of this file ('' to skip)")
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
        p = write_results_page(a.out, pairs=a.pairs, des=a.des, simulated=a.simulated, device=a.device, work=a.work,
                               ranking=not a.no_ranking)
    except CxrdecompError as e:
        print(f"results: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {p}")
    if str(a.readme) and a.readme.is_file():
        update_readme(a.readme, p)
        print(f"updated the table in {a.readme}")
    return 0


START, END = "<!-- results:start (scripts/results.py) -->", "<!-- results:end -->"


def update_readme(readme: Path, page: Path) -> None:
    """Replace the block between START and END in ``readme`` by the page's "Which model to pick" table."""
    lines = page.read_text().splitlines()
    i = lines.index("## Which model to pick")
    table = []
    for line in lines[i + 1 :]:
        if line.startswith("## "):
            break
        if line.startswith("|"):
            table.append(line)
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme} has no {START} ... {END} block")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(head + START + "\n" + "\n".join(table) + "\n" + END + tail)


if __name__ == "__main__":
    sys.exit(main())
