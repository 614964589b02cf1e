"""The Trainer's state and progress counters: plain data, checkpointable."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any


class TrainerFn(str, Enum):
    """Which user-facing method is running."""

    FITTING = "fit"
    VALIDATING = "validate"
    TESTING = "test"
    PREDICTING = "predict"


class TrainerStatus(str, Enum):
    """Where the run is in its life."""

    INITIALIZING = "initializing"
    RUNNING = "running"
    FINISHED = "finished"
    INTERRUPTED = "interrupted"


class RunningStage(str, Enum):
    """Which loop is running right now."""

    TRAINING = "train"
    SANITY_CHECKING = "sanity_check"
    VALIDATING = "validate"
    TESTING = "test"
    PREDICTING = "predict"


@dataclass
class TrainerState:
    """``trainer.state``: the method (``fn``), its status and the running loop (``stage``)."""

    fn: TrainerFn | None = None
    status: TrainerStatus = TrainerStatus.INITIALIZING
    stage: RunningStage | None = None

    @property
    def finished(self) -> bool:
        return self.status == TrainerStatus.FINISHED


@dataclass
class Progress:
    """Counters that say how far training got; all of them survive a checkpoint.

    Attributes:
        current_epoch: epochs completed (0-based index of the running epoch).
        global_step: optimizer steps taken (training batches in manual optimization).
        total_batches: training batches run over the whole fit, all epochs.
        epoch_batches: training batches run in the current epoch.
    """

    current_epoch: int = 0
    global_step: int = 0
    total_batches: int = 0
    epoch_batches: int = 0

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)
