"""The shared part of accelerators whose devices have indices (CUDA, MPS).

``parse_devices`` validates the Trainer's ``devices`` (see
:mod:`fitkit.accelerators.device_parser`) and remembers the chosen indices;
``get_device(local_rank)`` maps a local rank through them, so ``devices=[2]`` trains
on ``cuda:2``.
"""

from __future__ import annotations

from typing import Any

import torch

from fitkit.accelerators.accelerator import Accelerator
from fitkit.accelerators.device_parser import parse_device_indices
from fitkit.utilities.exceptions import FitkitRuntimeError


class IndexedAccelerator(Accelerator):
    """An accelerator over devices ``<name>:0 .. <name>:n-1``; subclasses set ``name``."""

    def __init__(self) -> None:
        self._indices: list[int] | None = None

    def device_indices(self, devices: Any) -> list[int]:
        self._indices = parse_device_indices(devices, self.auto_device_count(), self.name)
        return list(self._indices)

    def parse_devices(self, devices: Any) -> int:
        return len(self.device_indices(devices))

    def get_device(self, local_rank: int) -> torch.device:
        indices = self._indices
        if indices is None:  # never parsed: local rank i uses device i
            return torch.device(self.name, local_rank)
        if not 0 <= local_rank < len(indices):
            raise FitkitRuntimeError(f"local rank {local_rank} has no {self.name} device: `devices` selected {indices}")
        return torch.device(self.name, indices[local_rank])
