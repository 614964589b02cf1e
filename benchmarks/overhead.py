"""Per-step overhead of fitkit over a hand-written PyTorch loop.

Runs, in one process, on the same model, data, initial weights and seed:

* ``raw``: a plain PyTorch loop (forward, cross-entropy, backward, SGD step, zero_grad);
* ``fitkit_barebones``: ``Trainer(enable_progress_bar=False, logger=False,
  enable_checkpointing=False, enable_model_summary=False)``, no ``self.log``;
* ``fitkit_defaults``: ``Trainer(max_epochs=2)`` with one
  ``self.log("train_loss", loss, on_step=True, on_epoch=True)`` per step;
* ``lightning_barebones`` / ``lightning_defaults``: the same two set-ups in PyTorch
  Lightning (the same four flags, not ``barebones=True``; defaults with
  ``accelerator="cpu"``), when ``lightning`` or ``pytorch_lightning`` imports
  (skipped otherwise; their console output is swallowed).

Every variant gets one warm-up run, then ``--repeats`` timed runs, interleaved
(variant order rotates each round) so that slow drift of the machine hits all of
them alike. Two statistics per variant: the best run (``x raw``: best over best
raw), and ``paired``, the median over rounds of the variant's time over raw's time in
the same round, which a machine that switches between fast and slow phases (busy or
virtual machines do) disturbs less. A run is timed from building the optimizer (raw)
or the Trainer (frameworks) to the end of the last step, so fixed set-up costs are
included and spread over the steps. The frameworks must do the same arithmetic as
the raw loop: the final weights are compared bit for bit and the result printed.

Usage::

    .venv/bin/python benchmarks/overhead.py                         # reference workload
    .venv/bin/python benchmarks/overhead.py --repeats 30 --cpu 1    # steadier: more rounds, one CPU
    .venv/bin/python benchmarks/overhead.py --out /tmp/overhead.json

Results go to ``benchmarks/results/overhead.json`` by default (git-ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "overhead.json"

# Targets from the design notes: ratio of best µs/step to raw.
TARGETS = {"fitkit_barebones": 1.03, "fitkit_defaults": 1.10}


def make_net(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))


class Workload:
    """The data, the initial weights and the optimizer settings every variant shares."""

    def __init__(self, args: argparse.Namespace) -> None:
        gen = torch.Generator().manual_seed(args.seed)
        self.x = torch.randn(args.samples, args.in_dim, generator=gen)
        self.y = torch.randint(0, args.out_dim, (args.samples,), generator=gen)
        torch.manual_seed(args.seed)
        self.init_state = {
            k: v.clone() for k, v in make_net(args.in_dim, args.hidden, args.out_dim).state_dict().items()
        }
        self.args = args
        self.lr = args.lr
        self.epochs = args.epochs
        self.steps = args.epochs * (args.samples // args.batch_size + (args.samples % args.batch_size > 0))

    def loader(self) -> DataLoader:
        # shuffle=False: every variant sees the batches in the same order.
        return DataLoader(TensorDataset(self.x, self.y), batch_size=self.args.batch_size, shuffle=False)

    def net(self) -> nn.Sequential:
        net = make_net(self.args.in_dim, self.args.hidden, self.args.out_dim)
        net.load_state_dict(self.init_state)
        return net


class Clock:
    """Wall time and this thread's CPU time of one run.

    With ``torch.set_num_threads(1)`` and an in-process loader, all the work runs in
    this thread, so its CPU time is the run's cost minus what other processes on a
    busy machine steal; the wall time is what a user waits.
    """

    def start(self) -> None:
        self.t0, self.c0 = time.perf_counter(), time.thread_time()

    def stop(self) -> tuple[float, float]:
        return time.perf_counter() - self.t0, time.thread_time() - self.c0


Timing = tuple[tuple[float, float], dict[str, torch.Tensor]]


# -- variants: each returns ((wall s, cpu s), final state_dict) ----------------------------
def run_raw(w: Workload) -> Timing:
    model = w.net()
    loader = w.loader()
    clock = Clock()
    clock.start()
    opt = torch.optim.SGD(model.parameters(), lr=w.lr)
    model.train()
    for _ in range(w.epochs):
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    elapsed = clock.stop()
    return elapsed, model.state_dict()


def _fitkit_module(w: Workload, log: bool) -> Any:
    import fitkit as fk

    class MLP(fk.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = w.net()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            # self.net(x), not self(x): the raw loop calls the Sequential directly, and an
            # extra nn.Module.__call__ (a few us) is the user's choice, not the framework's.
            x, y = batch
            return F.cross_entropy(self.net(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=w.lr)

    class LoggingMLP(MLP):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            self.log("train_loss", loss, on_step=True, on_epoch=True)
            return loss

    return LoggingMLP() if log else MLP()


def run_fitkit_barebones(w: Workload) -> Timing:
    import fitkit as fk

    model = _fitkit_module(w, log=False)
    loader = w.loader()
    clock = Clock()
    clock.start()
    trainer = fk.Trainer(
        max_epochs=w.epochs,
        enable_progress_bar=False,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(model, loader)
    elapsed = clock.stop()
    return elapsed, model.net.state_dict()


def run_fitkit_defaults(w: Workload, root: str) -> Timing:
    import fitkit as fk

    model = _fitkit_module(w, log=True)
    loader = w.loader()
    clock = Clock()
    clock.start()
    # default_root_dir only keeps whatever the defaults write out of the working tree.
    trainer = fk.Trainer(max_epochs=w.epochs, default_root_dir=root)
    trainer.fit(model, loader)
    elapsed = clock.stop()
    return elapsed, model.net.state_dict()


def _lightning() -> Any:
    try:
        import lightning.pytorch as pl

        return pl
    except ImportError:
        pass
    try:
        import pytorch_lightning as pl

        return pl
    except ImportError:
        return None


def _lightning_module(pl: Any, w: Workload, log: bool) -> Any:
    class MLP(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = w.net()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)  # as in the fitkit module
            if log:
                self.log("train_loss", loss, on_step=True, on_epoch=True)
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=w.lr)

    return MLP()


def run_lightning(w: Workload, pl: Any, defaults: bool, root: str) -> Timing:
    model = _lightning_module(pl, w, log=defaults)
    loader = w.loader()
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):
        warnings.simplefilter("ignore")
        clock = Clock()
        clock.start()
        if defaults:
            trainer = pl.Trainer(max_epochs=w.epochs, default_root_dir=root, accelerator="cpu", devices=1)
        else:
            trainer = pl.Trainer(
                max_epochs=w.epochs,
                enable_progress_bar=False,
                logger=False,
                enable_checkpointing=False,
                enable_model_summary=False,
                accelerator="cpu",
                devices=1,
                default_root_dir=root,
            )
        trainer.fit(model, loader)
        elapsed = clock.stop()
    return elapsed, model.net.state_dict()


def same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _quiet_lightning_logs() -> None:
    import logging

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--repeats", type=int, default=10, help="timed runs per variant (best counts); default 10")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--samples", type=int, default=8192)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--in-dim", type=int, default=32)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--out-dim", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads; default 1")
    p.add_argument(
        "--cpu",
        type=int,
        default=None,
        help="pin the process to this CPU (os.sched_setaffinity): steadier on a busy or virtual machine",
    )
    p.add_argument("--no-lightning", action="store_true", help="skip PyTorch Lightning even if it imports")
    p.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT.relative_to(HERE.parent)})"
    )
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    notes: list[str] = []
    if args.cpu is not None:
        try:
            os.sched_setaffinity(0, {args.cpu})
        except (AttributeError, OSError) as exc:  # not on this OS, or no such CPU
            notes.append(f"--cpu {args.cpu} ignored: {exc}")
    w = Workload(args)
    root = tempfile.mkdtemp(prefix="fitkit-bench-")

    variants: dict[str, Callable[[], Timing]] = {
        "raw": lambda: run_raw(w),
        "fitkit_barebones": lambda: run_fitkit_barebones(w),
        "fitkit_defaults": lambda: run_fitkit_defaults(w, root),
    }
    pl = None if args.no_lightning else _lightning()
    if pl is not None:
        _quiet_lightning_logs()
        variants["lightning_barebones"] = lambda: run_lightning(w, pl, False, root)
        variants["lightning_defaults"] = lambda: run_lightning(w, pl, True, root)
        lightning_version = getattr(pl, "__version__", "?")
    else:
        lightning_version = None
        notes.append("PyTorch Lightning not importable here (or --no-lightning): lightning variants skipped.")

    names = list(variants)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    finals: dict[str, dict[str, torch.Tensor]] = {}
    for n in names:  # warm-up: imports, allocator, first-call caches
        gc.collect()
        _, finals[n] = variants[n]()
    for r in range(args.repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            gc.collect()
            (w_s, c_s), state = variants[n]()
            wall[n].append(w_s)
            cpu[n].append(c_s)
            if not same_weights(state, finals[n]):
                notes.append(f"{n}: final weights differ between runs (nondeterminism)")

    import fitkit

    def us(seconds: float) -> float:
        return seconds / w.steps * 1e6

    raw_wall, raw_cpu = us(min(wall["raw"])), us(min(cpu["raw"]))
    results: dict[str, Any] = {}
    print(
        f"workload: MLP {args.in_dim}->{args.hidden}->{args.out_dim}, batch {args.batch_size}, "
        f"{args.samples} samples, {args.epochs} epochs = {w.steps} steps; torch {torch.__version__}, "
        f"threads {args.threads}, best of {args.repeats} (us/step; wall clock, and this thread's CPU time)"
    )
    print(
        f"{'variant':<20}{'wall best':>10}{'median':>9}{'x raw':>8}{'paired':>8}{'cpu best':>10}{'x raw':>8}  "
        f"{'weights==raw':<13}target"
    )
    for n in names:
        best, med, cbest = us(min(wall[n])), us(statistics.median(wall[n])), us(min(cpu[n]))
        ratio, cratio = best / raw_wall, cbest / raw_cpu
        # Each round runs every variant once: the median of the per-round ratios shrugs off
        # slow drift of a busy machine that best-of alone may not.
        paired = statistics.median(t / r for t, r in zip(wall[n], wall["raw"], strict=True))
        equal = same_weights(finals[n], finals["raw"])
        target = TARGETS.get(n)
        verdict = ""
        if target is not None:
            verdict = (
                f"<= {target:.2f}x: best {'ok' if ratio <= target else 'MISSED'}, "
                f"paired {'ok' if paired <= target else 'MISSED'}"
            )
        print(
            f"{n:<20}{best:>10.1f}{med:>9.1f}{ratio:>8.3f}{paired:>8.3f}{cbest:>10.1f}{cratio:>8.3f}  "
            f"{equal!s:<13}{verdict}"
        )
        results[n] = {
            "best_us_per_step": best,
            "median_us_per_step": med,
            "ratio_to_raw": ratio,
            "paired_median_ratio_to_raw": paired,
            "cpu_best_us_per_step": cbest,
            "cpu_ratio_to_raw": cratio,
            "wall_runs_s": wall[n],
            "cpu_runs_s": cpu[n],
            "weights_equal_raw": equal,
            "target_ratio": target,
            "meets_target": None if target is None else ratio <= target,
            "meets_target_paired": None if target is None else paired <= target,
        }
    for note in notes:
        print("note:", note)
    shutil.rmtree(root, ignore_errors=True)

    report = {
        "benchmark": "overhead",
        "workload": {
            "model": f"MLP {args.in_dim}->{args.hidden}->{args.out_dim} (ReLU)",
            "loss": "cross_entropy",
            "optimizer": f"SGD(lr={args.lr})",
            "batch_size": args.batch_size,
            "samples": args.samples,
            "epochs": args.epochs,
            "steps": w.steps,
            "seed": args.seed,
            "shuffle": False,
        },
        "repeats": args.repeats,
        "statistic": "best of repeats (wall clock and thread CPU time), and the median of per-round wall ratios "
        "(paired); one warm-up run each; variants interleaved, order rotating each round",
        "results": results,
        "notes": notes,
        "env": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "fitkit": fitkit.__version__,
            "fitkit_path": str(Path(fitkit.__file__).parent),
            "pinned_cpu": args.cpu,
            "lightning": lightning_version,
            "threads": args.threads,
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "executable": sys.executable,
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
