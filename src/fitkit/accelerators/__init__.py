"""Accelerators: which kind of device a run uses (CPU, CUDA, MPS, XLA, or your own).

``XLAAccelerator`` is importable from here without ``torch_xla``: its module imports
torch_xla only inside methods."""

from fitkit.accelerators.accelerator import Accelerator
from fitkit.accelerators.cpu import CPUAccelerator
from fitkit.accelerators.cuda import CUDAAccelerator
from fitkit.accelerators.device_parser import parse_device_indices
from fitkit.accelerators.mps import MPSAccelerator
from fitkit.accelerators.xla import XLAAccelerator

__all__ = [
    "Accelerator",
    "CPUAccelerator",
    "CUDAAccelerator",
    "MPSAccelerator",
    "XLAAccelerator",
    "parse_device_indices",
]
