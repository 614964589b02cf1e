"""The CPU accelerator."""

from __future__ import annotations

from typing import Any

import torch

from fitkit.accelerators.accelerator import Accelerator
from fitkit.utilities.exceptions import MisconfigurationError, invalid


class CPUAccelerator(Accelerator):
    """Training on the host CPU. ``devices`` counts processes (1 until DDP arrives)."""

    name = "cpu"
    host_reads_are_free = True  # no device queue: `.item()` costs about a microsecond

    @staticmethod
    def is_available() -> bool:
        return True

    @staticmethod
    def auto_device_count() -> int:
        return 1

    def parse_devices(self, devices: Any) -> int:
        if devices == "auto":
            return 1
        if isinstance(devices, str) and devices.strip().lstrip("-").isdigit():
            devices = int(devices)
        if isinstance(devices, bool) or not isinstance(devices, int) or (devices < 1 and devices != -1):
            raise MisconfigurationError(
                invalid("devices", devices, "the CPU accelerator counts processes", '"auto", -1 or an int >= 1')
            )
        return 1 if devices == -1 else devices

    def get_device(self, local_rank: int) -> torch.device:
        return torch.device("cpu")
