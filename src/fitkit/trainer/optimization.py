"""``configure_optimizers`` -> a normalized plan; the wrapper used in manual optimization.

Every form Lightning accepts is turned into one :class:`OptimizationPlan`: a list of
optimizers and a list of :class:`SchedulerConfig`. The automatic step itself lives in
the fit loop; this module only says what to step and when.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from torch.optim import Optimizer as TorchOptimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau

from fitkit.utilities.exceptions import FitkitTypeError, MisconfigurationError, invalid

if TYPE_CHECKING:
    from fitkit.trainer.trainer import Trainer

_FORMS = (
    "an optimizer, a list of optimizers, (optimizers, schedulers), a dict with 'optimizer' and optional "
    "'lr_scheduler', or a list of such dicts"
)
_SCHEDULER_KEYS = {"scheduler", "interval", "frequency", "monitor", "strict", "name"}


@dataclass
class SchedulerConfig:
    """One LR scheduler and when to step it (Lightning's ``lr_scheduler`` dict)."""

    scheduler: Any
    interval: str = "epoch"
    frequency: int = 1
    monitor: str | None = None
    strict: bool = True
    name: str | None = None

    @property
    def reduce_on_plateau(self) -> bool:
        return isinstance(self.scheduler, ReduceLROnPlateau)


@dataclass
class OptimizationPlan:
    """What ``configure_optimizers`` asked for, normalized."""

    optimizers: list[TorchOptimizer] = field(default_factory=list)
    schedulers: list[SchedulerConfig] = field(default_factory=list)
    wrapped: list[Optimizer] = field(default_factory=list)

    def step_schedulers(self, interval: str, count: int, metrics: Mapping[str, Any]) -> None:
        """Step each scheduler of ``interval`` whose ``frequency`` divides ``count``."""
        for config in self.schedulers:
            if config.interval != interval or count % config.frequency:
                continue
            if config.reduce_on_plateau:
                value = monitored_value(config, metrics)
                if value is not None:
                    config.scheduler.step(value)
            else:
                config.scheduler.step()


def monitored_value(config: SchedulerConfig, metrics: Mapping[str, Any]) -> Any:
    """The metric a ``ReduceLROnPlateau`` watches; a clear error when it was never logged."""
    if config.monitor is not None and config.monitor in metrics:
        return metrics[config.monitor]
    if config.strict:
        raise MisconfigurationError(
            invalid(
                "lr_scheduler['monitor']",
                config.monitor,
                "no metric of that name was logged",
                f"one of the logged keys {sorted(metrics)} (or set 'strict': False to skip the step)",
            )
        )
    return None


def build_plan(result: Any) -> OptimizationPlan:
    """Normalize whatever ``configure_optimizers`` returned.

    Example::

        >>> import torch
        >>> opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        >>> plan = build_plan({"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 1)})
        >>> len(plan.optimizers), plan.schedulers[0].interval
        (1, 'epoch')
    """
    plan = OptimizationPlan()
    if isinstance(result, TorchOptimizer):
        plan.optimizers = [result]
    elif isinstance(result, Mapping):
        _add_dict(plan, result)
    elif isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], (list, tuple)):
        optimizers, schedulers = result
        plan.optimizers = [_check_optimizer(o) for o in optimizers]
        for s in schedulers if isinstance(schedulers, (list, tuple)) else [schedulers]:
            plan.schedulers.append(_scheduler_config(s))
    elif isinstance(result, (list, tuple)) and result and all(isinstance(r, Mapping) for r in result):
        for item in result:
            _add_dict(plan, item)
    elif isinstance(result, (list, tuple)) and result:
        plan.optimizers = [_check_optimizer(o) for o in result]
    else:
        raise MisconfigurationError(invalid("configure_optimizers()", result, "it returned nothing usable", _FORMS))
    known = {id(o) for o in plan.optimizers}
    for config in plan.schedulers:
        opt = getattr(config.scheduler, "optimizer", None)
        if opt is not None and id(opt) not in known:
            raise MisconfigurationError(
                f"A scheduler from configure_optimizers() wraps an optimizer that configure_optimizers() did not "
                f"return ({type(opt).__name__}). Expected schedulers of the returned optimizers only."
            )
    return plan


