"""Strategies: how many processes train and how they cooperate."""

from fitkit.strategies.ddp import DDPStrategy
from fitkit.strategies.fsdp import FSDPStrategy
from fitkit.strategies.parallel import ParallelStrategy
from fitkit.strategies.single_device import SingleDeviceStrategy
from fitkit.strategies.strategy import Strategy
from fitkit.strategies.xla import XLAStrategy
from fitkit.strategies.xla_spmd import XLASPMDStrategy

__all__ = [
    "DDPStrategy",
    "FSDPStrategy",
    "ParallelStrategy",
    "SingleDeviceStrategy",
    "Strategy",
    "XLASPMDStrategy",
    "XLAStrategy",
]
