"""One process on one device.

Batches move to the device here. On CUDA the copies are ``non_blocking``: from a
pinned-memory loader (``DataLoader(pin_memory=True)``) the host-to-device copy then
overlaps with the work already queued; from ordinary memory it is no slower than a
blocking copy. On the CPU nothing moves at all.
"""

from __future__ import annotations

from typing import Any

import torch

from fitkit.accelerators.accelerator import Accelerator
from fitkit.precision.precision import Precision
from fitkit.strategies.strategy import Strategy


class SingleDeviceStrategy(Strategy):
    """Train in this process on one device.

    Example::

        >>> s = SingleDeviceStrategy(torch.device("cpu"))
        >>> s.root_device
        device(type='cpu')
    """

    name = "single_device"

    def __init__(
        self,
        device: torch.device | str = "cpu",
        accelerator: Accelerator | None = None,
        precision: Precision | None = None,
    ) -> None:
        super().__init__(accelerator, precision)
        self._device = torch.device(device)
        # Read per batch: decided once (torch.device.type builds a new string on every read).
        self._on_cpu = self._device.type == "cpu"
        self._non_blocking = self._device.type == "cuda"

    @property
    def root_device(self) -> torch.device:
        return self._device

    def batch_to_device(self, batch: Any) -> Any:
        return self._move(batch, self._device, self._on_cpu, self._non_blocking)
