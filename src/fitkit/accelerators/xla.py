"""The XLA accelerator: TPUs (and torch_xla's CPU and GPU backends) through ``torch_xla``.

``torch_xla`` is imported only here, and only when a method needs it, so that
``import fitkit`` never pays for it (it takes seconds and starts the XLA runtime's
logging). Without ``torch_xla`` installed, asking for ``accelerator="xla"`` fails with
the command that installs it (:func:`require_torch_xla`).

Which backend runs is torch_xla's business: ``PJRT_DEVICE=TPU`` on a Cloud TPU VM,
``PJRT_DEVICE=CPU`` to run the same code on the host (how fitkit's XLA lane tests it).
``devices`` counts XLA devices of this host: 1, or all of them (torch_xla starts one
process per device and cannot pick a subset; ``TPU_NUM_DEVICES`` / ``CPU_NUM_DEVICES``
limit what it sees). See ``docs/tpu.md``.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Any

import torch

from fitkit.accelerators.accelerator import Accelerator
from fitkit.utilities.exceptions import MisconfigurationError, invalid


def torch_xla_installed() -> bool:
    """Whether ``torch_xla`` can be imported here (checked without importing it)."""
    return importlib.util.find_spec("torch_xla") is not None


def require_torch_xla(argument: str = "accelerator", value: Any = "xla") -> None:
    """Raise the install hint when ``torch_xla`` is missing.

    Example::

        >>> if not torch_xla_installed():
        ...     pass  # require_torch_xla() would raise MisconfigurationError here
    """
    if torch_xla_installed():
        return
    version = torch.__version__.split("+")[0]
    raise MisconfigurationError(
        invalid(
            argument,
            value,
            "torch_xla is not installed in this environment",
            f"`pip install torch_xla=={version}` (torch_xla pins the torch version it needs: it must match "
            f"torch {version}) or `pip install 'fitkit[xla]'`, then run with PJRT_DEVICE=TPU (or CPU)",
        )
    )


@functools.lru_cache(maxsize=1)
def _device_count() -> int:
    """XLA devices this process can address (starts the XLA runtime: call late)."""
    import torch_xla

    return int(torch_xla.device_count())


class XLAAccelerator(Accelerator):
    """Training on XLA devices: TPU cores, or torch_xla's CPU backend (``PJRT_DEVICE=CPU``).

    Example::

        >>> import fitkit
        >>> # fitkit.Trainer(accelerator="xla", devices=1)  # or accelerator="tpu"
    """

    name = "xla"

    @staticmethod
    def is_available() -> bool:
        return torch_xla_installed()

    @staticmethod
    def auto_device_count() -> int:
        """All XLA devices of this host (torch_xla's ``device_count()``); 1 before torch_xla can tell."""
        if not torch_xla_installed():
            return 0
        # Asking the runtime would start it, and torch_xla refuses to launch processes
        # once it has started: read what the runtime would read instead.
        backend = os.environ.get("PJRT_DEVICE", "").upper()
        if backend == "CPU":
            return max(1, int(os.environ.get("CPU_NUM_DEVICES", "1") or 1))
        if backend == "TPU":
            from torch_xla._internal import tpu

            return int(tpu.num_available_devices())
        return _device_count()

    def parse_devices(self, devices: Any) -> int:
        if devices == "auto" or devices == -1:
            return self.auto_device_count()
        if isinstance(devices, str) and devices.strip().isdigit():
            devices = int(devices)
        if isinstance(devices, (list, tuple)) and len(devices) == 1 and isinstance(devices[0], int):
            # Lightning's `devices=[5]`: one process, on the device torch_xla gives it.
            return 1
        if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
            raise MisconfigurationError(
                invalid(
                    "devices",
                    devices,
                    "the XLA accelerator counts devices",
                    '"auto", -1, 1, or the number of XLA devices of this host',
                )
            )
        return devices

    def get_device(self, local_rank: int) -> torch.device:
        """The XLA device of this process (``torch_xla.device()``; torch_xla assigns it per process)."""
        import torch_xla

        return torch.device(torch_xla.device())

    def get_device_stats(self, device: torch.device) -> dict[str, Any]:
        """``xm.get_memory_info(device)``: ``bytes_used``/``bytes_limit`` where the backend reports them."""
        import torch_xla.core.xla_model as xm

        try:
            return dict(xm.get_memory_info(device))
        except (RuntimeError, ValueError):  # the CPU backend keeps no such figures
            return {}
