"""Shared pieces of the Trainer-argument tests: a tiny model, loaders, and counting callbacks.

Not a test module (no ``test_`` prefix); imported by ``test_trainer_arguments.py``,
``test_trainer_step_arguments.py``, ``test_trainer_loop_control.py`` and
``test_trainer_data_flow.py``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

import fitkit as fk
from fitkit.testing import BoringModule, RandomDataset

FEATURES = 4


def loader(num_batches: int, batch_size: int = 2, **kwargs: Any) -> DataLoader[torch.Tensor]:
    return DataLoader(RandomDataset(FEATURES, num_batches * batch_size), batch_size=batch_size, **kwargs)


class IndexDataset(Dataset[torch.Tensor]):
    """Item ``i`` is a vector filled with ``i``: batches say which items they hold."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.full((FEATURES,), float(index))

    def __len__(self) -> int:
        return self.length


class Model(BoringModule):
    """BoringModule without its own loaders: each test passes the data it counts."""

    train_dataloader = val_dataloader = test_dataloader = predict_dataloader = None  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__(FEATURES, 2)


def trainer(**kwargs: Any) -> fk.Trainer:
    kwargs.setdefault("enable_progress_bar", False)
    kwargs.setdefault("logger", False)
    kwargs.setdefault("num_sanity_val_steps", 0)
    return fk.Trainer(**kwargs)


class Counter(fk.Callback):
    """Counts what a fit did; records where each validation run happened."""

    def __init__(self) -> None:
        self.epochs = 0
        self.train_batches = 0
        self.batch_idx: list[tuple[int, int]] = []  # (epoch, batch_idx) of every trained batch
        self.backwards = 0
        self.optimizer_steps = 0
        self.val_runs = 0
        self.val_batches = 0
        self.sanity_runs = 0
        self.sanity_batches = 0
        self.val_at: list[tuple[int, int]] = []  # (epoch, training batches so far) at each validation

    def on_train_epoch_start(self, trainer: fk.Trainer, module: fk.Module) -> None:
        self.epochs += 1

    def on_train_batch_end(
        self, trainer: fk.Trainer, module: fk.Module, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.train_batches += 1
        self.batch_idx.append((trainer.current_epoch, batch_idx))

    def on_before_backward(self, trainer: fk.Trainer, module: fk.Module, loss: Any) -> None:
        self.backwards += 1

    def on_before_zero_grad(self, trainer: fk.Trainer, module: fk.Module, optimizer: Any) -> None:
        self.optimizer_steps += 1

    def on_validation_start(self, trainer: fk.Trainer, module: fk.Module) -> None:
        if trainer.sanity_checking:
            self.sanity_runs += 1
        else:
            self.val_runs += 1
            self.val_at.append((trainer.current_epoch, self.train_batches))

    def on_validation_batch_end(
        self, trainer: fk.Trainer, module: fk.Module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        if trainer.sanity_checking:
            self.sanity_batches += 1
        else:
            self.val_batches += 1


def fit(
    num_batches: int = 4, val_batches: int | None = 2, model: fk.Module | None = None, train: Any = None, **kwargs: Any
) -> tuple[fk.Trainer, Counter]:
    counter = Counter()
    kwargs["callbacks"] = [counter, *kwargs.get("callbacks", [])]
    t = trainer(**kwargs)
    val = loader(val_batches) if val_batches is not None else None
    t.fit(model or Model(), train if train is not None else loader(num_batches), val)
    return t, counter


class StopAt(fk.Callback):
    """Sets ``trainer.should_stop`` once, after the given (epoch, batch_idx)."""

    def __init__(self, epoch: int = 0, batch_idx: int = 0) -> None:
        self.at = (epoch, batch_idx)

    def on_train_batch_end(
        self, trainer: fk.Trainer, module: fk.Module, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if (trainer.current_epoch, batch_idx) == self.at:
            trainer.should_stop = True


class StepCounter(Model):
    def __init__(self) -> None:
        super().__init__()
        self.steps: dict[str, list[int]] = {"test": [], "predict": [], "validate": []}

    def validation_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        self.steps["validate"].append(batch_idx)
        return super().validation_step(batch, batch_idx)

    def test_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        self.steps["test"].append(batch_idx)
        return super().test_step(batch, batch_idx)

    def predict_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        self.steps["predict"].append(batch_idx)
        return super().predict_step(batch, batch_idx)


class Steps(fk.Callback):
    """Counts optimizer steps and records (epoch, global_step) at every training batch start."""

    def __init__(self) -> None:
        self.optimizer_steps = 0
        self.backwards = 0
        self.at_batch_start: list[tuple[int, int]] = []
        self.batches: list[tuple[int, int]] = []

    def on_train_batch_start(self, trainer: fk.Trainer, module: fk.Module, batch: Any, batch_idx: int) -> None:
        self.at_batch_start.append((trainer.current_epoch, trainer.global_step))

    def on_train_batch_end(
        self, trainer: fk.Trainer, module: fk.Module, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self.batches.append((trainer.current_epoch, batch_idx))

    def on_before_backward(self, trainer: fk.Trainer, module: fk.Module, loss: Any) -> None:
        self.backwards += 1

    def on_before_zero_grad(self, trainer: fk.Trainer, module: fk.Module, optimizer: Any) -> None:
        self.optimizer_steps += 1


class Stream(IterableDataset[torch.Tensor]):
    """``n`` ready-made batches, no ``__len__``."""

    def __init__(self, n: int, batch_size: int = 2) -> None:
        self.n, self.batch_size = n, batch_size

    def __iter__(self) -> Any:
        for i in range(self.n):
            yield torch.full((self.batch_size, FEATURES), float(i))
