"""``Checkpoint``: the base class of callbacks that write checkpoints.

The Trainer runs Checkpoint callbacks after every other callback, and for
``on_train_epoch_end`` after the module's own hook, the epoch's metric reduction and
the epoch's LR-scheduler steps, so what they save is the state the next epoch starts
from and the metrics they monitor are never stale.
"""

from __future__ import annotations

from fitkit.callbacks.callback import Callback


class Checkpoint(Callback):
    """Marker base class for checkpoint-writing callbacks (``ModelCheckpoint`` and friends)."""
