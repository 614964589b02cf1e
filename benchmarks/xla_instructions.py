"""Per-step host cost of fitkit on XLA against the raw torch_xla loop, in instructions.

Wall-clock time on a shared 2-core VM moves by more than the 3 % this benchmark is
about (see ``docs/benchmarks.md``), so this counts instructions with valgrind's
callgrind, which gives the same count for the same work whatever else the machine is
doing. Each variant of ``benchmarks/xla.py`` (``raw`` and ``fitkit``) runs cold, once
with ``--short`` steps and once with ``--long`` steps, in a fresh interpreter under
callgrind with one profile per thread. The per-step cost is the difference of the two
runs divided by the difference in steps, which cancels the imports, the compilations
and the Trainer's set-up:

* **training thread** (thread 1, Python's main thread): tracing the graph, dispatch,
  the framework's Python, and the wait for each batch. This is the work fitkit can add.
* **all threads**: also the XLA runtime executing the graphs and the loader's threads;
  the runtime's worker threads spin while idle, so this figure is less steady.

Both variants trace the same graphs (``benchmarks/xla.py`` checks compile and execution
counts; torch_xla's op counters agree op for op), so a ratio near 1.0 for the
training thread means fitkit's loop adds next to nothing per step.

Usage (slow: each run takes minutes under callgrind; the four run two at a time)::

    PJRT_DEVICE=CPU .venv-xla/bin/python benchmarks/xla_instructions.py
    PJRT_DEVICE=CPU .venv-xla/bin/python benchmarks/xla_instructions.py --short 10 --long 210

Results go to ``benchmarks/results/xla_instructions.json`` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "xla_instructions.json"
VARIANTS = ("raw", "fitkit")


def _counts(folder: Path) -> dict[int, int]:
    """Instructions per thread from callgrind's per-thread files (``cg.<pid>-<thread>``)."""
    counts = {}
    for path in folder.glob("cg.*-*"):
        thread = int(path.name.rsplit("-", 1)[1])
        match = re.search(r"^(?:summary|totals): (\d+)", path.read_text(errors="replace"), re.MULTILINE)
        if match:
            counts[thread] = int(match.group(1))
    if 1 not in counts:
        raise RuntimeError(f"callgrind wrote no profile for the main thread in {folder}")
    return counts


def _run(variant: str, steps: int, work: Path) -> dict[str, Any]:
    folder = work / f"{variant}-{steps}"
    folder.mkdir()
    command = [
        "valgrind",
        "--tool=callgrind",
        "--separate-threads=yes",
        f"--callgrind-out-file={folder}/cg.%p",
        sys.executable,
        str(HERE / "xla.py"),
        "--count-only",
        variant,
        "--steps",
        str(steps),
    ]
    out = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PJRT_DEVICE": "CPU"})
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{out.stderr[-3000:]}")
    counts = _counts(folder)
    cold = json.loads(out.stdout.strip().splitlines()[-1])
    return {"main": counts[1], "all": sum(counts.values()), "compiles": cold["compiles"], "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--short", type=int, default=10)
    parser.add_argument("--long", type=int, default=210)
    parser.add_argument("--jobs", type=int, default=2, help="callgrind runs at a time")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is not installed (Debian: apt-get install valgrind)")
    if args.long <= args.short:
        sys.exit(f"--long ({args.long}) must be larger than --short ({args.short})")

    with tempfile.TemporaryDirectory() as tmp:
        jobs = [(v, s) for v in VARIANTS for s in (args.short, args.long)]
        with ThreadPoolExecutor(args.jobs) as pool:
            runs = dict(zip(jobs, pool.map(lambda job: _run(*job, Path(tmp)), jobs), strict=True))

    steps = args.long - args.short
    results: dict[str, Any] = {}
    for variant in VARIANTS:
        short, long = runs[(variant, args.short)], runs[(variant, args.long)]
        results[variant] = {
            "training_thread_per_step": (long["main"] - short["main"]) / steps,
            "all_threads_per_step": (long["all"] - short["all"]) / steps,
            "compiles": [short["compiles"], long["compiles"]],
            "runs": [short, long],
        }
    raw = results["raw"]
    for variant in VARIANTS:
        r = results[variant]
        r["training_thread_vs_raw"] = raw["training_thread_per_step"] / r["training_thread_per_step"]
        r["all_threads_vs_raw"] = raw["all_threads_per_step"] / r["all_threads_per_step"]
        print(
            f"{variant:>7}: {r['training_thread_per_step'] / 1e6:7.3f} M instructions per step in the training "
            f"thread ({r['training_thread_vs_raw']:.3f} x raw's speed), {r['all_threads_per_step'] / 1e6:7.3f} M "
            f"in all threads ({r['all_threads_vs_raw']:.3f}), compilations {r['compiles']}"
        )
    report = {"benchmark": "xla_instructions", "short": args.short, "long": args.long, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