def _add_dict(plan: OptimizationPlan, d: Mapping[str, Any]) -> None:
    if "optimizer" not in d:
        raise MisconfigurationError(
            invalid("configure_optimizers()", dict(d), "the dict has no 'optimizer' key", _FORMS)
        )
    unknown = set(d) - {"optimizer", "lr_scheduler", "monitor"}
    if unknown:
        raise MisconfigurationError(
            invalid(
                "configure_optimizers()",
                sorted(unknown),
                "unknown keys in the returned dict",
                "'optimizer', 'lr_scheduler' and 'monitor'",
            )
        )
    plan.optimizers.append(_check_optimizer(d["optimizer"]))
    if d.get("lr_scheduler") is not None:
        # The dict's top-level 'monitor' (Lightning's form for a bare ReduceLROnPlateau)
        # must be known before the config is validated.
        plan.schedulers.append(_scheduler_config(d["lr_scheduler"], default_monitor=d.get("monitor")))


def _check_optimizer(opt: Any) -> TorchOptimizer:
    if not isinstance(opt, TorchOptimizer):
        raise FitkitTypeError(invalid("configure_optimizers()", opt, "this is not a torch.optim.Optimizer", _FORMS))
    return opt


def _scheduler_config(s: Any, default_monitor: str | None = None) -> SchedulerConfig:
    if isinstance(s, Mapping):
        if "scheduler" not in s:
            raise MisconfigurationError(
                invalid(
                    "lr_scheduler", dict(s), "the dict has no 'scheduler' key", f"keys among {sorted(_SCHEDULER_KEYS)}"
                )
            )
        unknown = set(s) - _SCHEDULER_KEYS
        if unknown:
            raise MisconfigurationError(
                invalid("lr_scheduler", sorted(unknown), "unknown keys", f"keys among {sorted(_SCHEDULER_KEYS)}")
            )
        config = SchedulerConfig(**s)
    else:
        config = SchedulerConfig(scheduler=s)
    if config.monitor is None:
        config.monitor = default_monitor
    if not callable(getattr(config.scheduler, "step", None)):
        raise FitkitTypeError(invalid("lr_scheduler", config.scheduler, "it has no step() method", "an LR scheduler"))
    if config.interval not in ("epoch", "step"):
        raise MisconfigurationError(
            invalid("lr_scheduler['interval']", config.interval, "unknown interval", "'epoch' or 'step'")
        )
    if isinstance(config.frequency, bool) or not isinstance(config.frequency, int) or config.frequency < 1:
        raise MisconfigurationError(
            invalid("lr_scheduler['frequency']", config.frequency, "it must be positive", "an int >= 1")
        )
    if config.reduce_on_plateau and config.monitor is None:
        raise MisconfigurationError(
            invalid(
                "lr_scheduler['monitor']",
                None,
                "ReduceLROnPlateau steps on a metric",
                "the name of a logged metric, e.g. {'scheduler': s, 'monitor': 'val_loss'}",
            )
        )
    return config


def needs_closure(optimizer: TorchOptimizer) -> bool:
    """Whether ``optimizer.step`` requires a closure (LBFGS does; SGD and most do not).

    Decided once per fit from the signature, so optimizers whose ``step()`` takes no
    closure at all (like the book's ``SimpleSGD``) are called as written.
    """
    try:
        params = inspect.signature(optimizer.step).parameters
    except (TypeError, ValueError):
        return False
    closure = params.get("closure")
    return closure is not None and closure.default is inspect.Parameter.empty


class Optimizer:
    """What ``self.optimizers()`` returns: the user's optimizer, stepped through the Trainer.

    ``step`` goes through the precision plug-in (so a gradient scaler keeps working)
    and fires ``on_before_optimizer_step``; every other attribute is the wrapped
    optimizer's own.
    """

    def __init__(self, optimizer: TorchOptimizer, trainer: Trainer) -> None:
        self.__dict__["optimizer"] = optimizer
        self.__dict__["_trainer"] = trainer

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        return self._trainer._manual_optimizer_step(self.optimizer, closure)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["optimizer"], name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.optimizer, name, value)

    def __repr__(self) -> str:
        return f"fitkit.Optimizer({self.optimizer!r})"
