"""Turning the Trainer's ``accelerator``, ``devices``, ``strategy`` and ``precision``
arguments into one Strategy object that holds an Accelerator and a Precision.

This is the only place strings become plug-in objects: no registries, no connectors.
Later device kinds, strategies and number formats add a branch here and a file in
their package.
"""

from __future__ import annotations

from typing import Any

from fitkit.accelerators.accelerator import Accelerator
from fitkit.accelerators.cpu import CPUAccelerator
from fitkit.precision.precision import Precision
from fitkit.strategies.single_device import SingleDeviceStrategy
from fitkit.strategies.strategy import Strategy
from fitkit.utilities.exceptions import MisconfigurationError, invalid

ACCELERATORS = ("auto", "cpu")
STRATEGIES = ("auto", "single_device")
# Lightning's aliases map onto the canonical names.
PRECISION_ALIASES = {"32": "32-true", 32: "32-true", "32-true": "32-true"}
PRECISIONS = ("32-true", "32")


def select_accelerator(accelerator: str | Accelerator) -> Accelerator:
    if isinstance(accelerator, Accelerator):
        return accelerator
    if isinstance(accelerator, str) and accelerator.lower() in ACCELERATORS:
        # "auto" picks the best available kind; with CPU only, that is the CPU.
        return CPUAccelerator()
    raise MisconfigurationError(
        invalid("accelerator", accelerator, "no such accelerator", f"one of {ACCELERATORS} or an Accelerator instance")
    )


def select_precision(precision: Any) -> Precision:
    if isinstance(precision, Precision):
        return precision
    # An unhashable value (a list, say) is simply not a known name.
    name = PRECISION_ALIASES.get(precision) if isinstance(precision, (str, int)) else None
    if name == "32-true":
        return Precision()
    raise MisconfigurationError(
        invalid("precision", precision, "no such precision", f"one of {PRECISIONS} or a Precision instance")
    )


def select_strategy(accelerator: Any, devices: Any, strategy: Any, precision: Any) -> Strategy:
    """Build the Strategy for the Trainer's four plug-in arguments, validating each.

    Example::

        >>> select_strategy("cpu", 1, "auto", "32-true").root_device
        device(type='cpu')
    """
    acc = select_accelerator(accelerator)
    prec = select_precision(precision)
    num_devices = acc.parse_devices(devices)
    if isinstance(strategy, Strategy):
        strategy.accelerator = strategy.accelerator or acc
        strategy.precision = prec
        return strategy
    if not (isinstance(strategy, str) and strategy.lower() in STRATEGIES):
        raise MisconfigurationError(
            invalid("strategy", strategy, "no such strategy", f"one of {STRATEGIES} or a Strategy instance")
        )
    if num_devices != 1:
        raise MisconfigurationError(
            invalid("devices", devices, "several processes need a distributed strategy, not yet available", "1")
        )
    return SingleDeviceStrategy(acc.get_device(0), accelerator=acc, precision=prec)
