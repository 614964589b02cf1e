"""Shared pieces of the XLA tests: the CPU backend, a small regression model, fixed data.

Not a test module. Importing it selects torch_xla's CPU backend (``PJRT_DEVICE=CPU``)
unless the environment chose one, before torch_xla starts its runtime. The models
draw nothing at random after construction, so a run on ``accelerator="xla"`` and one
on ``"cpu"`` can be compared step by step.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fitkit as fk
from fitkit.testing import quiet_trainer

os.environ.setdefault("PJRT_DEVICE", "CPU")

IN, OUT = 8, 2


def data(n: int = 32, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, IN, generator=g)
    w = torch.randn(IN, OUT, generator=g)
    return TensorDataset(x, x @ w + 0.1 * torch.randn(n, OUT, generator=g))


def loader(n: int = 32, batch_size: int = 4, seed: int = 0) -> DataLoader[Any]:
    return DataLoader(data(n, seed), batch_size=batch_size)


class Regressor(fk.Module):
    """A two-layer MLP on (x, y) batches; logs its loss every step."""

    def __init__(self, lr: float = 0.05) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.lr = lr
        self.net = nn.Sequential(nn.Linear(IN, 16), nn.Tanh(), nn.Linear(16, OUT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # type: ignore[no-any-return]

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self(x), y))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("test_loss", nn.functional.mse_loss(self(x), y))

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self(batch[0])  # type: ignore[no-any-return]

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


class LossRecorder(fk.Callback):
    """Keeps every training loss as the tensor it is (read on the host only at the end)."""

    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.losses.append(outputs["loss"])

    def values(self) -> list[float]:
        return [float(v.cpu()) for v in self.losses]


def trainer(**kwargs: Any) -> fk.Trainer:
    return quiet_trainer(**{"accelerator": "xla", "num_sanity_val_steps": 0, **kwargs})
