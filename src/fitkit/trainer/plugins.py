"""Turning the Trainer's ``accelerator``, ``devices``, ``strategy`` and ``precision``
arguments into one Strategy object that holds an Accelerator and a Precision.

This is the only place the three are put together: no registries, no connectors.
``fitkit.accelerators.select`` turns ``accelerator`` into an Accelerator and
``fitkit.precision.select`` turns ``precision`` into a Precision; this module picks
the Strategy for ``devices``, ``num_nodes`` and ``strategy``.
"""

from __future__ import annotations

from typing import Any

from fitkit.accelerators.select import select_accelerator
from fitkit.precision.select import select_precision
from fitkit.strategies.single_device import SingleDeviceStrategy
from fitkit.strategies.strategy import Strategy
from fitkit.utilities.exceptions import MisconfigurationError, invalid

STRATEGIES = ("auto", "single_device")


def select_strategy(
    accelerator: Any, devices: Any, strategy: Any, precision: Any, num_nodes: int = 1, sync_batchnorm: bool = False
) -> Strategy:
    """Build the Strategy for the Trainer's four plug-in arguments, validating each.

    Example::

        >>> select_strategy("cpu", 1, "auto", "32-true").root_device
        device(type='cpu')
    """
    acc = select_accelerator(accelerator)
    prec = select_precision(precision, acc)
    num_devices = acc.parse_devices(devices)
    if isinstance(strategy, Strategy):
        strategy.accelerator = strategy.accelerator or acc
        strategy.precision = prec
        return strategy
    if not (isinstance(strategy, str) and strategy.lower() in STRATEGIES):
        raise MisconfigurationError(
            invalid("strategy", strategy, "no such strategy", f"one of {STRATEGIES} or a Strategy instance")
        )
    if num_devices != 1 or num_nodes != 1:
        raise MisconfigurationError(
            invalid("devices", devices, "several processes need a distributed strategy, not yet available", "1")
        )
    return SingleDeviceStrategy(acc.get_device(0), accelerator=acc, precision=prec)
