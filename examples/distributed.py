"""Distributed and accelerated training: one model on one device, on several processes (DDP), or split over two devices.

The book's chapter 6 (*PyTorch Pocket Reference*, pp. 155-188) moves one training loop
to a TPU, to several GPUs with ``DataParallel`` and ``DistributedDataParallel``, to
several machines, and splits one model over two GPUs (model parallelism). With fitkit
the model and the loop stay as they are; the Trainer's ``accelerator``, ``devices``,
``num_nodes`` and ``strategy`` say where they run. The model here is a small MLP on
scikit-learn's 8x8 digits (no download).

One process, then two processes on this machine (DDP over gloo: fitkit starts the
second process itself by re-running this command)::

    python examples/distributed.py                                   # one process, ~3 s
    python examples/distributed.py --accelerator cpu --devices 2 --strategy ddp
    python examples/distributed.py --accelerator cuda --devices 2    # 2 GPUs: DDP over nccl

The same under ``torchrun`` (fitkit joins the process group torchrun sets up)::

    torchrun --standalone --nproc-per-node 2 examples/distributed.py --accelerator cpu --devices 2 --strategy ddp

Two machines with two processes each (run on both; ``node0`` is the first machine's
reachable host name, and ``--node-rank`` is 0 there and 1 on the other)::

    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 2 --rdzv-endpoint node0:29500 \\
        examples/distributed.py --devices 2 --num-nodes 2 --strategy ddp
    torchrun --nnodes 2 --node-rank 1 --nproc-per-node 2 --rdzv-endpoint node0:29500 \\
        examples/distributed.py --devices 2 --num-nodes 2 --strategy ddp

TPUs (the book's ``xm.xla_device()``) through torch_xla (``docs/tpu.md``): on a Cloud TPU
VM, one process per TPU device; and the same script on torch_xla's CPU backend, which is
how it was tried here (no TPU was available)::

    PJRT_DEVICE=TPU python examples/distributed.py --accelerator xla --devices 8
    PJRT_DEVICE=CPU python examples/distributed.py --accelerator xla --devices 1

Model parallelism (``--model-parallel``): the first half of the network sits on device
A, the second half on device B, and each batch is cut into micro-batches of
``--split-size`` rows so that B works on micro-batch ``i`` while A already works on
``i + 1`` (a pipeline). On a machine with two CUDA GPUs the halves go to ``cuda:0`` and
``cuda:1``; on a CPU-only machine (or with ``--accelerator cpu``) both halves stay on
the CPU: the code path is the same, but nothing overlaps and nothing gets faster::

    python examples/distributed.py --model-parallel --split-size 16

Each run prints ``val accuracy: 0.9xxx`` last (about 0.97 after the default 10 epochs).
Needs ``scikit-learn`` (``pip install -e ".[examples]"``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import _cli  # the gallery's common options (examples/_cli.py)
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, random_split

import fitkit
from fitkit.strategies import SingleDeviceStrategy


def digits_loaders(batch_size: int, seed: int = 0, num_workers: int = 0) -> tuple[DataLoader, DataLoader]:
    """Training and validation loaders over the digits (80/20, a seeded split), as flat 64-vectors.

    Example::

        >>> train, val = digits_loaders(batch_size=32)
        >>> x, y = next(iter(train))
        >>> tuple(x.shape), len(val.dataset)
        ((32, 64), 359)
    """
    from sklearn.datasets import load_digits  # imported here: only the example needs scikit-learn

    digits = load_digits()
    x = torch.tensor(digits.data, dtype=torch.float32) / 16.0  # pixels are 0..16
    y = torch.tensor(digits.target, dtype=torch.long)
    full = TensorDataset(x, y)
    n_val = len(full) // 5
    train, val = random_split(full, [len(full) - n_val, n_val], generator=torch.Generator().manual_seed(seed))
    # Under DDP fitkit gives each process its own shard of both loaders (a distributed
    # sampler); shuffle=True shuffles with one permutation shared by all processes.
    return (
        DataLoader(train, batch_size=batch_size, shuffle=True, num_workers=num_workers),
        DataLoader(val, batch_size=256, num_workers=num_workers),
    )


class DigitsMLP(fitkit.Module):
    """A four-layer MLP in two halves, ``part1`` (64 -> 128 -> 128) and ``part2`` (128 -> 64 -> 10).

    The halves matter only to :class:`PipelinedDigitsMLP`; here they run one after the other.

    Example::

        >>> DigitsMLP()(torch.zeros(4, 64)).shape
        torch.Size([4, 10])
    """

    def __init__(self, lr: float = 0.1, hidden: int = 128) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.part1 = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.part2 = nn.Sequential(nn.Linear(hidden, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.part2(self.part1(x))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y.to(logits.device))  # the logits' device: B when split
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        y = y.to(logits.device)
        # sync_dist: under DDP each process sees part of the set; the logged value is the
        # mean over all of them, the same on every rank.
        self.log("val_loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log("val_acc", (logits.argmax(dim=1) == y).float().mean(), prog_bar=True, sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)


class PipelinedDigitsMLP(DigitsMLP):
    """:class:`DigitsMLP` split over two devices, with micro-batch pipelining.

    ``part1`` lives on ``device_a`` and ``part2`` on ``device_b`` once :meth:`place` has
    put them there (the :class:`PipelineStrategy` calls it; before that both are on the
    CPU). ``forward`` cuts the batch into micro-batches of ``split_size`` rows. CUDA runs
    kernels asynchronously, so while ``device_b`` computes micro-batch ``i``,
    ``device_a`` already computes ``i + 1``. The output is on ``device_b``.

    The book's version of this (chapter 6) refers to names it never defines; this one
    runs, and gives the same outputs as :class:`DigitsMLP` with the same weights.

    Example::

        >>> model = PipelinedDigitsMLP(split_size=3).place("cpu", "cpu")
        >>> model(torch.zeros(8, 64)).shape  # micro-batches of 3, 3 and 2 rows
        torch.Size([8, 10])
    """

    def __init__(self, lr: float = 0.1, hidden: int = 128, split_size: int = 16) -> None:
        super().__init__(lr=lr, hidden=hidden)
        self.save_hyperparameters()
        self.device_a = torch.device("cpu")
        self.device_b = torch.device("cpu")

    def place(self, device_a: torch.device | str, device_b: torch.device | str) -> PipelinedDigitsMLP:
        """Put ``part1`` on ``device_a`` and ``part2`` on ``device_b``; return the module."""
        self.device_a, self.device_b = torch.device(device_a), torch.device(device_b)
        self.part1.to(self.device_a)
        self.part2.to(self.device_b)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        splits = iter(x.split(self.hparams.split_size))
        # Prime the pipeline: the first micro-batch through part1, its result sent to B.
        previous = self.part1(next(splits).to(self.device_a)).to(self.device_b)
        outputs = []
        for micro_batch in splits:
            outputs.append(self.part2(previous))  # B: micro-batch i ...
            previous = self.part1(micro_batch.to(self.device_a)).to(self.device_b)  # ... A: micro-batch i + 1
        outputs.append(self.part2(previous))
        return torch.cat(outputs)


class PipelineStrategy(SingleDeviceStrategy):
    """One process whose module spans two devices: it places itself, the Trainer does not move it.

    Why a strategy: fitkit's strategies own device placement, and the single-device
    strategy's ``setup_module`` calls ``module.to(root_device)``, which would put both
    halves on one device. Re-placing the halves afterwards from a hook (``on_fit_start``)
    would also work for ``fit``, because ``Module.to`` keeps the same ``Parameter``
    objects, but it runs after ``configure_optimizers``, has to be repeated for
    ``validate``/``test``/``predict``, and moves every weight twice. Here ``setup_module``
    calls the module's own :meth:`PipelinedDigitsMLP.place` instead, before any optimizer
    exists, for every stage. Batches go to the root device, ``device_a``, where the first
    half reads them.

    Example::

        >>> strategy = PipelineStrategy("cpu", "cpu")
        >>> strategy.root_device, strategy.device_b
        (device(type='cpu'), device(type='cpu'))
    """

    name = "pipeline"

    def __init__(self, device_a: torch.device | str, device_b: torch.device | str) -> None:
        super().__init__(device_a)  # the Trainer fills in the accelerator and the precision
        self.device_b = torch.device(device_b)

    def setup_module(self, module: nn.Module) -> nn.Module:
        if not isinstance(module, PipelinedDigitsMLP):
            raise fitkit.FitkitTypeError(
                f"model={type(module).__name__} is not valid: it has no place(device_a, device_b). "
                "Expected a PipelinedDigitsMLP."
            )
        module = self.precision.convert_module(module)
        self.module = module.place(self.root_device, self.device_b)
        return self.module


def pipeline_devices(accelerator: str) -> tuple[str, str]:
    """``("cuda:0", "cuda:1")`` when two CUDA GPUs are there and wanted, else ``("cpu", "cpu")``."""
    if accelerator in ("auto", "cuda", "gpu") and torch.cuda.device_count() >= 2:
        return "cuda:0", "cuda:1"
    return "cpu", "cpu"


def _quiet(*args: object) -> None:
    pass


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = _cli.parser(__doc__, max_epochs=10, batch_size=64)
    parser.set_defaults(num_threads=1)  # layers this small gain nothing from more threads
    parser.add_argument("--lr", type=float, default=0.1, help="SGD learning rate (momentum 0.9)")
    parser.add_argument("--num-nodes", type=int, default=1, help="machines (torchrun --nnodes)")
    parser.add_argument("--model-parallel", action="store_true", help="split the model over two devices")
    parser.add_argument("--split-size", type=int, default=16, help="micro-batch rows with --model-parallel")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> float:
    """Train, print ``val accuracy: ...`` (global rank zero only) and return the validation accuracy.

    Example::

        >>> acc = main(["--max-epochs", "1"])  # doctest: +SKIP
    """
    args = parse_args(argv)
    overrides: dict = {"num_nodes": args.num_nodes, "enable_checkpointing": False}
    if args.model_parallel:
        if args.devices not in ("auto", 1) or args.strategy != "auto" or args.num_nodes != 1:
            # DDP over two-device replicas (the book's last variant) needs a strategy that
            # wraps a multi-device module; this example keeps to one replica.
            raise SystemExit("error: --model-parallel runs one process; leave out --devices, --strategy, --num-nodes")
        device_a, device_b = pipeline_devices(args.accelerator)
        accelerator = "cuda" if device_a.startswith("cuda") else "cpu"
        overrides.update(accelerator=accelerator, devices=1, strategy=PipelineStrategy(device_a, device_b))
        print(f"model parallel: part1 on {device_a}, part2 on {device_b}, micro-batches of {args.split_size}")
        if accelerator == "cpu":
            print("(fewer than two CUDA GPUs here: both halves on the CPU, same code path, no overlap)")
    trainer_kwargs = _cli.trainer_kwargs(args, **overrides)
    fitkit.seed_everything(args.seed)
    start = time.perf_counter()

    train_loader, val_loader = digits_loaders(args.batch_size, seed=args.seed, num_workers=args.num_workers)
    model = PipelinedDigitsMLP(lr=args.lr, split_size=args.split_size) if args.model_parallel else DigitsMLP(lr=args.lr)
    trainer = fitkit.Trainer(**trainer_kwargs)
    trainer.fit(model, train_loader, val_loader)
    accuracy = float(trainer.callback_metrics["val_acc"])
    say = print if trainer.is_global_zero else _quiet  # with several processes, rank 0 reports
    elapsed = time.perf_counter() - start
    say(f"{trainer.world_size} process(es), {trainer.current_epoch} epochs, {elapsed:.1f} s")
    say(f"val accuracy: {accuracy:.4f}")
    return accuracy


if __name__ == "__main__":
    main()
