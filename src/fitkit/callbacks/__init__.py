"""Callbacks shipped with fitkit. The base class is :class:`Callback`."""

from fitkit.callbacks.callback import Callback
from fitkit.callbacks.checkpoint import Checkpoint
from fitkit.callbacks.early_stopping import EarlyStopping
from fitkit.callbacks.finetuning import BackboneFinetuning, BaseFinetuning
from fitkit.callbacks.gradient_accumulation_scheduler import GradientAccumulationScheduler
from fitkit.callbacks.lambda_function import LambdaCallback
from fitkit.callbacks.lr_monitor import LearningRateMonitor
from fitkit.callbacks.model_checkpoint import ModelCheckpoint
from fitkit.callbacks.model_summary import ModelSummary
from fitkit.callbacks.on_exception_checkpoint import OnExceptionCheckpoint
from fitkit.callbacks.progress import ProgressBar, TQDMProgressBar
from fitkit.callbacks.timer import Timer

__all__ = [
    "Callback",
    "Checkpoint",
    "ModelCheckpoint",
    "OnExceptionCheckpoint",
    "ModelSummary",
    "ProgressBar",
    "TQDMProgressBar",
    "BackboneFinetuning",
    "BaseFinetuning",
    "EarlyStopping",
    "GradientAccumulationScheduler",
    "LambdaCallback",
    "LearningRateMonitor",
    "Timer",
]
