"""The training run the signal tests interrupt: ``python _signal_script.py '<json config>'``.

It trains a small model with dropout and a shuffled loader (so a resume has RNG
streams and a data order to get right) under an ``OnExceptionCheckpoint``. When it
reaches global step ``cfg["signal_at"]`` it prints ``REACHED <step>`` and waits in
``on_train_batch_end`` until a signal arrives, so that the test knows exactly where
the interruption lands. What ``fit`` did is written to ``cfg["out"]`` (JSON, one file
per rank: ``<out>.<rank>``), also when it ends the process with ``SystemExit``. After a
``fit`` that returned, ``cfg["then"]`` (another config) runs next in the same process.

The same :func:`train` runs in the test process for the uninterrupted reference and
the resumed run, so the three can be compared bitwise. Under ``cfg["ddp"]`` each rank
is started by the test with torchrun-style variables in its environment.
"""

from __future__ import annotations

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
from fitkit.callbacks import OnExceptionCheckpoint
from fitkit.loggers import Logger

WAIT_S = 60.0  # how long the paused rank waits for the test's signal before giving up


class Net(fk.Module):
    """``kill``: (batch number, signal numbers) -- this process signals itself in that training batch."""

    def __init__(self, kill: tuple[int, list[int]] | None = None, step_sleep: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))
        self.kill = kill
        self.step_sleep = step_sleep  # a floor under the step time (the DDP signal exchange spacing reads it)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if self.step_sleep:
            time.sleep(self.step_sleep)
        if self.kill is not None and self.trainer.progress.total_batches == self.kill[0]:
            for signum in self.kill[1]:
                os.kill(os.getpid(), signum)  # a real signal; its handler runs right here
        x, y = batch
        return nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 7, 0.5)}


class Pause(fk.Callback):
    """At ``step``: say so on stdout, then wait for the signal (``twice``: for a second one too)."""

    def __init__(self, step: int, twice: bool) -> None:
        self.step = step
        self.twice = twice

    def on_train_batch_end(self, trainer: fk.Trainer, module: fk.Module, *args: Any) -> None:
        if trainer.global_step != self.step:
            return
        print(f"REACHED {self.step}", flush=True)
        _wait(lambda: trainer._signals is not None and bool(trainer._signals.received))
        if self.twice:
            print("GOT1", flush=True)
            time.sleep(WAIT_S)  # the second signal raises KeyboardInterrupt in here, mid-hook


class RecordFinalize(Logger):
    """A logger that remembers the status ``finalize`` was called with."""

    def __init__(self) -> None:
        self.status: str | None = None

    def log_metrics(self, metrics: Any, step: int | None = None) -> None:
        pass

    def log_hyperparams(self, params: Any, metrics: Any = None) -> None:
        pass

    def finalize(self, status: str) -> None:
        self.status = status


def _wait(done: Any) -> None:
    deadline = time.monotonic() + WAIT_S
    while not done() and time.monotonic() < deadline:
        time.sleep(0.01)  # the handler runs between these sleeps


def build(cfg: dict[str, Any]) -> tuple[Net, fk.Trainer, DataLoader[Any], RecordFinalize]:
    torch.set_num_threads(1)  # the same float sums in every process
    torch.manual_seed(0)
    model = Net(cfg.get("kill"), cfg.get("step_sleep", 0.0))
    x = torch.randn(128, 8)
    data = TensorDataset(x, x.sum(1, keepdim=True) + 0.1 * torch.randn(128, 1))
    callbacks: list[fk.Callback] = [OnExceptionCheckpoint(cfg["ckpt_dir"]), *cfg.get("callbacks", [])]
    if cfg.get("signal_at") is not None and cfg.get("pause_rank", 0) == int(os.environ.get("RANK", "0")):
        callbacks.append(Pause(cfg["signal_at"], cfg.get("twice", False)))
    logger = RecordFinalize()
    trainer = fk.Trainer(
        accelerator="cpu",
        devices=2 if cfg.get("ddp") else 1,
        strategy="ddp" if cfg.get("ddp") else "auto",
        max_epochs=2,
        accumulate_grad_batches=cfg.get("accumulate", 1),
        callbacks=callbacks,
        logger=logger,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=cfg["ckpt_dir"],
    )
    return model, trainer, DataLoader(data, batch_size=8, shuffle=True), logger


def train(cfg: dict[str, Any]) -> tuple[Net, fk.Trainer, RecordFinalize]:
    """Build and fit; returns what the tests compare."""
    model, trainer, loader, logger = build(cfg)
    trainer.fit(model, loader, ckpt_path=cfg.get("ckpt_path"))
    return model, trainer, logger


def _custom_sigterm(signum: int, frame: Any) -> None:  # only installed to see it come back
    raise SystemExit(99)


def main(cfg: dict[str, Any]) -> None:
    rank = int(os.environ.get("RANK", "0"))
    out = f"{cfg['out']}.{rank}"
    signal.signal(signal.SIGTERM, _custom_sigterm)
    result: dict[str, Any] = {}
    model, trainer, loader, logger = build(cfg)
    try:
        trainer.fit(model, loader, ckpt_path=cfg.get("ckpt_path"))
        result["returned"] = True
    except SystemExit as exc:
        result["exit_code"] = exc.code
        raise
    finally:
        result.update(
            interrupted=trainer.interrupted,
            received_sigterm=trainer.received_sigterm,
            global_step=trainer.global_step,
            logger_status=logger.status,
            sigint_restored=signal.getsignal(signal.SIGINT) is signal.default_int_handler,
            sigterm_restored=signal.getsignal(signal.SIGTERM) is _custom_sigterm,
        )
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "w") as f:
            json.dump(result, f)
        if cfg.get("weights_out") and rank == 0:
            torch.save(model.state_dict(), cfg["weights_out"])
    if cfg.get("then"):  # a second run in the same process (one child, two scenarios)
        main(cfg["then"])


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
