"""``Timer``: time each stage of a run, and stop training after a duration.

This file owns parsing the duration, the per-stage start/end times
(``time.monotonic``), the stop check (once per step or per epoch: one clock read),
and the elapsed training time a checkpoint carries so a resumed run continues its
budget instead of starting a new one.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from fitkit.callbacks.callback import Callback
from fitkit.trainer.arguments import parse_duration
from fitkit.utilities.exceptions import MisconfigurationError, invalid
from fitkit.utilities.rank_zero import rank_zero_print

if TYPE_CHECKING:
    from fitkit.module import Module
    from fitkit.trainer.trainer import Trainer

_STAGES = ("train", "validate", "test", "predict")


class Timer(Callback):
    """Measure the time spent in training, validation, testing and prediction; stop after ``duration``.

    The training budget counts time from ``on_train_start`` (validation inside ``fit``
    included), is checked at the end of every training batch (``interval="step"``) or
    epoch (``interval="epoch"``), and survives a checkpoint: a run resumed with
    ``fit(ckpt_path=...)`` continues with what is left.

    Args:
        duration: the training budget: ``"DD:HH:MM:SS"``, a ``timedelta``, a dict of
            ``timedelta`` arguments (``{"hours": 2}``), or ``None`` to only measure.
        interval: ``"step"`` or ``"epoch"``: how often the budget is checked.
        verbose: print a line when the budget is spent.

    Example::

        >>> import fitkit
        >>> timer = fitkit.callbacks.Timer(duration="00:12:00:00")  # 12 hours
        >>> trainer = fitkit.Trainer(callbacks=[timer], enable_progress_bar=False, logger=False)
        >>> # trainer.fit(model); timer.time_elapsed("train"), timer.time_elapsed("validate")
    """

    def __init__(self, duration: Any = None, interval: str = "step", verbose: bool = True) -> None:
        if interval not in ("step", "epoch"):
            raise MisconfigurationError(invalid("interval", interval, "unknown interval", "'step' or 'epoch'"))
        self._duration = parse_duration("duration", duration, allow_zero=True)
        self._interval = interval
        self._verbose = verbose
        self._start_time: dict[str, float | None] = dict.fromkeys(_STAGES)
        self._end_time: dict[str, float | None] = dict.fromkeys(_STAGES)
        self._offset = 0.0  # training time of the run this one resumes

    @property
    def duration(self) -> float | None:
        """The training budget in seconds (None: no limit)."""
        return self._duration

    @staticmethod
    def _stage(stage: Any) -> str:
        value = getattr(stage, "value", stage)  # accepts a RunningStage
        if value not in _STAGES:
            raise MisconfigurationError(invalid("stage", stage, "unknown stage", f"one of {list(_STAGES)}"))
        return str(value)

    def start_time(self, stage: str = "train") -> float | None:
        """When ``stage`` last started (``time.monotonic()`` seconds), or None."""
        return self._start_time[self._stage(stage)]

    def end_time(self, stage: str = "train") -> float | None:
        """When ``stage`` last ended (``time.monotonic()`` seconds), or None while it runs."""
        return self._end_time[self._stage(stage)]

    def time_elapsed(self, stage: str = "train") -> float:
        """Seconds spent in ``stage`` (for ``"train"``, including the resumed run's time)."""
        stage = self._stage(stage)
        start, end = self._start_time[stage], self._end_time[stage]
        offset = self._offset if stage == "train" else 0.0
        if start is None:
            return offset
        return (time.monotonic() if end is None else end) - start + offset

    def time_remaining(self, stage: str = "train") -> float | None:
        """Seconds left of the budget (negative once overdrawn), or None without a duration."""
        return None if self._duration is None else self._duration - self.time_elapsed(stage)

    # -- stage clocks --------------------------------------------------------------------
    def _begin(self, stage: str) -> None:
        self._start_time[stage] = time.monotonic()
        self._end_time[stage] = None

    def _finish(self, stage: str) -> None:
        self._end_time[stage] = time.monotonic()

    def on_train_start(self, trainer: Trainer, module: Module) -> None:
        self._begin("train")

    def on_train_end(self, trainer: Trainer, module: Module) -> None:
        self._finish("train")

    def on_validation_start(self, trainer: Trainer, module: Module) -> None:
        self._begin("validate")

    def on_validation_end(self, trainer: Trainer, module: Module) -> None:
        self._finish("validate")

    def on_test_start(self, trainer: Trainer, module: Module) -> None:
        self._begin("test")

    def on_test_end(self, trainer: Trainer, module: Module) -> None:
        self._finish("test")

    def on_predict_start(self, trainer: Trainer, module: Module) -> None:
        self._begin("predict")

    def on_predict_end(self, trainer: Trainer, module: Module) -> None:
        self._finish("predict")

    # -- the budget ------------------------------------------------------------------------
    def on_fit_start(self, trainer: Trainer, module: Module) -> None:
        # After a resume the restored budget may already be spent: stop before training.
        if self._duration is not None:
            self._check(trainer)

    def on_train_batch_end(self, trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._interval == "step" and self._duration is not None:
            self._check(trainer)

    def on_train_epoch_end(self, trainer: Trainer, module: Module) -> None:
        if self._interval == "epoch" and self._duration is not None:
            self._check(trainer)

    def _check(self, trainer: Trainer) -> None:
        assert self._duration is not None
        should_stop = self.time_elapsed("train") >= self._duration
        should_stop = bool(trainer.strategy.broadcast(should_stop))  # every process stops together
        if should_stop and not trainer.should_stop:
            trainer.should_stop = True
            if self._verbose:
                elapsed = timedelta(seconds=int(self.time_elapsed("train")))
                rank_zero_print(f"Time limit reached. Elapsed time is {elapsed}. Signaling Trainer to stop.")

    # -- checkpoint ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"time_elapsed": {stage: self.time_elapsed(stage) for stage in _STAGES}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._offset = float(state_dict.get("time_elapsed", {}).get("train", 0.0))
