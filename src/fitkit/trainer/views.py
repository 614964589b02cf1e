"""Read-only views of a Trainer's state: counters, metrics, ranks, stage flags.

Kept apart from ``trainer.py`` so the Trainer's own file holds its arguments, its
entry points and the one place hooks fire. Everything here derives from state the
Trainer owns; nothing here changes it.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from fitkit.trainer.state import RunningStage, TrainerStatus

if TYPE_CHECKING:
    from fitkit.loggers import Logger
    from fitkit.strategies.strategy import Strategy
    from fitkit.trainer.logging import Results
    from fitkit.trainer.optimization import OptimizationPlan
    from fitkit.trainer.state import Progress, TrainerState


class TrainerViews:
    """Properties of :class:`fitkit.Trainer`, computed from its state."""

    strategy: Strategy
    progress: Progress
    state: TrainerState
    loggers: list[Logger]
    default_root_dir: str
    max_epochs: int
    max_steps: int
    accumulate_grad_batches: int
    num_training_batches: int | float
    _results: Results
    _optimization: OptimizationPlan
    _received_sigterm: bool
    _skipped_nonfinite: int

    @property
    def current_epoch(self) -> int:
        return self.progress.current_epoch

    @property
    def global_step(self) -> int:
        return self.progress.global_step

    @property
    def skipped_nonfinite_steps(self) -> int:
        """Training losses dropped in this ``fit`` because they were NaN or infinite (``nonfinite_loss="skip"``).

        Counts ``training_step`` results (micro-batches, with gradient accumulation) and
        ``manual_backward`` calls; not saved in checkpoints.
        """
        return self._skipped_nonfinite

    @property
    def interrupted(self) -> bool:
        """Whether the last ``fit``/``validate``/``test``/``predict`` ended early: Ctrl-C, SIGTERM or an exception.

        After a Ctrl-C the stage returns normally and this is how to tell (as in Lightning).
        """
        return self.state.status == TrainerStatus.INTERRUPTED

    @property
    def received_sigterm(self) -> bool:
        """Whether the running (or last) stage was asked to terminate: this process (or any rank) got SIGTERM."""
        return self._received_sigterm

    @property
    def callback_metrics(self) -> dict[str, Any]:
        """Everything logged, latest values (tensors): what callbacks and schedulers monitor."""
        return self._results.callback_metrics

    @property
    def logged_metrics(self) -> dict[str, Any]:
        """What was sent (or would be sent) to loggers, latest values (tensors)."""
        return self._results.logged_metrics

    @property
    def progress_bar_metrics(self) -> dict[str, float]:
        """Metrics logged with ``prog_bar=True``, as floats (the latest step values included).

        Reading it copies each value to the host, so the progress bar reads it only
        when it redraws.
        """
        if self.training:
            self._results.update_step_progress_bar("train")
        return {k: float(v) for k, v in self._results.progress_bar_metrics.items()}

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return self._optimization.optimizers

    @property
    def lr_scheduler_configs(self) -> list[Any]:
        return self._optimization.schedulers

    @property
    def precision(self) -> str:
        """The number format's name, e.g. ``"32-true"`` or ``"bf16-mixed"`` (as in Lightning)."""
        return str(getattr(self.strategy.precision, "name", type(self.strategy.precision).__name__))

    @property
    def precision_plugin(self) -> Any:
        """The Precision object itself (autocast context, gradient scaler, ...)."""
        return self.strategy.precision

    @property
    def accelerator(self) -> Any:
        return self.strategy.accelerator

    @property
    def world_size(self) -> int:
        return self.strategy.world_size

    @property
    def global_rank(self) -> int:
        return self.strategy.global_rank

    @property
    def local_rank(self) -> int:
        return self.strategy.local_rank

    @property
    def node_rank(self) -> int:
        return self.strategy.node_rank

    @property
    def is_global_zero(self) -> bool:
        return self.strategy.is_global_zero

    @property
    def logger(self) -> Any:
        return self.loggers[0] if self.loggers else None

    @property
    def log_dir(self) -> str:
        """The first logger's folder for this run, else ``default_root_dir``."""
        log_dir = self.loggers[0].log_dir if self.loggers else None
        return log_dir if log_dir is not None else self.default_root_dir

    @property
    def sanity_checking(self) -> bool:
        return self.state.stage == RunningStage.SANITY_CHECKING

    @property
    def training(self) -> bool:
        return self.state.stage == RunningStage.TRAINING

    @property
    def validating(self) -> bool:
        return self.state.stage == RunningStage.VALIDATING

    @property
    def testing(self) -> bool:
        return self.state.stage == RunningStage.TESTING

    @property
    def predicting(self) -> bool:
        return self.state.stage == RunningStage.PREDICTING

    @property
    def estimated_stepping_batches(self) -> int | float:
        """Optimizer steps ``fit`` will take (``inf`` when unbounded); valid once loaders are known."""
        per_epoch = self.num_training_batches
        if per_epoch != math.inf:
            per_epoch = math.ceil(per_epoch / self.accumulate_grad_batches)
        total = math.inf if self.max_epochs == -1 else per_epoch * self.max_epochs
        if self.max_steps != -1:
            total = min(total, self.max_steps)
        return total if total == math.inf else int(total)
