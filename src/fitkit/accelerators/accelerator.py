"""The Accelerator base class: one kind of device, nothing about processes or loops.

An Accelerator answers four questions for the Strategy: is this kind of device here
(:meth:`~Accelerator.is_available`), which of them does the Trainer's ``devices``
argument select (:meth:`~Accelerator.parse_devices`,
:meth:`~Accelerator.device_indices`), which ``torch.device`` does the process of a
local rank train on (:meth:`~Accelerator.get_device`), and what to do when a process
starts and ends on one (:meth:`~Accelerator.setup_device`,
:meth:`~Accelerator.teardown`). It knows nothing of process groups or loops.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch


class Accelerator(ABC):
    """A kind of device: whether it exists, how many there are, which one a rank uses.

    Subclass it for a device kind fitkit does not ship and pass an instance as
    ``Trainer(accelerator=MyAccelerator())``. Four methods are required.

    Example::

        >>> class MyCPU(Accelerator):
        ...     @staticmethod
        ...     def is_available() -> bool:
        ...         return True
        ...     @staticmethod
        ...     def auto_device_count() -> int:
        ...         return 1
        ...     def parse_devices(self, devices):
        ...         return 1
        ...     def get_device(self, local_rank):
        ...         return torch.device("cpu")
        >>> MyCPU().device_indices("auto")
        [0]
    """

    name: str = "base"
    #: Whether reading a device value on the host (``tensor.item()``) is free, with no
    #: device queue to wait for: True for the CPU only. Where it is False, fitkit keeps
    #: per-step checks off the host and reads them where it reads logged values anyway
    #: (``Trainer(nonfinite_loss="raise")``).
    host_reads_are_free: bool = False

    @staticmethod
    @abstractmethod
    def is_available() -> bool:
        """Whether this kind of device can be used in this process."""

    @staticmethod
    @abstractmethod
    def auto_device_count() -> int:
        """How many devices ``devices="auto"`` means."""

    @abstractmethod
    def parse_devices(self, devices: Any) -> int:
        """Validate the Trainer's ``devices`` argument; return how many devices (processes) it names.

        An accelerator whose devices have indices (CUDA, MPS) also remembers the
        selection, so that :meth:`get_device` maps a local rank through it.
        """

    def device_indices(self, devices: Any) -> list[int]:
        """The device indices ``devices`` selects, one per local process, in rank order.

        The default numbers the processes ``0 .. n-1``; accelerators with real device
        indices return the user's choice (``devices=[1, 3]`` gives ``[1, 3]``).
        """
        return list(range(self.parse_devices(devices)))

    @abstractmethod
    def get_device(self, local_rank: int) -> torch.device:
        """The ``torch.device`` the process of ``local_rank`` trains on."""

    def setup_device(self, device: torch.device) -> None:
        """Make ``device`` current for this process (no-op where nothing is needed)."""

    def teardown(self) -> None:
        """Release what :meth:`setup_device` and the run took (cached memory, for example)."""

    def get_device_stats(self, device: torch.device) -> dict[str, Any]:
        """Memory and utilisation figures for logging (empty where none exist)."""
        return {}
