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


def assemble_callbacks(
    user: Sequence[Callback],
    *,
    enable_progress_bar: bool,
    enable_model_summary: bool,
    enable_checkpointing: bool,
) -> list[Callback]:
    """The Trainer's callback list: the user's, the defaults, checkpoint callbacks last."""
    callbacks = list(user)
    return [c for c in callbacks if not isinstance(c, Checkpoint)] + [c for c in callbacks if isinstance(c, Checkpoint)]
