"""Data parallelism over every XLA device of one process, by sharding (``strategy="xla_spmd"``).

torch_xla's SPMD mode compiles one program for all devices: each batch is split along
its first dimension over a one-axis device mesh (``"data"``), the weights are
replicated, and XLA's partitioner inserts the gradient all-reduce itself. One process
drives every device, so the Trainer sees ``world_size == 1``: no launcher, no
distributed sampler, and a logged loss is already the mean over the global batch.

This is the configuration that runs real cross-device collectives on torch_xla 2.9's
CPU backend (``PJRT_DEVICE=CPU CPU_NUM_DEVICES=N``), where one process per device
cannot (see ``docs/tpu.md``); on a TPU host it shards over the host's chips.

``xr.use_spmd()`` changes the whole process for good, and works only before anything
else has touched an XLA device or run a backward pass (torch's autograd engine counts
devices once, at the first backward): use this strategy from the start of a script.
Everything else (graph cuts, loading, precision, checkpoints) is
:class:`~fitkit.strategies.xla.XLAStrategy`'s.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from fitkit.accelerators.accelerator import Accelerator
from fitkit.precision.precision import Precision
from fitkit.strategies.xla import XLAStrategy
from fitkit.utilities.exceptions import FitkitRuntimeError, MisconfigurationError, invalid


class XLASPMDStrategy(XLAStrategy):
    """Shard every batch over all XLA devices of this process; replicate the weights.

    Args:
        accelerator, precision: as for :class:`~fitkit.strategies.xla.XLAStrategy`.
        num_devices: the devices the Trainer's ``devices`` names: all of this host's
            (``CPU_NUM_DEVICES`` on the CPU backend), or 1.

    Example::

        >>> import fitkit
        >>> # PJRT_DEVICE=CPU CPU_NUM_DEVICES=2:
        >>> # fitkit.Trainer(accelerator="xla", devices=2, strategy="xla_spmd")
    """

    name = "xla_spmd"

    def __init__(
        self, accelerator: Accelerator | None = None, precision: Precision | None = None, *, num_devices: int = 1
    ) -> None:
        self._mesh: Any = None
        self._num_devices = 1
        super().__init__(accelerator, precision, num_processes=1, sync_module_states=False)
        self.set_num_processes(num_devices)

    def set_num_processes(self, num_processes: int) -> None:
        """Record the devices to shard over: one process always drives all of them."""
        if isinstance(num_processes, bool) or not isinstance(num_processes, int) or num_processes < 1:
            raise MisconfigurationError(invalid("devices", num_processes, "it counts XLA devices", "an int >= 1"))
        self._num_devices = num_processes
        self._planned = 1
        self.launcher = None

    @property
    def num_devices(self) -> int:
        """How many devices each batch is split over."""
        return self._num_devices

    def setup_environment(self) -> None:
        """Switch the process to SPMD, then build the ``("data",)`` mesh over every device."""
        from fitkit.accelerators.xla import require_torch_xla

        require_torch_xla("strategy", "xla_spmd")
        import numpy as np
        import torch_xla
        import torch_xla.distributed.spmd as xs
        import torch_xla.runtime as xr

        if not xr.is_spmd():
            if torch_xla._XLAC._xla_runtime_is_initialized():
                raise FitkitRuntimeError(
                    "strategy='xla_spmd' must switch the process to SPMD before anything uses an XLA device, and "
                    "this process already did. Choose it at the start of the script (and run no backward pass "
                    "before it: torch's autograd engine counts devices once)."
                )
            xr.use_spmd()
        count = int(xr.global_runtime_device_count())
        if count != self._num_devices:
            hint = "CPU_NUM_DEVICES" if os.environ.get("PJRT_DEVICE", "").upper() == "CPU" else "TPU_NUM_DEVICES"
            raise MisconfigurationError(
                invalid(
                    "devices",
                    self._num_devices,
                    f"SPMD shards over every device this process sees, and it sees {count}",
                    f"devices={count} or 'auto' (or set {hint} before the run starts)",
                )
            )
        self._mesh = xs.Mesh(np.arange(count), (count,), ("data",))
        xs.set_global_mesh(self._mesh)
        self._device = None  # SPMD's virtual device replaces the per-process one
        super().setup_environment()

    def batch_to_device(self, batch: Any) -> Any:
        """Cut the graph, place ``batch``, and split each of its tensors along dimension 0."""
        batch = super().batch_to_device(batch)
        _shard(batch, self._mesh)
        return batch

    def backward(self, loss: torch.Tensor) -> None:
        # One program for all devices: the partitioner already reduces the gradients.
        self._backward(loss)


def _shard(batch: Any, mesh: Any) -> None:
    import torch_xla.distributed.spmd as xs

    if isinstance(batch, torch.Tensor):
        if batch.dim() >= 1:
            xs.mark_sharding(batch, mesh, ("data",) + (None,) * (batch.dim() - 1))
    elif isinstance(batch, dict):
        for value in batch.values():
            _shard(value, mesh)
    elif isinstance(batch, (list, tuple)):
        for value in batch:
            _shard(value, mesh)
