"""fitkit on XLA against a hand-written torch_xla loop, on torch_xla's CPU backend.

Both train the same MLP on the same data from the same initial weights:

* ``raw``: the loop torch_xla's documentation writes: ``MpDeviceLoader`` over the
  DataLoader (it cuts the graph once per batch), forward, cross-entropy, backward,
  ``xm.optimizer_step(optimizer)``, ``zero_grad``;
* ``fitkit``: ``Trainer(accelerator="xla", ...)`` with the progress bar, logger,
  checkpointing and model summary off, ``nonfinite_loss="ignore"`` and no ``self.log``:
  the raw loop's work and nothing else;
* ``fitkit_logging``: the Trainer's default ``nonfinite_loss="raise"`` (deferred on XLA:
  the losses are read every ``log_every_n_steps=50``), ``self.log("train_loss", loss)``
  every step and a CSV logger (values reach the host every 50 steps).

Two measurements:

1. **Compilations.** Each variant runs once, cold, in a fresh interpreter (the compile
   cache is per process), and reports torch_xla's ``UncachedCompile`` and
   ``ExecuteComputation`` counters: how many graphs it compiled, and how many graph
   executions it ran per training step.
2. **Speed.** In one process, each variant runs once to warm the compile cache, then
   ``--repeats`` timed runs, interleaved (the order rotates each round). A run is timed
   from building the optimizer (raw) or the Trainer (fitkit) until the device has
   finished the last step (``xm.wait_device_ops()``). Reported: steps per second of the
   best run, and ``paired``: the median over rounds of raw's time over the variant's
   time in the same round (above 1.0: faster than raw), for wall-clock time and for the
   process's CPU time (all threads, the XLA runtime's included), which a machine shared
   with other work disturbs less: time spent descheduled is not counted. Last, the CPU
   time of the training thread alone per step (``time.thread_time()``: tracing, dispatch
   and the framework's own Python; the XLA runtime executes the graphs and the loader
   copies batches on threads of their own), the steadiest figure on a busy machine.

Usage::

    PJRT_DEVICE=CPU .venv-xla/bin/python benchmarks/xla.py
    PJRT_DEVICE=CPU .venv-xla/bin/python benchmarks/xla.py --steps 400 --repeats 9 --out /tmp/xla.json

Results go to ``benchmarks/results/xla.json`` by default (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("PJRT_DEVICE", "CPU")

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "xla.json"
VARIANTS = ("raw", "fitkit", "fitkit_logging")
FEATURES, HIDDEN, CLASSES, BATCH = 64, 256, 10, 64


def make_loader(steps: int) -> DataLoader[Any]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(steps * BATCH, FEATURES, generator=g)
    y = torch.randint(0, CLASSES, (steps * BATCH,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=BATCH)


def make_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(FEATURES, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, CLASSES)
    )


def run_raw(loader: DataLoader[Any]) -> tuple[float, float, float, nn.Module]:
    import torch_xla
    import torch_xla.core.xla_model as xm
    from torch_xla.distributed.parallel_loader import MpDeviceLoader

    device = torch_xla.device()
    net = make_net().to(device)
    start, cpu_start, thread_start = time.perf_counter(), time.process_time(), time.thread_time()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    for x, y in MpDeviceLoader(loader, device):
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        xm.optimizer_step(opt)
        opt.zero_grad(set_to_none=True)
    torch_xla.sync()
    xm.wait_device_ops()
    return time.perf_counter() - start, time.process_time() - cpu_start, time.thread_time() - thread_start, net


def run_fitkit(loader: DataLoader[Any], log: bool) -> tuple[float, float, float, nn.Module]:
    import torch_xla.core.xla_model as xm

    import fitkit as fk
    from fitkit.loggers import CSVLogger

    class Net(fk.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = make_net()

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            loss = F.cross_entropy(self.net(x), y)
            if log:
                self.log("train_loss", loss)
            return loss

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)

    module = Net()
    with tempfile.TemporaryDirectory() as folder:
        start, cpu_start, thread_start = time.perf_counter(), time.process_time(), time.thread_time()
        trainer = fk.Trainer(
            accelerator="xla",
            max_epochs=1,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            logger=CSVLogger(folder, name="") if log else False,
            nonfinite_loss="raise" if log else "ignore",
            log_every_n_steps=50,
            default_root_dir=folder,
        )
        trainer.fit(module, loader)
        xm.wait_device_ops()
        elapsed, cpu, thread = (
            time.perf_counter() - start,
            time.process_time() - cpu_start,
            time.thread_time() - thread_start,
        )
    return elapsed, cpu, thread, module.net


def run(variant: str, loader: DataLoader[Any]) -> tuple[float, float, float, nn.Module]:
    if variant == "raw":
        return run_raw(loader)
    return run_fitkit(loader, log=variant == "fitkit_logging")


def count_cold(variant: str, steps: int) -> dict[str, Any]:
    """One cold run in this (fresh) process: compilations and executions."""
    import torch_xla.debug.metrics as met

    loader = make_loader(steps)
    *_, net = run(variant, loader)
    weights = torch.cat([p.detach().cpu().flatten() for p in net.parameters()])
    return {
        "compiles": int(met.counter_value("UncachedCompile") or 0),
        "executions": int(met.counter_value("ExecuteComputation") or 0),
        "steps": steps,
        "weights_sum": float(weights.double().sum()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--count-only", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.count_only:
        print(json.dumps(count_cold(args.count_only, args.steps)))
        return

    cold = {}
    for variant in VARIANTS:
        out = subprocess.run(
            [sys.executable, __file__, "--count-only", variant, "--steps", str(args.steps)],
            capture_output=True,
            text=True,
            check=True,
        )
        cold[variant] = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"{variant:>15}: {cold[variant]['compiles']} compilations, {cold[variant]['executions']} executions (cold)"
        )

    import torch_xla.debug.metrics as met

    loader = make_loader(args.steps)
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    cpu_times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    thread_times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    warm_compiles: dict[str, int] = {}
    for variant in VARIANTS:
        run(variant, loader)  # warm the compile cache
    for variant in VARIANTS:
        before = int(met.counter_value("UncachedCompile") or 0)
        run(variant, loader)
        warm_compiles[variant] = int(met.counter_value("UncachedCompile") or 0) - before
    for r in range(args.repeats):
        order = VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]
        for variant in order:
            wall, cpu, thread, _ = run(variant, loader)
            times[variant].append(wall)
            cpu_times[variant].append(cpu)
            thread_times[variant].append(thread)
    raw, raw_cpu = times["raw"], cpu_times["raw"]
    results: dict[str, Any] = {}
    for variant in VARIANTS:
        best = min(times[variant])
        paired = statistics.median(a / b for a, b in zip(raw, times[variant], strict=True))
        paired_cpu = statistics.median(a / b for a, b in zip(raw_cpu, cpu_times[variant], strict=True))
        thread_us = statistics.median(thread_times[variant]) / args.steps * 1e6
        results[variant] = {
            "steps_per_s_best": args.steps / best,
            "paired_vs_raw": paired,
            "best_vs_raw": min(raw) / best,
            "paired_cpu_time_vs_raw": paired_cpu,
            "times_s": times[variant],
            "cpu_times_s": cpu_times[variant],
            "thread_times_s": thread_times[variant],
            "training_thread_cpu_us_per_step": thread_us,
            "compiles_cold": cold[variant]["compiles"],
            "executions_cold": cold[variant]["executions"],
            "compiles_when_warm": warm_compiles[variant],
        }
        print(
            f"{variant:>15}: {args.steps / best:8.1f} steps/s best, {min(raw) / best:.3f} x raw (best), "
            f"{paired:.3f} x raw (paired median), {paired_cpu:.3f} x raw (CPU time, paired median), "
            f"{thread_us:.0f} us CPU per step in the training thread (median)"
        )
    same = len({round(cold[v]["weights_sum"], 3) for v in VARIANTS}) == 1
    print(f"same final weights (sum, 3 decimals) in every variant: {same}")
    import torch_xla

    report = {
        "benchmark": "xla",
        "steps": args.steps,
        "repeats": args.repeats,
        "batch": BATCH,
        "model": f"MLP {FEATURES}-{HIDDEN}-{HIDDEN}-{CLASSES}",
        "torch": torch.__version__,
        "torch_xla": torch_xla.__version__,
        "pjrt_device": os.environ.get("PJRT_DEVICE"),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "same_final_weights": same,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
