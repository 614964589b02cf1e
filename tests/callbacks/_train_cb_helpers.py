"""Shared pieces of the training-callback tests (EarlyStopping, LR monitor, Timer, ...).

Not a test module (no ``test_`` prefix): a tiny model, loaders, a collecting Logger,
a Trainer factory with the defaults switched off, and a checkpoint-saving callback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

import fitkit as fk
from fitkit.callbacks.checkpoint import Checkpoint
from fitkit.loggers import Logger
from fitkit.testing import BoringModule, RandomDataset

FEATURES = 4


def loader(num_batches: int, batch_size: int = 2) -> DataLoader[torch.Tensor]:
    return DataLoader(RandomDataset(FEATURES, num_batches * batch_size), batch_size=batch_size)


class Model(BoringModule):
    """BoringModule on FEATURES inputs without its own loaders."""

    train_dataloader = val_dataloader = test_dataloader = predict_dataloader = None  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__(FEATURES, 2)


def trainer(**kwargs: Any) -> fk.Trainer:
    kwargs.setdefault("enable_progress_bar", False)
    kwargs.setdefault("enable_model_summary", False)
    kwargs.setdefault("enable_checkpointing", False)
    kwargs.setdefault("logger", False)
    kwargs.setdefault("num_sanity_val_steps", 0)
    return fk.Trainer(**kwargs)


class CollectLogger(Logger):
    """Keeps every ``log_metrics`` call as ``(metrics, step)``."""

    def __init__(self) -> None:
        self.calls: list[tuple[dict[str, float], int | None]] = []

    def log_metrics(self, metrics: Any, step: int | None = None) -> None:
        self.calls.append((dict(metrics), step))

    def log_hyperparams(self, params: Any, metrics: Any = None) -> None:
        pass

    def series(self, key: str) -> list[tuple[int | None, float]]:
        """``(step, value)`` of every call that logged ``key``."""
        return [(step, m[key]) for m, step in self.calls if key in m]


class SaveAtEpochEnd(Checkpoint):
    """Writes a checkpoint when epoch ``epoch`` ends (where a ModelCheckpoint would)."""

    def __init__(self, path: Path, epoch: int) -> None:
        self.path, self.epoch = path, epoch

    def on_train_epoch_end(self, trainer: fk.Trainer, module: Any) -> None:
        if trainer.current_epoch == self.epoch:
            trainer.save_checkpoint(self.path)
