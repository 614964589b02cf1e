"""Turning the Trainer's ``accelerator``, ``devices``, ``strategy`` and ``precision``
arguments into one Strategy object that holds an Accelerator and a Precision.

This is the only place the three are put together: no registries, no connectors.
``fitkit.accelerators.select`` turns ``accelerator`` into an Accelerator and
``fitkit.precision.select`` turns ``precision`` into a Precision; this module picks
the Strategy for ``devices``, ``num_nodes`` and ``strategy``: one process on one
device, or ``DDPStrategy`` when ``devices * num_nodes > 1`` (``strategy="auto"``) or
when a DDP spelling is asked for. ``accelerator="xla"`` always gets ``XLAStrategy``
(``strategy="auto"``, ``"xla"`` or ``"single_xla"``) or ``XLASPMDStrategy``
(``"xla_spmd"``); both import torch_xla only when they run.
"""

from __future__ import annotations

import os
from typing import Any

from fitkit.accelerators.accelerator import Accelerator
from fitkit.accelerators.select import select_accelerator
from fitkit.accelerators.xla import XLAAccelerator
from fitkit.precision.select import select_precision
from fitkit.strategies.parallel import ParallelStrategy, launched_by_torchrun_style_env
from fitkit.strategies.single_device import SingleDeviceStrategy
from fitkit.strategies.strategy import Strategy
from fitkit.strategies.xla import XLAStrategy
from fitkit.utilities.exceptions import MisconfigurationError, invalid

STRATEGIES = (
    "auto",
    "single_device",
    "ddp",
    "ddp_spawn",
    "ddp_find_unused_parameters_true",
    "fsdp",
    "xla",
    "single_xla",
    "xla_spmd",
)
_XLA_STRATEGIES = ("auto", "xla", "single_xla", "xla_spmd")
# The DDP spellings (Lightning's) and the DDPStrategy options each one means.
_DDP_OPTIONS: dict[str, dict[str, Any]] = {
    "ddp": {},
    "ddp_spawn": {"start_method": "spawn"},
    "ddp_find_unused_parameters_true": {"find_unused_parameters": True},
}


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
    num_devices = _count_devices(acc, devices)
    if isinstance(strategy, Strategy):
        strategy.accelerator = strategy.accelerator or acc
        strategy.precision = prec
        if isinstance(strategy, XLAStrategy):
            _check_xla(acc, strategy, num_devices, num_nodes)
            strategy.set_num_processes(num_devices)
        if isinstance(strategy, ParallelStrategy):
            _fill_in_parallel(strategy, acc, num_devices, num_nodes, sync_batchnorm)
        return strategy
    if not (isinstance(strategy, str) and strategy.lower() in STRATEGIES):
        raise MisconfigurationError(
            invalid("strategy", strategy, "no such strategy", f"one of {STRATEGIES} or a Strategy instance")
        )
    name = strategy.lower()
    if isinstance(acc, XLAAccelerator) or name in ("xla", "single_xla", "xla_spmd"):
        _check_xla(acc, name if name in _XLA_STRATEGIES else strategy, num_devices, num_nodes)
        if name == "xla_spmd":
            from fitkit.strategies.xla_spmd import XLASPMDStrategy

            return XLASPMDStrategy(acc, prec, num_devices=num_devices)
        return XLAStrategy(acc, prec, num_processes=num_devices)
    if name == "auto":
        name = "ddp" if num_devices * num_nodes > 1 else "single_device"
    if name in _DDP_OPTIONS:
        from fitkit.strategies.ddp import DDPStrategy

        return DDPStrategy(
            acc,
            prec,
            parallel_devices=[acc.get_device(i) for i in range(num_devices)],
            num_nodes=num_nodes,
            sync_batchnorm=sync_batchnorm,
            **_DDP_OPTIONS[name],
        )
    if name == "fsdp":
        from fitkit.strategies.fsdp import FSDPStrategy

        return FSDPStrategy(
            acc, prec, parallel_devices=[acc.get_device(i) for i in range(num_devices)], num_nodes=num_nodes
        )
    if num_devices != 1 or num_nodes != 1:
        raise MisconfigurationError(
            invalid(
                "strategy",
                strategy,
                f"it runs one process, and devices={devices!r}, num_nodes={num_nodes} ask for "
                f"{num_devices * num_nodes}",
                '"auto" or "ddp" for several processes, or devices=1',
            )
        )
    return SingleDeviceStrategy(acc.get_device(0), accelerator=acc, precision=prec)


def _check_xla(acc: Accelerator, strategy: Any, num_devices: int, num_nodes: int) -> None:
    """Refuse what the XLA strategy cannot run: another accelerator, another strategy, several nodes."""
    if not isinstance(acc, XLAAccelerator):
        raise MisconfigurationError(
            invalid("strategy", strategy, "it trains on XLA devices", "accelerator='xla' (or 'tpu') with it")
        )
    if not (isinstance(strategy, XLAStrategy) or strategy in _XLA_STRATEGIES):
        raise MisconfigurationError(
            invalid(
                "strategy",
                strategy,
                "on XLA devices fitkit runs XLAStrategy (torch_xla's own replicas), not DDP or FSDP",
                f"one of {_XLA_STRATEGIES} or an XLAStrategy instance with accelerator='xla'",
            )
        )
    if num_nodes != 1:
        raise MisconfigurationError(
            invalid(
                "num_nodes",
                num_nodes,
                "a TPU pod runs the same script on every host (see docs/tpu.md); each Trainer sees its own host",
                "1 with accelerator='xla'",
            )
        )
    if strategy == "single_xla" and num_devices != 1:
        raise MisconfigurationError(
            invalid("devices", num_devices, "strategy='single_xla' trains on one device", "1, or strategy='xla'")
        )


def _count_devices(acc: Accelerator, devices: Any) -> int:
    """Processes per node: what ``devices`` names, except that under ``torchrun``
    ``devices="auto"`` means the processes torchrun started on this node."""
    num_devices = acc.parse_devices(devices)
    if devices == "auto" and launched_by_torchrun_style_env():
        env = os.environ
        return int(env.get("LOCAL_WORLD_SIZE", env["WORLD_SIZE"]))
    return num_devices


def _fill_in_parallel(
    strategy: ParallelStrategy, acc: Accelerator, num_devices: int, num_nodes: int, sync_batchnorm: bool
) -> None:
    """Give a user's ParallelStrategy instance the Trainer's devices and nodes where it has none."""
    if strategy.parallel_devices is None:
        strategy.parallel_devices = [acc.get_device(i) for i in range(num_devices)]
    strategy.num_nodes = num_nodes
    if sync_batchnorm and hasattr(strategy, "sync_batchnorm"):
        strategy.sync_batchnorm = True
    strategy.read_ranks_from_env()
    strategy.configure_launcher()
