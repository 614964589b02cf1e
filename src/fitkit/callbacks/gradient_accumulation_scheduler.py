"""``GradientAccumulationScheduler``: change ``accumulate_grad_batches`` by epoch.

This file owns validating the schedule, setting ``trainer.accumulate_grad_batches``
at each training epoch start (the fit loop reads it after ``on_train_epoch_start``),
and refusing set-ups it cannot work with (manual optimization, a Trainer-level
``accumulate_grad_batches``). The Trainer's own value is put back when ``fit`` ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fitkit.callbacks.callback import Callback
from fitkit.utilities.exceptions import FitkitTypeError, MisconfigurationError, invalid

if TYPE_CHECKING:
    from fitkit.module import Module
    from fitkit.trainer.trainer import Trainer


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class GradientAccumulationScheduler(Callback):
    """Accumulate gradients over a number of batches that changes with the epoch.

    ``scheduling`` maps the first epoch (0-based) of each phase to its accumulation
    factor; epochs before the first key use 1. ``{0: 4, 5: 2, 10: 1}`` accumulates 4
    batches per optimizer step in epochs 0-4, 2 in epochs 5-9 and 1 from epoch 10 on.
    Leave ``Trainer(accumulate_grad_batches=...)`` at 1 when using it.

    Note that ``trainer.estimated_stepping_batches`` (used to size ``OneCycleLR``)
    counts with the factor of the epoch it is read in, not the schedule.

    Args:
        scheduling: ``{epoch: factor}`` with int epochs >= 0 and int factors >= 1.

    Example::

        >>> import fitkit
        >>> accumulate = fitkit.callbacks.GradientAccumulationScheduler({0: 8, 4: 4, 8: 1})
        >>> accumulate.get_accumulate_grad_batches(5)
        4
    """

    def __init__(self, scheduling: Mapping[int, int]) -> None:
        expected = "a non-empty dict {epoch: factor} with int epochs >= 0 and int factors >= 1"
        if not isinstance(scheduling, Mapping):
            raise FitkitTypeError(invalid("scheduling", scheduling, "it is not a dict", expected))
        if not scheduling:
            raise MisconfigurationError(invalid("scheduling", scheduling, "it is empty", expected))
        bad_epochs = [k for k in scheduling if not _is_int(k) or k < 0]
        if bad_epochs:
            raise MisconfigurationError(
                invalid("scheduling", dict(scheduling), f"the epochs {bad_epochs} are not ints >= 0", expected)
            )
        bad_factors = [v for v in scheduling.values() if not _is_int(v) or v < 1]
        if bad_factors:
            raise MisconfigurationError(
                invalid("scheduling", dict(scheduling), f"the factors {bad_factors} are not ints >= 1", expected)
            )
        self.scheduling: dict[int, int] = {0: 1, **scheduling}
        self.epochs: list[int] = sorted(self.scheduling)
        self._trainer_value: int | None = None  # the Trainer's own value while fit runs

    def going_to_accumulate_grad_batches(self) -> bool:
        """Whether any phase accumulates more than one batch."""
        return any(v > 1 for v in self.scheduling.values())

    def get_accumulate_grad_batches(self, epoch: int) -> int:
        """The factor for ``epoch``."""
        factor = 1
        for start in self.epochs:
            if epoch >= start:
                factor = self.scheduling[start]
        return factor

    def on_fit_start(self, trainer: Trainer, module: Module) -> None:
        if not module.automatic_optimization:
            raise MisconfigurationError(
                invalid(
                    "callbacks",
                    "GradientAccumulationScheduler",
                    "the module uses manual optimization (automatic_optimization=False), where training_step "
                    "decides when to step",
                    "automatic optimization, or no GradientAccumulationScheduler",
                )
            )
        if trainer.accumulate_grad_batches != 1:
            raise MisconfigurationError(
                invalid(
                    "accumulate_grad_batches",
                    trainer.accumulate_grad_batches,
                    "GradientAccumulationScheduler sets it every epoch",
                    "Trainer(accumulate_grad_batches=1) with the callback, or no callback",
                )
            )
        self._trainer_value = trainer.accumulate_grad_batches

    def on_train_epoch_start(self, trainer: Trainer, module: Module) -> None:
        trainer.accumulate_grad_batches = self.get_accumulate_grad_batches(trainer.current_epoch)

    def teardown(self, trainer: Trainer, module: Module, stage: str) -> None:
        if stage == "fit" and self._trainer_value is not None:
            trainer.accumulate_grad_batches = self._trainer_value
            self._trainer_value = None
