"""Callbacks shipped with fitkit. The base class is :class:`Callback`."""

from fitkit.callbacks.callback import Callback
from fitkit.callbacks.model_summary import ModelSummary
from fitkit.callbacks.progress import ProgressBar, TQDMProgressBar

__all__ = ["Callback", "ModelSummary", "ProgressBar", "TQDMProgressBar"]
