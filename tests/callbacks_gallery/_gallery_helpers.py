"""Shared pieces of the gallery tests: load a recipe from ``callbacks/`` by path, a recording logger.

Not a test module (no ``test_`` prefix). The gallery is not a package: users copy a
file, so the tests import each one by its path, as a user's script would.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch.utils.data import DataLoader

import fitkit as fk
from fitkit.loggers import Logger
from fitkit.testing import BoringModule, RandomDataset

GALLERY = Path(__file__).resolve().parents[2] / "callbacks"


def load(name: str) -> ModuleType:
    """Import ``callbacks/<name>.py`` as module ``gallery_<name>``."""
    path = GALLERY / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"gallery_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class RecordingLogger(Logger):
    """Keeps every ``log_metrics`` call as ``(step, metrics)``."""

    def __init__(self) -> None:
        self.records: list[tuple[int | None, dict[str, float]]] = []

    def log_metrics(self, metrics: Any, step: int | None = None) -> None:
        self.records.append((step, dict(metrics)))

    def log_hyperparams(self, params: Any, metrics: Any = None) -> None: ...

    def with_key(self, key: str) -> list[tuple[int | None, dict[str, float]]]:
        return [(step, m) for step, m in self.records if key in m]


class Model(BoringModule):
    """BoringModule without its own loaders (each test passes what it needs)."""

    train_dataloader = val_dataloader = test_dataloader = None  # type: ignore[assignment]

    def __init__(self, in_features: int = 8) -> None:
        super().__init__(in_features, 2)


def loader(batches: int, batch_size: int = 4, features: int = 8) -> DataLoader[torch.Tensor]:
    return DataLoader(RandomDataset(features, batches * batch_size), batch_size=batch_size)


def trainer(**kwargs: Any) -> fk.Trainer:
    kwargs.setdefault("logger", False)
    kwargs.setdefault("enable_progress_bar", False)
    kwargs.setdefault("enable_model_summary", False)
    kwargs.setdefault("enable_checkpointing", False)
    kwargs.setdefault("num_sanity_val_steps", 0)
    kwargs.setdefault("max_epochs", 1)
    return fk.Trainer(**kwargs)
