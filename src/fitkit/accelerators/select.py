"""Turning the Trainer's ``accelerator`` argument into an Accelerator object."""

from __future__ import annotations

from fitkit.accelerators.accelerator import Accelerator
from fitkit.accelerators.cpu import CPUAccelerator
from fitkit.utilities.exceptions import MisconfigurationError, invalid

ACCELERATORS = ("auto", "cpu")


def select_accelerator(accelerator: str | Accelerator) -> Accelerator:
    if isinstance(accelerator, Accelerator):
        return accelerator
    if isinstance(accelerator, str) and accelerator.lower() in ACCELERATORS:
        # "auto" picks the best available kind; with CPU only, that is the CPU.
        return CPUAccelerator()
    raise MisconfigurationError(
        invalid("accelerator", accelerator, "no such accelerator", f"one of {ACCELERATORS} or an Accelerator instance")
    )
