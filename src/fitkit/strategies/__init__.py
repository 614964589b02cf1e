"""Strategies: how many processes train and how they cooperate."""

from fitkit.strategies.single_device import SingleDeviceStrategy
from fitkit.strategies.strategy import Strategy

__all__ = ["SingleDeviceStrategy", "Strategy"]
