"""Accelerators: which kind of device a run uses (CPU, CUDA, MPS, or your own)."""

from fitkit.accelerators.accelerator import Accelerator
from fitkit.accelerators.cpu import CPUAccelerator
from fitkit.accelerators.cuda import CUDAAccelerator
from fitkit.accelerators.device_parser import parse_device_indices
from fitkit.accelerators.mps import MPSAccelerator

__all__ = ["Accelerator", "CPUAccelerator", "CUDAAccelerator", "MPSAccelerator", "parse_device_indices"]
