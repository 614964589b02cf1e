"""Overhead of fitkit's DDP over a hand-written ``torchrun`` DDP loop (two CPU processes, gloo).

One ``torchrun --standalone --nproc_per_node=2`` job; in it, each process alternates
``--repeats`` times (after one warm-up of each) between:

* ``raw``: ``DistributedDataParallel`` by hand: a ``DistributedSampler(shuffle=False)``
  loader, forward, cross-entropy, backward, SGD step, ``zero_grad``;
* ``fitkit``: ``Trainer(accelerator="cpu", devices="auto", strategy="ddp")`` with the
  four barebones flags, the loader given as a plain sequential ``DataLoader`` (fitkit
  puts the distributed sampler in), no ``self.log``.

Both use the process group the script made (fitkit joins it), the same model, data
and initial weights. A run is timed on rank 0 from building the optimizer / Trainer
to the end of the last step, between two barriers. Reported: the best run of each,
``ratio`` (best fitkit over best raw) and ``paired`` (median over rounds of fitkit
over raw in the same round). The final weights of the two are compared.

Usage::

    .venv/bin/python benchmarks/ddp.py                      # reference workload
    .venv/bin/python benchmarks/ddp.py --repeats 10 --out /tmp/ddp.json

Results go to ``benchmarks/results/ddp.json`` by default (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

HERE = Path(__file__).resolve().parent
DEFAULT_OUT = HERE / "results" / "ddp.json"


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


def _data(n: int) -> TensorDataset:
    g = torch.Generator().manual_seed(1)
    return TensorDataset(torch.randn(n, 64, generator=g), torch.randint(0, 10, (n,), generator=g))


def _raw(ds: TensorDataset, batch: int, epochs: int) -> tuple[float, nn.Module]:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data.distributed import DistributedSampler

    model = _model()
    dist.barrier()
    start = time.perf_counter()
    ddp = DistributedDataParallel(model)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01)
    sampler = DistributedSampler(ds, shuffle=False)
    loader = DataLoader(ds, batch_size=batch, sampler=sampler)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for x, y in loader:
            loss = F.cross_entropy(ddp(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    dist.barrier()
    return time.perf_counter() - start, model


def _fitkit(ds: TensorDataset, batch: int, epochs: int) -> tuple[float, nn.Module]:
    import torch.distributed as dist

    import fitkit as fk

    class Classifier(fk.Module):
        def __init__(self) -> None:
            super().__init__()
            self.net = _model()

        def training_step(self, b: Any, batch_idx: int) -> torch.Tensor:
            x, y = b
            return F.cross_entropy(self.net(x), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=0.01)

    module = Classifier()
    dist.barrier()
    start = time.perf_counter()
    trainer = fk.Trainer(
        accelerator="cpu",
        devices="auto",
        strategy="ddp",
        max_epochs=epochs,
        enable_progress_bar=False,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(ds, batch_size=batch))
    dist.barrier()
    return time.perf_counter() - start, module.net


def worker(args: argparse.Namespace) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    ds = _data(args.samples)
    times: dict[str, list[float]] = {"raw": [], "fitkit": []}
    models: dict[str, nn.Module] = {}
    variants = {"raw": _raw, "fitkit": _fitkit}
    for round_ in range(args.repeats + 1):
        order = ["raw", "fitkit"] if round_ % 2 == 0 else ["fitkit", "raw"]
        for name in order:
            elapsed, models[name] = variants[name](ds, args.batch_size, args.epochs)
            if round_ > 0:  # round 0 warms up
                times[name].append(elapsed)
    pairs = zip(models["raw"].state_dict().values(), models["fitkit"].state_dict().values(), strict=True)
    same = all(torch.equal(a, b) for a, b in pairs)
    if dist.get_rank() == 0:
        steps = args.epochs * -(-args.samples // (2 * args.batch_size))
        best = {k: min(v) for k, v in times.items()}
        result = {
            "benchmark": "ddp",
            "processes": 2,
            "backend": "gloo",
            "steps": steps,
            "per_rank_batch": args.batch_size,
            "repeats": args.repeats,
            "best_s": best,
            "ms_per_step": {k: 1000 * v / steps for k, v in best.items()},
            "ratio": best["fitkit"] / best["raw"],
            "paired": statistics.median(f / r for f, r in zip(times["fitkit"], times["raw"], strict=True)),
            "times_s": times,
            "weights_bitwise_equal": same,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
        print(json.dumps({k: result[k] for k in ("ms_per_step", "ratio", "paired", "weights_bitwise_equal")}, indent=2))
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--samples", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=64, help="per process")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__, "--worker"]
    cmd += ["--repeats", str(args.repeats), "--samples", str(args.samples), "--batch-size", str(args.batch_size)]
    cmd += ["--epochs", str(args.epochs), "--out", args.out]
    raise SystemExit(subprocess.call(cmd))


if __name__ == "__main__":
    main()
