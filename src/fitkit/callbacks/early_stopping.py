"""``EarlyStopping``: stop ``fit`` when a monitored metric stops improving.

This file owns the stopping rule (patience, ``min_delta``, thresholds, non-finite
values), when it is checked (after validation, or at the end of a training epoch),
and its checkpointed state. It reads ``trainer.callback_metrics`` once per check (one
host sync per check, never per step) and only ever sets ``trainer.should_stop``; the
fit loop decides when stopping is allowed (``min_epochs``/``min_steps``).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from fitkit.callbacks.callback import Callback
from fitkit.module import Module
from fitkit.utilities.exceptions import FitkitTypeError, MisconfigurationError, invalid
from fitkit.utilities.rank_zero import rank_zero_print, rank_zero_warn

if TYPE_CHECKING:
    from fitkit.trainer.trainer import Trainer

_ORDER = {"min": "<", "max": ">"}


def _number(name: str, value: Any, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise FitkitTypeError(
            invalid(name, value, "it is not a number", "a float" + (" or None" if allow_none else ""))
        )
    return float(value)


class EarlyStopping(Callback):
    """Stop training when ``monitor`` has not improved for ``patience`` checks.

    A check happens after each validation run, or at the end of each training epoch
    when ``check_on_train_epoch_end`` is True. By default (``None``) it is the end of
    the training epoch when validation runs once per epoch at its end (Lightning's
    rule) or when there is no validation at all, and after validation otherwise
    (``val_check_interval`` below one epoch, or ``check_val_every_n_epoch`` > 1).
    Checks are skipped during the sanity check, outside ``fit`` and with
    ``fast_dev_run``.

    Args:
        monitor: the name of a logged metric (a key of ``trainer.callback_metrics``).
        min_delta: how much the metric must beat the best value by to count as an
            improvement (>= 0).
        patience: checks without improvement before stopping. With the default check
            after each epoch's validation this counts validation runs, not epochs.
        verbose: print why the callback stopped or what improved.
        mode: ``"min"`` (lower is better) or ``"max"``.
        strict: raise when ``monitor`` was not logged (with the names that were);
            ``False`` skips the check instead.
        check_finite: stop when the metric becomes NaN or infinite.
        stopping_threshold: stop as soon as the metric is better than this value.
        divergence_threshold: stop as soon as the metric is worse than this value.
        check_on_train_epoch_end: check at the end of the training epoch (True) or
            after validation (False); ``None`` decides as described above.
        log_rank_zero_only: with several processes, print only on global rank zero.

    Attributes:
        wait_count: checks since the last improvement.
        stopped_epoch: the epoch in which this callback asked to stop (0 if it did not).
        stopping_reason_message: why it asked to stop (``None`` while it has not). A
            non-finite monitored value (with ``check_finite``) is also reported as a
            ``RuntimeWarning``, verbose or not: it usually means the run diverged.
        best_score: the best value seen so far (a 0-dim tensor; ``inf``/``-inf`` at first).

    Example::

        >>> import fitkit
        >>> stop = fitkit.callbacks.EarlyStopping(monitor="val_loss", patience=5, min_delta=1e-3)
        >>> trainer = fitkit.Trainer(callbacks=[stop], enable_progress_bar=False, logger=False)
        >>> # trainer.fit(model); stop.stopped_epoch, float(stop.best_score)
    """

    def __init__(
        self,
        monitor: str,
        min_delta: float = 0.0,
        patience: int = 3,
        verbose: bool = False,
        mode: str = "min",
        strict: bool = True,
        check_finite: bool = True,
        stopping_threshold: float | None = None,
        divergence_threshold: float | None = None,
        check_on_train_epoch_end: bool | None = None,
        log_rank_zero_only: bool = False,
    ) -> None:
        if not isinstance(monitor, str) or not monitor:
            raise FitkitTypeError(invalid("monitor", monitor, "it is not a metric name", "the name of a logged metric"))
        if mode not in _ORDER:
            raise MisconfigurationError(invalid("mode", mode, "unknown mode", "'min' or 'max'"))
        delta = _number("min_delta", min_delta)
        assert delta is not None
        if delta < 0:
            raise MisconfigurationError(
                invalid("min_delta", min_delta, "the mode already says which direction improves", "a float >= 0")
            )
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise MisconfigurationError(invalid("patience", patience, "it must be a count of checks", "an int >= 0"))
        if check_on_train_epoch_end not in (None, True, False):
            raise FitkitTypeError(
                invalid("check_on_train_epoch_end", check_on_train_epoch_end, "it is not a bool", "True, False or None")
            )
        self.monitor = monitor
        self.min_delta = delta
        self.patience = patience
        self.verbose = verbose
        self.mode = mode
        self.strict = strict
        self.check_finite = check_finite
        self.stopping_threshold = _number("stopping_threshold", stopping_threshold, allow_none=True)
        self.divergence_threshold = _number("divergence_threshold", divergence_threshold, allow_none=True)
        self.log_rank_zero_only = log_rank_zero_only
        self.wait_count = 0
        self.stopped_epoch = 0
        self.stopping_reason_message: str | None = None
        self.best_score: torch.Tensor = torch.tensor(math.inf if mode == "min" else -math.inf)
        self._check_on_train_epoch_end = check_on_train_epoch_end
        self._at_train_epoch_end = bool(check_on_train_epoch_end)  # resolved per fit in on_fit_start

    @property
    def state_key(self) -> str:
        """Includes ``monitor`` and ``mode`` (as in Lightning), so several instances can coexist."""
        return f"{type(self).__qualname__}{{'monitor': {self.monitor!r}, 'mode': {self.mode!r}}}"

    def state_dict(self) -> dict[str, Any]:
        return {
            "wait_count": self.wait_count,
            "stopped_epoch": self.stopped_epoch,
            "best_score": float(self.best_score),
            "patience": self.patience,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.wait_count = int(state_dict["wait_count"])
        self.stopped_epoch = int(state_dict["stopped_epoch"])
        best = state_dict["best_score"]
        self.best_score = best.detach().cpu().clone() if isinstance(best, torch.Tensor) else torch.tensor(float(best))
        self.patience = int(state_dict.get("patience", self.patience))

    # -- when to check -----------------------------------------------------------------
    def on_fit_start(self, trainer: Trainer, module: Module) -> None:
        if self._check_on_train_epoch_end is not None:
            self._at_train_epoch_end = self._check_on_train_epoch_end
            return
        vci = trainer.val_check_interval
        once_per_epoch_at_end = isinstance(vci, float) and vci == 1.0 and trainer.check_val_every_n_epoch == 1
        self._at_train_epoch_end = once_per_epoch_at_end or not _has_validation(trainer, module)

    def on_train_epoch_end(self, trainer: Trainer, module: Module) -> None:
        if self._at_train_epoch_end and not self._skip(trainer):
            self._check(trainer)

    def on_validation_end(self, trainer: Trainer, module: Module) -> None:
        if not self._at_train_epoch_end and not self._skip(trainer):
            self._check(trainer)

    def _skip(self, trainer: Trainer) -> bool:
        return trainer.state.fn != "fit" or trainer.sanity_checking or bool(trainer.fast_dev_run)

    # -- the rule ------------------------------------------------------------------------
    def _check(self, trainer: Trainer) -> None:
        metrics = trainer.callback_metrics
        value = metrics.get(self.monitor)
        if value is None:
            message = (
                f"EarlyStopping is conditioned on metric `{self.monitor}`, which is not available. "
                f"Available metrics: {sorted(metrics) or 'none were logged'}. Log it with "
                f"`self.log({self.monitor!r}, ...)`, or pass one of these as `monitor`"
            )
            if self.strict:
                raise MisconfigurationError(message + " (or strict=False to skip the check).")
            if self.verbose:
                rank_zero_warn(message + ".", RuntimeWarning)
            return
        current = torch.as_tensor(value).detach().squeeze().to("cpu", copy=True)  # the check's one host sync
        should_stop, reason = self._evaluate(current)
        if trainer.world_size > 1:  # stop every process if any of them decided to
            flag = torch.tensor(float(should_stop), device=trainer.strategy.root_device)
            should_stop = bool(trainer.strategy.reduce(flag, "sum") > 0)
        trainer.should_stop = trainer.should_stop or should_stop
        if should_stop:
            self.stopped_epoch = trainer.current_epoch
            self.stopping_reason_message = reason or "Another process's check signaled the Trainer to stop."
            if self.check_finite and not math.isfinite(float(current)):
                rank_zero_warn(f"EarlyStopping at epoch {trainer.current_epoch}: {reason}", RuntimeWarning)
        if reason and self.verbose:
            self._print(trainer, reason)

    def _better(self, a: float, b: float) -> bool:
        return a < b if self.mode == "min" else a > b

    def _evaluate(self, current: torch.Tensor) -> tuple[bool, str | None]:
        """Update the state with ``current``; return (stop?, why)."""
        value = float(current)
        best = float(self.best_score)
        sign = -1.0 if self.mode == "min" else 1.0
        if self.check_finite and not math.isfinite(value):
            return True, (
                f"Monitored metric {self.monitor} = {value} is not finite. "
                f"Previous best value was {best:.3f}. Signaling Trainer to stop."
            )
        if self.stopping_threshold is not None and self._better(value, self.stopping_threshold):
            return True, (
                f"Stopping threshold reached: {self.monitor} = {value} {_ORDER[self.mode]} "
                f"{self.stopping_threshold}. Signaling Trainer to stop."
            )
        if self.divergence_threshold is not None and self._better(-value, -self.divergence_threshold):
            return True, (
                f"Divergence threshold reached: {self.monitor} = {value} {_ORDER[self.mode]} "
                f"{self.divergence_threshold}. Signaling Trainer to stop."
            )
        if self._better(value - sign * self.min_delta, best):
            reason = (
                f"Metric {self.monitor} improved by {abs(best - value):.3f} >= min_delta = {self.min_delta}. "
                f"New best score: {value:.3f}"
                if math.isfinite(best)
                else f"Metric {self.monitor} improved. New best score: {value:.3f}"
            )
            self.best_score = current
            self.wait_count = 0
            return False, reason
        self.wait_count += 1
        if self.wait_count >= self.patience:
            return True, (
                f"Monitored metric {self.monitor} did not improve in the last {self.wait_count} records. "
                f"Best score: {best:.3f}. Signaling Trainer to stop."
            )
        return False, None

    def _print(self, trainer: Trainer, message: str) -> None:
        if trainer.world_size > 1:
            if self.log_rank_zero_only:
                rank_zero_print(message)
            else:
                print(f"[rank: {trainer.global_rank}] {message}")
        else:
            print(message)


def _has_validation(trainer: Trainer, module: Module) -> bool:
    """Whether ``fit`` will run validation at all (loaders with batches and a validation_step)."""
    step = getattr(type(module), "validation_step", None)
    return (
        bool(trainer.val_dataloaders)
        and any(trainer.num_val_batches)
        and step is not None
        and step is not Module.validation_step
    )
