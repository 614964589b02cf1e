"""The MPS accelerator: Apple-silicon GPUs through ``torch.backends.mps``.

A Mac has one MPS device, so ``devices`` can only select ``mps:0``.
"""

from __future__ import annotations

import platform
from typing import Any

import torch

from fitkit.accelerators.indexed import IndexedAccelerator
from fitkit.utilities.exceptions import MisconfigurationError, invalid


class MPSAccelerator(IndexedAccelerator):
    """Training on the Apple-silicon GPU (one device).

    Example::

        >>> MPSAccelerator.auto_device_count() in (0, 1)
        True
    """

    name = "mps"

    @staticmethod
    def is_available() -> bool:
        return platform.system() == "Darwin" and torch.backends.mps.is_available()

    @staticmethod
    def auto_device_count() -> int:
        return 1 if MPSAccelerator.is_available() else 0

    def setup_device(self, device: torch.device) -> None:
        if device.type != "mps":
            raise MisconfigurationError(
                invalid("device", str(device), "the MPS accelerator trains on the MPS device", "an mps device")
            )

    def teardown(self) -> None:
        if self.is_available():
            torch.mps.empty_cache()

    def get_device_stats(self, device: torch.device) -> dict[str, Any]:
        """Bytes the MPS allocator holds for tensors and in total."""
        return {
            "mps.current_allocated_bytes": torch.mps.current_allocated_memory(),
            "mps.driver_allocated_bytes": torch.mps.driver_allocated_memory(),
        }
