"""The CUDA accelerator: NVIDIA (and ROCm builds') GPUs through ``torch.cuda``.

Counting devices goes through ``torch.cuda.device_count()``, which does not create
a CUDA context, so choosing the accelerator before forking worker processes is
safe. Everything else touches CUDA only once a run starts.
"""

from __future__ import annotations

from typing import Any

import torch

from fitkit.accelerators.indexed import IndexedAccelerator
from fitkit.utilities.exceptions import MisconfigurationError, invalid


class CUDAAccelerator(IndexedAccelerator):
    """Training on CUDA GPUs. ``devices`` counts or indexes GPUs (see ``docs/accelerators.md``).

    Example::

        >>> acc = CUDAAccelerator()
        >>> # acc.parse_devices([1]) -> 1, then acc.get_device(0) -> device(type='cuda', index=1)
    """

    name = "cuda"

    @staticmethod
    def is_available() -> bool:
        return torch.cuda.device_count() > 0

    @staticmethod
    def auto_device_count() -> int:
        return torch.cuda.device_count()

    def setup_device(self, device: torch.device) -> None:
        if device.type != "cuda":
            raise MisconfigurationError(
                invalid("device", str(device), "the CUDA accelerator trains on CUDA devices", "a cuda device")
            )
        torch.cuda.set_device(device)

    def teardown(self) -> None:
        # Hand cached blocks back so the next run (or another process) can use them.
        if torch.cuda.is_initialized():
            torch.cuda.empty_cache()

    def get_device_stats(self, device: torch.device) -> dict[str, Any]:
        """``torch.cuda.memory_stats(device)``: allocator figures such as ``"allocated_bytes.all.current"``."""
        return dict(torch.cuda.memory_stats(device))
