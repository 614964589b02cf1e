"""A small DDP job that breaks on purpose, for ``test_faults.py``.

Run as ``python _fault_script.py '<json config>'`` (fitkit's launcher or ``ddp_spawn``)
or under ``torchrun``. The config says which rank breaks (``fail_rank``), at which
training batch (``fail_step``, default 1) and how: ``"raise"`` (a ``RuntimeError`` in
``training_step``) or ``"kill"`` (the rank sends itself SIGKILL). ``timeout_s`` is
the process group's timeout; ``devices`` and ``strategy`` go to the Trainer. The
failing rank writes ``time.time()`` to ``stamp`` (a path) just before it fails.
Every batch does a collective (DDP's gradient all-reduce), so the surviving ranks
notice the broken one at their next step.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import sys
import time
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fitkit as fk
from fitkit.strategies import DDPStrategy


class Breaking(fk.Module):
    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 1)
        self.cfg = cfg

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        cfg = self.cfg
        if cfg.get("fail_rank") == self.global_rank and batch_idx == cfg.get("fail_step", 1):
            if cfg.get("stamp"):  # when the fault happened, for the test to time the job's end
                with open(cfg["stamp"], "w") as f:
                    f.write(repr(time.time()))
            sys.stdout.flush()
            sys.stderr.flush()
            if cfg.get("fault", "raise") == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"boom on rank {self.global_rank}")
        x, y = batch
        return ((self.layer(x) - y) ** 2).mean()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def main(cfg: dict[str, Any]) -> None:
    strategy = DDPStrategy(
        timeout=datetime.timedelta(seconds=cfg.get("timeout_s", 10)),
        start_method="spawn" if cfg.get("strategy") == "ddp_spawn" else "popen",
    )
    trainer = fk.Trainer(
        accelerator="cpu",
        devices=cfg.get("devices", 2),
        strategy=strategy,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    loader = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)
    trainer.fit(Breaking(cfg), loader)
    if trainer.is_global_zero:
        print("fitkit-fault-script: finished", flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
