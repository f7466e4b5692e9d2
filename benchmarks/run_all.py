"""Run every benchmark script in benchmarks/ (``make bench``), one after another, in fresh processes.

    python benchmarks/run_all.py            # all scripts with their default settings
    python benchmarks/run_all.py --quick    # passes --quick to the scripts that accept it (smoke run)
    python benchmarks/run_all.py --only methods drr

Each script prints its own figures with ratios against a baseline measured in the same run; this runner
adds the machine description, each script's wall time, and a final status line. Exit code 1 when any
script failed. Record the figures with the machine description in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def scripts(only: list[str] | None = None) -> list[Path]:
    """Benchmark scripts: ``benchmarks/*.py`` except this runner and private/helper modules (``_*.py``)."""
    found = sorted(p for p in HERE.glob("*.py") if p.name != Path(__file__).name and not p.name.startswith("_"))
    if only:
        found = [p for p in found if p.stem in only]
    return found


def accepts(script: Path, flag: str) -> bool:
    """Whether a script mentions ``flag`` (cheap check, avoids an extra process per script)."""
    return flag in script.read_text(errors="replace")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="pass --quick to the scripts that accept it")
    ap.add_argument("--only", nargs="*", default=None, help="script names (without .py) to run")
    a = ap.parse_args(argv)
    todo = scripts(a.only)
    print(f"# cxrdecomp benchmarks: {len(todo)} script(s) on {platform.node()} ({platform.platform()}, "
          f"{os.cpu_count()} logical CPUs, Python {platform.python_version()})", flush=True)
    src = str(HERE.parent / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    failed = []
    for s in todo:
        cmd = [sys.executable, str(s)] + (["--quick"] if a.quick and accepts(s, "--quick") else [])
        print(f"\n## {s.name}: {' '.join(Path(c).name if i < 2 else c for i, c in enumerate(cmd))}", flush=True)
        t = time.perf_counter()
        rc = subprocess.call(cmd, env=env, cwd=HERE.parent)
        print(f"-- {s.name}: exit {rc}, {time.perf_counter() - t:.1f} s", flush=True)
        if rc != 0:
            failed.append(s.name)
    print(f"\n{len(todo) - len(failed)}/{len(todo)} benchmark script(s) succeeded" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
