"""The Accelerator base class: one kind of device, nothing about processes or loops."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch


class Accelerator(ABC):
    """A kind of device: whether it exists, how many there are, which one a rank uses.

    Subclass it for a device kind fitkit does not ship and pass an instance as
    ``Trainer(accelerator=MyAccelerator())``.
    """

    name: str = "base"

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
        """Validate the Trainer's ``devices`` argument; return how many devices it names."""

    @abstractmethod
    def get_device(self, local_rank: int) -> torch.device:
        """The ``torch.device`` the process of ``local_rank`` trains on."""

    def setup_device(self, device: torch.device) -> None:
        """Make ``device`` current for this process (no-op where nothing is needed)."""

    def teardown(self) -> None:
        """Release what :meth:`setup_device` took."""

    def get_device_stats(self, device: torch.device) -> dict[str, Any]:
        """Memory and utilisation figures for logging (empty where none exist)."""
        return {}
