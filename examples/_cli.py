"""The command-line options every example in the gallery shares, and the Trainer they build.

Each example calls :func:`parser` with its own defaults (the book's hyperparameters),
adds its own options, and passes the parsed arguments to :func:`trainer_kwargs`::

    args = _cli.parser(__doc__, max_epochs=10, batch_size=16).parse_args(argv)
    trainer = fitkit.Trainer(**_cli.trainer_kwargs(args))

Common options: ``--data-dir``, ``--download``, ``--max-epochs``, ``--batch-size``,
``--accelerator``, ``--devices``, ``--strategy``, ``--precision``, ``--fast-dev-run``,
``--seed``, ``--num-workers``, ``--num-threads`` and ``--default-root-dir`` (where
TensorBoard logs and checkpoints go). :func:`missing_data` stops a script with a
message that says what is missing and how to get it.

This file is a helper of the example scripts (``python examples/<name>.py`` puts
``examples/`` on ``sys.path``); it uses only fitkit's public API.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, NoReturn

import torch


def _devices(value: str) -> int | str:
    """``"auto"``, ``"-1"``, ``"2"`` or ``"0,1"``: ints where Lightning's Trainer wants ints."""
    return int(value) if value.lstrip("-").isdigit() else value


def _fast_dev_run(value: str) -> int | bool:
    if value.lower() in ("true", "yes"):
        return True
    if value.lower() in ("false", "no"):
        return False
    return int(value)


def parser(doc: str | None, *, max_epochs: int, batch_size: int, data_dir: str = "data") -> argparse.ArgumentParser:
    """An ``ArgumentParser`` with the gallery's common options and this example's defaults."""
    p = argparse.ArgumentParser(
        description=(doc or "").strip().splitlines()[0] if doc else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data-dir", type=Path, default=Path(data_dir), help="where the dataset is (or goes)")
    p.add_argument("--download", action="store_true", help="download the dataset into --data-dir if missing")
    p.add_argument("--max-epochs", type=int, default=max_epochs, help="training epochs (the book's by default)")
    p.add_argument("--batch-size", type=int, default=batch_size, help="training batch size (the book's by default)")
    p.add_argument("--accelerator", default="auto", help="cpu, cuda/gpu, mps or auto")
    p.add_argument("--devices", type=_devices, default="auto", help='how many (or which) devices: 1, 2, "0,1", auto')
    p.add_argument("--strategy", default="auto", help="auto, ddp, ddp_spawn or fsdp")
    p.add_argument("--precision", default="32-true", help="32-true, 16-mixed, bf16-mixed, 64-true, ...")
    p.add_argument(
        "--fast-dev-run", type=_fast_dev_run, default=False, help="run N batches of each stage (or 1 with 'true')"
    )
    p.add_argument("--seed", type=int, default=0, help="seed for splits, initial weights and shuffling")
    p.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes")
    p.add_argument("--num-threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--default-root-dir", type=Path, default=None, help="where logs and checkpoints go (default: .)")
    return p


def trainer_kwargs(args: argparse.Namespace, **overrides: Any) -> dict[str, Any]:
    """The ``fitkit.Trainer`` arguments the common options ask for (``overrides`` win)."""
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    kwargs: dict[str, Any] = {
        "max_epochs": args.max_epochs,
        "accelerator": args.accelerator,
        "devices": args.devices,
        "strategy": args.strategy,
        "precision": args.precision,
        "fast_dev_run": args.fast_dev_run,
        "default_root_dir": args.default_root_dir,
    }
    kwargs.update(overrides)
    return kwargs


def missing_data(what: str, where: Path, how: str) -> NoReturn:
    """Stop with a message naming the missing dataset, where it was looked for and how to get it."""
    raise SystemExit(f"error: {what} not found in {where}.\n{how}")
