"""``fitkit.DataModule``: where the data comes from, kept apart from the model."""

from __future__ import annotations

from typing import Any

from fitkit.hparams import HyperparametersMixin


class DataModule(HyperparametersMixin):
    """Groups data download, splits and loaders for ``trainer.fit(model, datamodule=dm)``.

    The Trainer calls ``prepare_data`` once, then ``setup(stage)`` with ``"fit"``,
    ``"validate"``, ``"test"`` or ``"predict"``, then the matching ``*_dataloader``
    methods, and ``teardown(stage)`` at the end.

    Example::

        >>> import torch, fitkit
        >>> from torch.utils.data import DataLoader, TensorDataset
        >>> class Ones(fitkit.DataModule):
        ...     def setup(self, stage):
        ...         self.data = TensorDataset(torch.ones(8, 2), torch.zeros(8))
        ...     def train_dataloader(self):
        ...         return DataLoader(self.data, batch_size=4)
    """

    def prepare_data(self) -> None:
        """Download or write files; called once per machine, before ``setup``."""

    def setup(self, stage: str) -> None:
        """Build datasets for ``stage``; called in every process."""

    def teardown(self, stage: str) -> None:
        """Release what ``setup`` built."""

    def state_dict(self) -> dict[str, Any]:
        """State to keep in checkpoints."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
