"""fitkit: a Lightning-style training library for PyTorch that costs nothing per step.

Public API::

    import fitkit as fk
    fk.Module, fk.DataModule, fk.Trainer, fk.Callback, fk.seed_everything
"""

from fitkit._version import __version__
from fitkit.callbacks.callback import Callback
from fitkit.datamodule import DataModule
from fitkit.module import Module
from fitkit.trainer.trainer import Trainer
from fitkit.utilities.exceptions import (
    FitkitError,
    FitkitRuntimeError,
    FitkitTypeError,
    MisconfigurationError,
)
from fitkit.utilities.seed import seed_everything

__all__ = [
    "Callback",
    "DataModule",
    "FitkitError",
    "FitkitRuntimeError",
    "FitkitTypeError",
    "MisconfigurationError",
    "Module",
    "Trainer",
    "__version__",
    "seed_everything",
]
