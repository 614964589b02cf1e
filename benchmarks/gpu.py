"""GPU throughput of fitkit against a hand-written PyTorch loop, per precision.

Runs, in one process on one CUDA GPU, on the same model, data, initial weights and
batch order, for each of ``32-true``, ``bf16-mixed`` and ``16-mixed``:

* ``raw``: a plain loop: ``x.to(device, non_blocking=True)`` from a pinned-memory
  loader, forward and cross-entropy under the precision's ``torch.autocast``,
  backward (through a ``GradScaler`` for ``16-mixed``), SGD step, ``zero_grad``;
* ``fitkit``: ``Trainer(accelerator="cuda", devices=1, precision=...)`` with the
  progress bar, logger, checkpointing and model summary off, on the same loader.

The loader yields whole batches (a ``BatchSampler`` indexing the ``TensorDataset``
once per batch) so that neither variant is bound by per-sample collation. Each
variant gets one warm-up run (CUDA context, cuBLAS handles, allocator), then
``--repeats`` timed runs, interleaved so drift hits both alike. A run is timed from
building the optimizer (raw) or the Trainer (fitkit) to ``torch.cuda.synchronize()``
after the last step. Two statistics: ``ratio``, best fitkit steps/s over best raw
steps/s, and ``paired``, the median over rounds of the same ratio within a round.
The target is a ratio of at least 0.98. Final weights are compared with the raw
loop's (``32-true`` should match to float rounding).

A precision fitkit does not accept yet is reported as skipped. Without CUDA the
script prints ``no CUDA: skipped``, writes a JSON saying so, and exits 0.

Usage::

    .venv/bin/python benchmarks/gpu.py                              # reference workload
    .venv/bin/python benchmarks/gpu.py --precision bf16-mixed --repeats 10
    .venv/bin/python benchmarks/gpu.py --out "$OUT/gpu.json"

Results go to ``benchmarks/results/gpu.json`` by default (git-ignored).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler, TensorDataset

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "gpu.json"
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
TARGET = 0.98  # fitkit steps/s over raw steps/s, at least
AUTOCAST = {"32-true": None, "bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def make_net(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, out_dim)
    )


class Workload:
    """Data, initial weights and optimizer settings shared by every variant."""

    def __init__(self, args: argparse.Namespace) -> None:
        gen = torch.Generator().manual_seed(args.seed)
        self.x = torch.randn(args.samples, args.in_dim, generator=gen)
        self.y = torch.randint(0, args.out_dim, (args.samples,), generator=gen)
        torch.manual_seed(args.seed)
        self.init_state = {
            k: v.clone() for k, v in make_net(args.in_dim, args.hidden, args.out_dim).state_dict().items()
        }
        self.args = args
        self.device = torch.device("cuda", 0)
        batches = args.samples // args.batch_size + (args.samples % args.batch_size > 0)
        self.steps = args.epochs * batches

    def loader(self) -> DataLoader:
        ds = TensorDataset(self.x, self.y)
        # batch_size=None + a BatchSampler: one fancy-index per batch instead of per-sample collation.
        sampler = BatchSampler(SequentialSampler(ds), self.args.batch_size, drop_last=False)
        return DataLoader(ds, batch_size=None, sampler=sampler, pin_memory=True)

    def net(self) -> nn.Sequential:
        net = make_net(self.args.in_dim, self.args.hidden, self.args.out_dim)
        net.load_state_dict(self.init_state)
        return net

    def optimizer(self, params: Any) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=self.args.lr, momentum=0.9)


Timing = tuple[float, dict[str, torch.Tensor]]


def run_raw(w: Workload, precision: str) -> Timing:
    dtype = AUTOCAST[precision]
    device = w.device
    net = w.net().to(device)
    loader = w.loader()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    opt = w.optimizer(net.parameters())
    scaler = torch.amp.GradScaler("cuda") if precision == "16-mixed" else None
    net.train()
    for _ in range(w.args.epochs):
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            ctx = torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext()
            with ctx:
                loss = F.cross_entropy(net(x), y)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    return time.perf_counter() - t0, {k: v.detach().cpu() for k, v in net.state_dict().items()}


def _fitkit_module(w: Workload) -> Any:
    import fitkit as fk

    class MLP(fk.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = w.net()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.net(x)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return F.cross_entropy(self.net(x), y)  # self.net, as the raw loop calls it

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return w.optimizer(self.parameters())

    return MLP()


def make_fitkit_trainer(w: Workload, precision: str) -> Any:
    import fitkit as fk

    return fk.Trainer(
        accelerator="cuda",
        devices=1,
        precision=precision,
        max_epochs=w.args.epochs,
        enable_progress_bar=False,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )


def run_fitkit(w: Workload, precision: str) -> Timing:
    model = _fitkit_module(w).to(w.device)  # the raw loop's .to(device) is outside its timing too
    loader = w.loader()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    trainer = make_fitkit_trainer(w, precision)
    trainer.fit(model, loader)
    torch.cuda.synchronize()
    return time.perf_counter() - t0, {k: v.detach().cpu() for k, v in model.net.state_dict().items()}


def max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def bench_precision(w: Workload, precision: str, repeats: int) -> dict[str, Any]:
    from fitkit.utilities.exceptions import FitkitError

    try:
        make_fitkit_trainer(w, precision)
    except (FitkitError, ValueError, TypeError) as exc:
        return {"skipped": f"fitkit does not accept precision={precision!r} here: {exc}"}
    variants: dict[str, Callable[[], Timing]] = {
        "raw": lambda: run_raw(w, precision),
        "fitkit": lambda: run_fitkit(w, precision),
    }
    finals: dict[str, dict[str, torch.Tensor]] = {}
    for name, fn in variants.items():  # warm-up
        gc.collect()
        _, finals[name] = fn()
    times: dict[str, list[float]] = {n: [] for n in variants}
    names = list(variants)
    for r in range(repeats):
        for name in names[r % 2 :] + names[: r % 2]:
            gc.collect()
            seconds, _ = variants[name]()
            times[name].append(seconds)
    raw_best, fit_best = min(times["raw"]), min(times["fitkit"])
    ratio = raw_best / fit_best  # throughput ratio: fitkit steps/s over raw steps/s
    paired = statistics.median(r / f for r, f in zip(times["raw"], times["fitkit"], strict=True))
    return {
        "raw_steps_per_s": w.steps / raw_best,
        "fitkit_steps_per_s": w.steps / fit_best,
        "raw_median_steps_per_s": w.steps / statistics.median(times["raw"]),
        "fitkit_median_steps_per_s": w.steps / statistics.median(times["fitkit"]),
        "ratio": ratio,
        "paired_median_ratio": paired,
        "target_ratio": TARGET,
        "meets_target": ratio >= TARGET,
        "meets_target_paired": paired >= TARGET,
        "max_abs_weight_diff_vs_raw": max_abs_diff(finals["fitkit"], finals["raw"]),
        "raw_runs_s": times["raw"],
        "fitkit_runs_s": times["fitkit"],
    }


def write(out: Path, report: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--precision", choices=PRECISIONS, action="append", help="repeat to pick several; default all")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per variant (best counts); default 5")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--samples", type=int, default=32768)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--in-dim", type=int, default=1024)
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--out-dim", type=int, default=10)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--matmul-precision",
        choices=("highest", "high", "medium"),
        default="highest",
        help="torch.set_float32_matmul_precision for both variants (high: TF32); default highest",
    )
    p.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT.relative_to(HERE.parent)})"
    )
    args = p.parse_args(argv)

    env = {"python": platform.python_version(), "torch": torch.__version__, "executable": sys.executable}
    if not torch.cuda.is_available():
        print("no CUDA: skipped (benchmarks/gpu.py needs a CUDA GPU)")
        report = {"benchmark": "gpu", "skipped": "no CUDA", "env": env}
        write(args.out, report)
        return report

    import fitkit

    torch.set_float32_matmul_precision(args.matmul_precision)
    w = Workload(args)
    precisions = args.precision or list(PRECISIONS)
    env.update(
        {
            "fitkit": fitkit.__version__,
            "fitkit_path": str(Path(fitkit.__file__).parent),
            "gpu": torch.cuda.get_device_name(0),
            "cuda": torch.version.cuda,
            "matmul_precision": args.matmul_precision,
            "platform": platform.platform(),
        }
    )
    print(
        f"workload: MLP {args.in_dim}->{args.hidden}->{args.hidden}->{args.out_dim}, batch {args.batch_size}, "
        f"{args.samples} samples, {args.epochs} epochs = {w.steps} steps on {env['gpu']}; torch {torch.__version__}, "
        f"best of {args.repeats}"
    )
    header = f"{'precision':<12}{'raw steps/s':>13}{'fitkit steps/s':>16}{'ratio':>8}{'paired':>8}{'max |dw|':>11}"
    print(f"{header}  target")
    results: dict[str, Any] = {}
    for precision in precisions:
        r = bench_precision(w, precision, args.repeats)
        results[precision] = r
        if "skipped" in r:
            print(f"{precision:<12}skipped: {r['skipped']}")
            continue
        verdict = (
            f">= {TARGET:.2f}: best {'ok' if r['meets_target'] else 'MISSED'}, "
            f"paired {'ok' if r['meets_target_paired'] else 'MISSED'}"
        )
        print(
            f"{precision:<12}{r['raw_steps_per_s']:>13.1f}{r['fitkit_steps_per_s']:>16.1f}{r['ratio']:>8.3f}"
            f"{r['paired_median_ratio']:>8.3f}{r['max_abs_weight_diff_vs_raw']:>11.2e}  {verdict}"
        )
    report = {
        "benchmark": "gpu",
        "workload": {
            "model": f"MLP {args.in_dim}->{args.hidden}->{args.hidden}->{args.out_dim} (ReLU)",
            "loss": "cross_entropy",
            "optimizer": f"SGD(lr={args.lr}, momentum=0.9)",
            "batch_size": args.batch_size,
            "samples": args.samples,
            "epochs": args.epochs,
            "steps": w.steps,
            "seed": args.seed,
            "loader": "BatchSampler over TensorDataset, pin_memory=True, non_blocking copies",
        },
        "repeats": args.repeats,
        "statistic": "best of repeats (wall clock, synchronized), and the median of per-round ratios (paired); "
        "one warm-up run each; variants interleaved",
        "results": results,
        "env": env,
    }
    write(args.out, report)
    return report


if __name__ == "__main__":
    main()
