"""``fitkit.DataModule``: where the data comes from, kept apart from the model."""

from __future__ import annotations

import os
from typing import Any

from typing_extensions import Self

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

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: str | os.PathLike[str], **hparam_overrides: Any) -> Self:
        """Build the DataModule from a checkpoint's saved hyperparameters and state.

        Example::

            dm = MyData.load_from_checkpoint("last.ckpt", batch_size=64)
        """
        from fitkit import checkpoint as ckpt_io
        from fitkit.hparams import saved_hparams
        from fitkit.module import _construct

        checkpoint = ckpt_io.load(checkpoint_path, map_location="cpu")
        kwargs = {**saved_hparams(checkpoint, "datamodule_hyper_parameters"), **hparam_overrides}
        dm = _construct(cls, kwargs)
        if "datamodule" in checkpoint:
            dm.load_state_dict(checkpoint["datamodule"])
        return dm
