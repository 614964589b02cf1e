"""``LearningRateMonitor``: log each optimizer's learning rate (and momentum, weight decay).

This file owns the metric names (``lr-<Optimizer>``, ``/pg<N>`` per parameter group,
scheduler and group ``name`` keys, ``-1``/``-2`` suffixes for optimizers of the same
class) and when values are logged. Reading ``param_group["lr"]`` is a Python float,
so logging costs no host sync; between two logging steps the callback does one
integer test per batch.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

import torch

from fitkit.callbacks.callback import Callback
from fitkit.utilities.exceptions import MisconfigurationError, invalid
from fitkit.utilities.rank_zero import rank_zero_warn

if TYPE_CHECKING:
    from fitkit.module import Module
    from fitkit.trainer.trainer import Trainer

# (optimizer, one name per param group, the scheduler's interval or None when it has no scheduler)
_Entry = tuple[torch.optim.Optimizer, list[str], str | None]


class LearningRateMonitor(Callback):
    """Log the learning rate of every optimizer to the Trainer's loggers.

    Names: ``lr-<OptimizerClass>`` (``lr-SGD``), or the scheduler config's ``name``;
    a second optimizer of the same class gets ``lr-SGD-1``. An optimizer with several
    parameter groups logs ``lr-SGD/pg1``, ``lr-SGD/pg2``, ... (or ``lr-SGD/<name>``
    when a group has a ``"name"`` key). Momentum and weight decay add ``-momentum`` and
    ``-weight_decay`` to those names (for Adam-style optimizers momentum is ``betas[0]``).

    When: with ``logging_interval=None`` each scheduler's LR is logged at its own
    ``interval`` ("step": every ``log_every_n_steps`` optimizer steps, before the
    step; "epoch": at each training epoch start); optimizers without a scheduler are
    logged at both. ``"step"`` or ``"epoch"`` logs everything at that granularity.
    Values go to each logger's ``log_metrics(values, step=trainer.global_step)`` and,
    as CPU tensors, into ``trainer.callback_metrics`` (as in Lightning), so other
    callbacks can read them.

    Args:
        logging_interval: ``None``, ``"step"`` or ``"epoch"``.
        log_momentum: also log momentum (0 for optimizers without one).
        log_weight_decay: also log weight decay.

    Attributes:
        lrs: every logged learning rate, by name.

    Example::

        >>> import fitkit
        >>> monitor = fitkit.callbacks.LearningRateMonitor(logging_interval="step")
        >>> trainer = fitkit.Trainer(callbacks=[monitor], log_every_n_steps=10, enable_progress_bar=False)
        >>> # trainer.fit(model)  # logs "lr-SGD" every 10 steps
    """

    def __init__(
        self, logging_interval: str | None = None, log_momentum: bool = False, log_weight_decay: bool = False
    ) -> None:
        if logging_interval not in (None, "step", "epoch"):
            raise MisconfigurationError(
                invalid("logging_interval", logging_interval, "unknown interval", "'step', 'epoch' or None")
            )
        self.logging_interval = logging_interval
        self.log_momentum = log_momentum
        self.log_weight_decay = log_weight_decay
        self.lrs: dict[str, list[float]] = {}
        self.last_momentum_values: dict[str, float | None] = {}
        self.last_weight_decay_values: dict[str, float | None] = {}
        self._last_step = -1
        self._logged_at: dict[str, tuple[int, float]] = {}  # name -> (step, value) it was last logged with

    def on_fit_start(self, trainer: Trainer, module: Module) -> None:
        if not trainer.loggers:
            raise MisconfigurationError(
                invalid(
                    "logger",
                    False,
                    "LearningRateMonitor logs to the Trainer's loggers and there are none",
                    "Trainer(logger=True) or a Logger, or no LearningRateMonitor",
                )
            )
        entries = self._entries(trainer)
        if self.log_momentum and any(
            "momentum" not in opt.defaults and "betas" not in opt.defaults for opt, _, _ in entries
        ):
            rank_zero_warn(
                "LearningRateMonitor(log_momentum=True): some optimizers have no momentum; 0 is logged for them.",
                RuntimeWarning,
            )
        names = [name for _, group_names, _ in entries for name in group_names]
        self.lrs = {name: [] for name in names}
        self.last_momentum_values = {f"{name}-momentum": None for name in names}
        self.last_weight_decay_values = {f"{name}-weight_decay": None for name in names}
        self._last_step = -1
        self._logged_at = {}

    def on_train_batch_start(self, trainer: Trainer, module: Module, batch: Any, batch_idx: int) -> None:
        step = trainer.global_step
        # Every log_every_n_steps optimizer steps (step 0 included), once per step even
        # when several accumulated batches share it.
        if step % trainer.log_every_n_steps or step == self._last_step or self.logging_interval == "epoch":
            return
        self._last_step = step
        self._log(trainer, "step" if self.logging_interval is None else "any")

    def on_train_epoch_start(self, trainer: Trainer, module: Module) -> None:
        if self.logging_interval != "step":
            self._log(trainer, "epoch" if self.logging_interval is None else "any")

    # -- values ------------------------------------------------------------------------
    def _log(self, trainer: Trainer, interval: str) -> None:
        step = trainer.global_step
        stats: dict[str, float] = {}
        for optimizer, names, sched_interval in self._entries(trainer):
            if interval == "any" or sched_interval is None or sched_interval == interval:
                stats.update(self._stats(optimizer, names))
        # A value already logged at this step (an optimizer without a scheduler, at the
        # epoch start and its first batch) is not logged twice.
        stats = {k: v for k, v in stats.items() if self._logged_at.get(k) != (step, v)}
        if not stats:
            return
        for name, value in stats.items():
            self._logged_at[name] = (step, value)
            if name in self.last_momentum_values:
                self.last_momentum_values[name] = value
            elif name in self.last_weight_decay_values:
                self.last_weight_decay_values[name] = value
            else:
                self.lrs.setdefault(name, []).append(value)
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in stats.items()})
        for lg in trainer.loggers:
            lg.log_metrics(stats, step=step)

    def _stats(self, optimizer: torch.optim.Optimizer, names: list[str]) -> dict[str, float]:
        stats: dict[str, float] = {}
        use_betas = "betas" in optimizer.defaults
        for group, name in zip(optimizer.param_groups, names, strict=False):
            stats[name] = float(group["lr"])
            if self.log_momentum:
                momentum = group["betas"][0] if use_betas else group.get("momentum", 0.0)
                stats[f"{name}-momentum"] = float(momentum)
                self.last_momentum_values.setdefault(f"{name}-momentum", None)
            if self.log_weight_decay:
                stats[f"{name}-weight_decay"] = float(group.get("weight_decay", 0.0))
                self.last_weight_decay_values.setdefault(f"{name}-weight_decay", None)
        return stats

    # -- names ---------------------------------------------------------------------------
    def _entries(self, trainer: Trainer) -> list[_Entry]:
        """Each optimizer with its per-group names; optimizers with a scheduler first."""
        entries: list[_Entry] = []
        seen: set[int] = set()
        per_class: defaultdict[type, int] = defaultdict(int)
        for config in trainer.lr_scheduler_configs:
            optimizer = getattr(config.scheduler, "optimizer", None)
            if optimizer is None or id(optimizer) in seen:
                continue
            seen.add(id(optimizer))
            if config.name is None:
                per_class[type(optimizer)] += 1
                base = self._numbered(f"lr-{type(optimizer).__name__}", per_class[type(optimizer)])
            else:
                base = config.name
            entries.append((optimizer, self._group_names(optimizer, base), config.interval))
        for optimizer in trainer.optimizers:
            if id(optimizer) in seen:
                continue
            seen.add(id(optimizer))
            per_class[type(optimizer)] += 1
            base = self._numbered(f"lr-{type(optimizer).__name__}", per_class[type(optimizer)])
            entries.append((optimizer, self._group_names(optimizer, base), None))
        return entries

    @staticmethod
    def _numbered(name: str, count: int) -> str:
        return name if count <= 1 else f"{name}-{count - 1}"

    def _group_names(self, optimizer: torch.optim.Optimizer, base: str) -> list[str]:
        groups = optimizer.param_groups
        labels = [g.get("name", f"pg{i}") for i, g in enumerate(groups, start=1)]
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise MisconfigurationError(
                invalid(
                    f"{type(optimizer).__name__} param groups",
                    duplicates,
                    "several parameter groups of one optimizer share a `name`",
                    "a distinct 'name' per parameter group",
                )
            )
        if len(groups) == 1:
            names = [f"{base}/{groups[0]['name']}" if "name" in groups[0] else base]
        else:
            names = [f"{base}/{label}" for label in labels]
            # A group added during training (BackboneFinetuning): the history logged
            # under the bare name continues as the first group's.
            if f"{base}/pg1" in names and base in self.lrs and f"{base}/pg1" not in self.lrs:
                self.lrs[f"{base}/pg1"] = self.lrs.pop(base)
        return names
