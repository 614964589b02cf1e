"""Experiment loggers: TensorBoard, CSV, and the base class for your own."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterable
from typing import Any

from fitkit.loggers._common import share_versions
from fitkit.loggers.csv_logs import CSVLogger
from fitkit.loggers.logger import Logger
from fitkit.loggers.tensorboard import TensorBoardLogger
from fitkit.utilities.exceptions import FitkitTypeError, invalid

__all__ = ["CSVLogger", "Logger", "TensorBoardLogger", "resolve_loggers"]


def resolve_loggers(logger: Any, default_root_dir: str) -> list[Logger]:
    """Turn ``Trainer(logger=...)`` into a list of Logger objects.

    ``True`` means the default logger, ``False``/``None`` none, a Logger one, and an
    iterable of Loggers several.
    """
    if logger is None or logger is False:
        return []
    if logger is True:
        return _default_loggers(default_root_dir)
    if isinstance(logger, Logger):
        return [logger]
    if isinstance(logger, Iterable) and not isinstance(logger, (str, bytes)):
        loggers = list(logger)
        bad = [lg for lg in loggers if not isinstance(lg, Logger)]
        if not bad:
            share_versions(loggers)
            return loggers
    raise FitkitTypeError(
        invalid("logger", logger, "it is not a Logger", "True, False, None, a fitkit Logger, or a list of Loggers")
    )


def _default_loggers(default_root_dir: str) -> list[Logger]:
    """``logger=True``: TensorBoard when ``tensorboard`` is installed, else CSV, in ``<root>/fitkit_logs``."""
    save_dir = os.fspath(default_root_dir)
    return [TensorBoardLogger(save_dir) if _tensorboard_available() else CSVLogger(save_dir)]


def _tensorboard_available() -> bool:
    return importlib.util.find_spec("tensorboard") is not None  # finds it without importing it
