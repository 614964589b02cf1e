"""The callbacks a Trainer adds by itself and the order all callbacks run in.

``enable_progress_bar``, ``enable_model_summary`` and ``enable_checkpointing`` add
their default callback unless the user passed one of that kind. User callbacks run
in the order given; :class:`~fitkit.callbacks.checkpoint.Checkpoint` callbacks run
last so they see every metric.
"""

from __future__ import annotations

from collections.abc import Sequence

from fitkit.callbacks.callback import Callback
from fitkit.callbacks.checkpoint import Checkpoint
from fitkit.callbacks.model_checkpoint import ModelCheckpoint
from fitkit.callbacks.model_summary import ModelSummary
from fitkit.callbacks.progress import ProgressBar, TQDMProgressBar
from fitkit.utilities.exceptions import MisconfigurationError, invalid


def assemble_callbacks(
    user: Sequence[Callback],
    *,
    enable_progress_bar: bool,
    enable_model_summary: bool,
    enable_checkpointing: bool,
) -> list[Callback]:
    """The Trainer's callback list: the user's, the defaults, checkpoint callbacks last."""
    callbacks = list(user)
    if enable_model_summary and not any(isinstance(c, ModelSummary) for c in callbacks):
        callbacks.append(ModelSummary())
    bars = [c for c in callbacks if isinstance(c, ProgressBar)]
    if bars and not enable_progress_bar:
        raise MisconfigurationError(
            invalid(
                "enable_progress_bar",
                False,
                f"callbacks holds a progress bar ({type(bars[0]).__name__})",
                "enable_progress_bar=True with your bar, or no ProgressBar in callbacks",
            )
        )
    if len(bars) > 1:
        raise MisconfigurationError(
            invalid(
                "callbacks",
                [type(b).__name__ for b in bars],
                "only one progress bar can draw",
                "at most one ProgressBar",
            )
        )
    if enable_progress_bar and not bars:
        callbacks.append(TQDMProgressBar())
    checkpoints = [c for c in callbacks if isinstance(c, Checkpoint)]
    if checkpoints and not enable_checkpointing:
        raise MisconfigurationError(
            invalid(
                "enable_checkpointing",
                False,
                f"callbacks holds a checkpoint callback ({type(checkpoints[0]).__name__})",
                "enable_checkpointing=True with your checkpoint callback, or no Checkpoint in callbacks",
            )
        )
    if enable_checkpointing and not checkpoints:
        callbacks.append(ModelCheckpoint())
    return [c for c in callbacks if not isinstance(c, Checkpoint)] + [c for c in callbacks if isinstance(c, Checkpoint)]
