"""What the Trainer does with a NaN or infinite training loss (``Trainer(nonfinite_loss=...)``).

This file owns the policy names, where and how often a loss is checked
(:class:`LossCheck`), the error messages (where it happened and what was logged), and
the count of skipped losses with its one warning. The exact per-step check itself is
:meth:`fitkit.strategies.Strategy.loss_is_finite`; the loops call :attr:`LossCheck.is_finite`
before ``backward`` and never with ``"ignore"``.

Two ways to check, chosen once per ``fit`` (:func:`checker`):

- **exact**, where a host read is free (``Strategy.host_reads_are_free``: the CPU) or
  the policy is ``"skip"`` (it must know before ``backward``): one ``loss.item()`` per
  step; the weights never take a non-finite loss. ``"skip"`` under several processes
  adds one small ``min`` all-reduce per step, so that every process skips together.
- **deferred**, for ``"raise"`` where reading a value waits for the device (CUDA, MPS,
  XLA): per step the detached loss and its place are only appended to a list (no
  device work, no sync); :meth:`LossCheck.flush` reads them all in one host read where
  the fit loop reads logged values anyway (every ``log_every_n_steps`` and at epoch
  end), and raises naming the first bad step. The weights have then taken the steps
  between that loss and the flush.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from fitkit.utilities.exceptions import FitkitRuntimeError, invalid
from fitkit.utilities.rank_zero import rank_zero_warn

if TYPE_CHECKING:
    from fitkit.trainer.trainer import Trainer

POLICIES = ("raise", "skip", "ignore")

_EXPECTED = (
    "a finite loss; Trainer(nonfinite_loss='skip') skips such losses, "
    "and Trainer(detect_anomaly=True) names the backward operation that first produces NaN"
)


class SkipStep(Exception):
    """Raised inside an optimizer closure to abandon the step whose loss is not finite."""


class LossCheck:
    """The non-finite loss check of one ``fit``: exact per step, or deferred to the next flush.

    Args:
        trainer: the Trainer running ``fit``.
        source: what produced the losses, for messages (``"training_step()"`` or
            ``"manual_backward()"``).

    :attr:`is_finite` takes a loss and returns whether to go on with it (always True
    when deferred); :meth:`flush` checks what was deferred.

    Example::

        >>> check = LossCheck(trainer, "training_step()")  # doctest: +SKIP
        >>> check.is_finite(loss)  # doctest: +SKIP
        True
    """

    def __init__(self, trainer: Trainer, source: str) -> None:
        self.trainer = trainer
        self.source = source
        policy, strategy = trainer.nonfinite_loss, trainer.strategy
        self.deferred = policy == "raise" and not strategy.host_reads_are_free
        self._losses: list[torch.Tensor] = []
        self._where: list[tuple[int, int, int]] = []  # (epoch, batch index, global step) of each loss
        self.is_finite: Callable[[torch.Tensor], bool]
        if self.deferred:
            self.is_finite = self._record
        elif policy == "skip":
            self.is_finite = functools.partial(strategy.loss_is_finite, agree=True)
        else:
            self.is_finite = strategy.loss_is_finite

    def _record(self, loss: torch.Tensor) -> bool:
        progress = self.trainer.progress
        self._losses.append(loss.detach())
        self._where.append((progress.current_epoch, progress.epoch_batches, progress.global_step))
        return True

    def flush(self) -> None:
        """Check the deferred losses with one host read; raise naming the first that is not finite.

        A no-op when nothing was deferred. Called by the fit loop where it reads logged
        values (every ``log_every_n_steps``) and at epoch end, never per step.
        """
        losses, where = self._losses, self._where
        if not losses:
            return
        self._losses, self._where = [], []
        # XLA: run the pending step graph first, so the read below is a small graph of its own.
        self.trainer.strategy.execute_pending()
        values = torch.stack([loss.reshape(()) for loss in losses]).float().tolist()  # the one host read
        bad = [i for i, value in enumerate(values) if not math.isfinite(value)]
        if not bad:
            return
        trainer = self.trainer
        epoch, batch_idx, step = where[bad[0]]
        now = trainer.progress.global_step
        taken = now - step
        rank = f"; rank {trainer.global_rank} of {trainer.world_size}" if trainer.world_size > 1 else ""
        raise FitkitRuntimeError(
            invalid(
                f"{self.source} loss",
                values[bad[0]],
                f"it is not finite at epoch {epoch}, batch {batch_idx} (global step {step}{rank}); "
                f"{len(bad)} of the {len(values)} losses checked at this flush were not finite. "
                f"Detected at global step {now}, {taken} optimizer step(s) later: on this device "
                "the check is deferred to the next log_every_n_steps or epoch end to avoid a host "
                f"sync per step, so the weights took those {taken} step(s) and may hold NaN or inf; "
                f"use a checkpoint saved before global step {step}. Logged at detection: {_logged(trainer)}",
                "a finite loss; Trainer(nonfinite_loss='skip') checks every step before backward "
                "(one host sync per step) and skips such losses, and Trainer(detect_anomaly=True) "
                "names the backward operation that first produces NaN",
            )
        )


def checker(trainer: Trainer, automatic: bool) -> LossCheck | None:
    """The check for this ``fit`` (None with ``nonfinite_loss="ignore"``)."""
    if trainer.nonfinite_loss == "ignore":
        return None
    return LossCheck(trainer, "training_step()" if automatic else "manual_backward()")


def handle(trainer: Trainer, loss: torch.Tensor, source: str, batch_idx: int) -> None:
    """Act on a loss that the exact check found not finite.

    With ``nonfinite_loss="raise"`` this raises :class:`FitkitRuntimeError` naming the
    epoch, batch, global step and what was logged; with ``"skip"`` it counts the loss
    (``trainer.skipped_nonfinite_steps``), warns the first time in a ``fit``, and returns
    so the caller can drop the loss. Only called off the hot path.
    """
    progress = trainer.progress
    value = loss.detach().item()
    step = f"global step {progress.global_step}"
    what = "it is not finite"
    if trainer.world_size > 1:
        step += f"; rank {trainer.global_rank} of {trainer.world_size}"
        if math.isfinite(value):  # "skip": another process's loss was not finite (the all-reduce agreed)
            what = "another process's loss is not finite"
    where = f"epoch {progress.current_epoch}, batch {batch_idx} ({step})"
    if trainer.nonfinite_loss == "raise":
        raise FitkitRuntimeError(
            invalid(f"{source} loss", value, f"{what} at {where}. Logged: {_logged(trainer)}", _EXPECTED)
        )
    trainer._skipped_nonfinite += 1
    if trainer._skipped_nonfinite == 1:
        rank_zero_warn(
            f"Skipped the {source} loss ({value}) at {where}: {what} (nonfinite_loss='skip'). "
            "Later skips in this fit are counted in trainer.skipped_nonfinite_steps without a warning.",
            RuntimeWarning,
        )


def _logged(trainer: Trainer) -> str:
    """The latest logged values (this step's included), ``name=value`` separated by commas."""
    items = []
    for name, value in trainer.callback_metrics.items():
        try:
            items.append(f"{name}={float(torch.as_tensor(value).detach()):.6g}")
        except (TypeError, ValueError, RuntimeError):  # a metric object that is not one number
            items.append(f"{name}=<{type(value).__name__}>")
    return ", ".join(items) if items else "nothing yet"
