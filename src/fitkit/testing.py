"""Small fixtures for tests and bug reports: :class:`BoringModule`, :class:`RandomDataset`
and :func:`quiet_trainer`.

Subclass ``BoringModule`` and override the one hook a test is about.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from fitkit.module import Module
from fitkit.trainer.trainer import Trainer

_QUIET = {
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "enable_checkpointing": False,
    "logger": False,
}


def quiet_trainer(**kwargs: Any) -> Trainer:
    """A Trainer that draws, prints and writes nothing unless ``kwargs`` turn it back on.

    Example::

        >>> quiet_trainer(max_epochs=1).loggers
        []
    """
    return Trainer(**{**_QUIET, **kwargs})


class RandomDataset(Dataset[torch.Tensor]):
    """``length`` random vectors of ``size`` features, drawn once from torch's global RNG.

    Example::

        >>> len(RandomDataset(32, 64))
        64
    """

    def __init__(self, size: int = 32, length: int = 64) -> None:
        self.data = torch.randn(length, size)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.data[index]

    def __len__(self) -> int:
        return len(self.data)


class BoringModule(Module):
    """A linear layer trained to push its outputs to zero: every hook works, nothing is learned.

    Example::

        >>> import fitkit
        >>> trainer = fitkit.Trainer(max_epochs=1, enable_progress_bar=False, logger=False)
        >>> trainer.fit(BoringModule())
    """

    def __init__(self, in_features: int = 32, out_features: int = 2) -> None:
        super().__init__()
        self.layer = nn.Linear(in_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)

    def loss(self, preds: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(preds, torch.zeros_like(preds))

    def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        return self.loss(self(batch))

    def validation_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        loss = self.loss(self(batch))
        self.log("val_loss", loss)
        return loss

    def test_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        loss = self.loss(self(batch))
        self.log("test_loss", loss)
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.layer.parameters(), lr=0.1)

    def train_dataloader(self) -> DataLoader[torch.Tensor]:
        return DataLoader(RandomDataset(32, 64), batch_size=2)

    def val_dataloader(self) -> DataLoader[torch.Tensor]:
        return DataLoader(RandomDataset(32, 64), batch_size=2)

    def test_dataloader(self) -> DataLoader[torch.Tensor]:
        return DataLoader(RandomDataset(32, 64), batch_size=2)

    def predict_dataloader(self) -> DataLoader[torch.Tensor]:
        return DataLoader(RandomDataset(32, 64), batch_size=2)
