"""What ``import fitkit`` costs on top of ``import torch``, and what it pulls in.

Starts fresh interpreters, interleaved so that drift hits both alike:

* ``torch``: times ``import torch``;
* ``fitkit``: times ``import torch``, then ``import fitkit`` in the same process,
  so each run gives both the total and fitkit's own share (``paired``).

It reports the medians, ``median(fitkit total) - median(torch)``, and the median of
the paired in-process differences (the steadier number, since both halves share one
process's disk cache and CPU state). It then lists the modules that ``import fitkit``
adds beyond ``import torch``: any outside fitkit's own package is a regression
unless it is small and needed (the design notes forbid eager tensorboard, tqdm,
torchvision, ``torch._dynamo``, ``torch_xla``, ...). ``python -X importtime`` gives
the slowest of fitkit's modules.

Usage::

    .venv/bin/python benchmarks/import_time.py                # 7 runs of each
    .venv/bin/python benchmarks/import_time.py --runs 11 --out /tmp/import.json

Results go to ``benchmarks/results/import_time.json`` by default (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "import_time.json"
TARGET_S = 0.15

# Modules fitkit must not import eagerly (checked whether or not torch already did).
WATCHLIST = (
    "tqdm",
    "tensorboard",
    "tensorboardX",
    "torch.utils.tensorboard",
    "numpy",
    "pandas",
    "matplotlib",
    "yaml",
    "torchvision",
    "torch_xla",
    "torch._dynamo",
    "torch._inductor",
    "torch.distributed.fsdp",
    "torch.nn.parallel.distributed",
    "torch.distributed.elastic",
    "lightning",
    "pytorch_lightning",
    "torchmetrics",
    "rich",
    "psutil",
    "packaging",
)

_TIME_TORCH = "import time; t=time.perf_counter(); import torch; print(time.perf_counter()-t)"
_TIME_BOTH = (
    "import time; t=time.perf_counter(); import torch; t1=time.perf_counter(); import fitkit; "
    "print(t1-t, time.perf_counter()-t1)"
)
_MODULES = f"""
import json, sys
import torch
before = set(sys.modules)
import fitkit
added = sorted(set(sys.modules) - before)
watch = {list(WATCHLIST)!r}
print(json.dumps({{
    "added": added,
    "watch_after_torch": [m for m in watch if m in before],
    "watch_after_fitkit": [m for m in watch if m in sys.modules],
}}))
"""


def _python(code: str, *flags: str) -> subprocess.CompletedProcess[str]:
    # Users import from cached bytecode: let the warm-up run write fitkit's .pyc files
    # even where the environment says not to, so no run pays for compiling sources.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return subprocess.run([sys.executable, *flags, "-c", code], capture_output=True, text=True, check=True, env=env)


def _importtime_top(n: int) -> list[dict[str, Any]]:
    """fitkit's (and anything it adds') slowest modules by cumulative import time, torch imported first."""
    err = _python("import torch; import fitkit", "-X", "importtime").stderr
    rows: list[dict[str, Any]] = []
    seen_torch = False
    for line in err.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        parts = [p.strip() for p in line[len("import time:") :].split("|")]
        if not parts[0].isdigit():
            continue
        self_us, cum_us, name = int(parts[0]), int(parts[1]), parts[2]
        if name.strip() == "torch" and not seen_torch:
            seen_torch = True
            continue
        if seen_torch:
            rows.append(
                {
                    "module": name.strip(),
                    "depth": (len(name) - len(name.lstrip())) // 2,
                    "self_ms": self_us / 1e3,
                    "cumulative_ms": cum_us / 1e3,
                }
            )
    best: dict[str, dict[str, Any]] = {}
    for r in rows:  # `from pkg.mod import x` lists pkg.mod again, with a tiny time: keep the real entry
        if r["module"] not in best or r["cumulative_ms"] > best[r["module"]]["cumulative_ms"]:
            best[r["module"]] = r
    return sorted(best.values(), key=lambda r: r["cumulative_ms"], reverse=True)[:n]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=7, help="fresh interpreters of each kind (default 7)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)

    _python("import fitkit")  # warm the disk cache for both kinds alike
    torch_s: list[float] = []
    total_s: list[float] = []
    paired_s: list[float] = []
    for i in range(args.runs):
        order = ("torch", "fitkit") if i % 2 == 0 else ("fitkit", "torch")
        for kind in order:
            if kind == "torch":
                torch_s.append(float(_python(_TIME_TORCH).stdout))
            else:
                t_torch, t_fitkit = map(float, _python(_TIME_BOTH).stdout.split())
                total_s.append(t_torch + t_fitkit)
                paired_s.append(t_fitkit)

    med_torch, med_total, med_paired = (statistics.median(v) for v in (torch_s, total_s, paired_s))
    mods = json.loads(_python(_MODULES).stdout)
    outside = sorted({m for m in mods["added"] if m.split(".")[0] != "fitkit"})
    new_watch = sorted(set(mods["watch_after_fitkit"]) - set(mods["watch_after_torch"]))
    top = _importtime_top(10)

    print(f"python {platform.python_version()}, {args.runs} fresh interpreters of each kind, interleaved (median)")
    print(f"  import torch                       {med_torch:8.3f} s")
    print(f"  import torch + fitkit              {med_total:8.3f} s")
    print(f"  difference of medians              {med_total - med_torch:8.3f} s")
    verdict = "ok" if med_paired <= TARGET_S else "MISSED"
    print(f"  import fitkit after torch (paired) {med_paired:8.3f} s   target <= {TARGET_S:.2f} s: {verdict}")
    print(
        f"modules added by `import fitkit` after torch: {len(mods['added'])} "
        f"({len(mods['added']) - len(outside)} in fitkit)"
    )
    print("  outside fitkit:", ", ".join(outside) if outside else "none")
    print("  watch-list modules newly imported:", ", ".join(new_watch) if new_watch else "none")
    print("  already imported by torch itself:", ", ".join(mods["watch_after_torch"]) or "none")
    print("slowest modules after torch (-X importtime, cumulative ms):")
    for r in top:
        print(f"  {r['cumulative_ms']:8.1f}  (self {r['self_ms']:6.1f})  {r['module']}")

    report = {
        "benchmark": "import_time",
        "runs": args.runs,
        "statistic": "median over fresh interpreters, interleaved",
        "import_torch_s": med_torch,
        "import_torch_and_fitkit_s": med_total,
        "difference_of_medians_s": med_total - med_torch,
        "import_fitkit_after_torch_s": med_paired,
        "target_s": TARGET_S,
        "meets_target": med_paired <= TARGET_S,
        "samples": {"torch_s": torch_s, "torch_and_fitkit_s": total_s, "fitkit_after_torch_s": paired_s},
        "modules_added": mods["added"],
        "modules_added_outside_fitkit": outside,
        "watchlist_newly_imported": new_watch,
        "watchlist_imported_by_torch": mods["watch_after_torch"],
        "importtime_top": top,
        "env": {
            "python": platform.python_version(),
            "executable": sys.executable,
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
        },
    }
    try:
        import torch

        report["env"]["torch"] = torch.__version__
    except ImportError:
        pass
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
