"""The Strategy base class: processes, device placement, backward and optimizer steps.

A Strategy holds the Accelerator and the Precision. The Trainer asks it to place
the module and batches, to run the step methods (so that a wrapper such as DDP can
redirect them), to run backward and the optimizer step, and to reduce values across
processes. It never fires hooks: only the Trainer does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fitkit.accelerators.accelerator import Accelerator
from fitkit.precision.precision import Precision

_NULL_CONTEXT = contextlib.nullcontext()


class Strategy:
    """Base strategy. Subclasses override what differs for several processes."""

    name = "base"

    def __init__(self, accelerator: Accelerator | None = None, precision: Precision | None = None) -> None:
        self.accelerator = accelerator
        self.precision = precision if precision is not None else Precision()
        self.module: nn.Module | None = None

    # -- ranks -----------------------------------------------------------------
    @property
    def root_device(self) -> torch.device:
        raise NotImplementedError

    @property
    def world_size(self) -> int:
        return 1

    @property
    def global_rank(self) -> int:
        return 0

    @property
    def local_rank(self) -> int:
        return 0

    @property
    def node_rank(self) -> int:
        return 0

    @property
    def is_global_zero(self) -> bool:
        return self.global_rank == 0

    # -- set-up ----------------------------------------------------------------
    def setup_environment(self) -> None:
        """Start processes / process groups and claim the device."""
        if self.accelerator is not None:
            self.accelerator.setup_device(self.root_device)

    def setup_module(self, module: nn.Module) -> nn.Module:
        """Convert the module to the precision's format and move it to the device."""
        module = self.precision.convert_module(module)
        self.module = module.to(self.root_device)
        return self.module

    def process_dataloader(self, dataloader: Any) -> Any:
        """Adapt a loader to this strategy (a distributed sampler, for example)."""
        return dataloader

    def batch_to_device(self, batch: Any) -> Any:
        from fitkit.utilities.apply_func import move_data_to_device

        return move_data_to_device(batch, self.root_device)

    def teardown(self) -> None:
        if self.accelerator is not None:
            self.accelerator.teardown()

    # -- the step ----------------------------------------------------------------
    def no_sync(self) -> contextlib.AbstractContextManager[Any]:
        """Context that skips gradient synchronisation on a non-final micro-batch."""
        return _NULL_CONTEXT

    def backward(self, loss: torch.Tensor) -> None:
        self.precision.backward(loss)

    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Callable[[], Any] | None = None) -> Any:
        return self.precision.optimizer_step(optimizer, closure)

    # -- collectives (identity for one process) -------------------------------------
    def reduce(self, tensor: torch.Tensor, reduce_op: str = "mean") -> torch.Tensor:
        return tensor

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.unsqueeze(0)

    def barrier(self, name: str | None = None) -> None:
        pass

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        return obj
