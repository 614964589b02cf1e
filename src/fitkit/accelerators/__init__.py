"""Accelerators: which kind of device a run uses."""

from fitkit.accelerators.accelerator import Accelerator
from fitkit.accelerators.cpu import CPUAccelerator

__all__ = ["Accelerator", "CPUAccelerator"]
