"""The Logger base class: where metrics and hyperparameters go.

The Trainer calls ``log_hyperparams`` once when ``fit`` starts, ``log_metrics``
with float values every ``log_every_n_steps`` and at each epoch end, ``save`` at
epoch ends and ``finalize`` when a run ends. Only global rank zero writes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any


class Logger(ABC):
    """Base class for experiment loggers passed as ``Trainer(logger=...)``.

    Example::

        >>> class PrintLogger(Logger):
        ...     name, version = "print", 0
        ...     def log_metrics(self, metrics, step=None):
        ...         print(step, metrics)
        ...     def log_hyperparams(self, params, metrics=None):
        ...         print(params)
    """

    @property
    def name(self) -> str | None:
        """The experiment's name (a folder under the save directory)."""
        return None

    @property
    def version(self) -> int | str | None:
        """The run's version within the experiment."""
        return None

    @property
    def save_dir(self) -> str | None:
        """The root folder this logger writes under (None if it writes no files)."""
        return None

    @property
    def log_dir(self) -> str | None:
        """The folder of this run's files (None if it writes no files)."""
        return None

    @property
    def experiment(self) -> Any:
        """The underlying writer (e.g. a ``SummaryWriter``) for anything beyond scalars."""
        return None

    @abstractmethod
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Record float ``metrics`` at ``step``."""

    @abstractmethod
    def log_hyperparams(self, params: Mapping[str, Any], metrics: Mapping[str, float] | None = None) -> None:
        """Record the run's hyperparameters (and, optionally, metrics to show beside them)."""

    def log_graph(self, model: Any, input_array: Any = None) -> None:
        """Record the model graph, where the logger supports it."""

    def save(self) -> None:
        """Flush what is buffered to disk."""

    def finalize(self, status: str) -> None:
        """Close the run; ``status`` is ``"success"``, ``"failed"`` or ``"interrupted"``."""
        self.save()
