"""The Strategy base class: processes, device placement, backward and optimizer steps.

A Strategy holds the Accelerator and the Precision. The Trainer asks it to place
the module and batches, to run the step methods (so that a wrapper such as DDP can
redirect them), to run backward and the optimizer step, and to reduce values across
processes. It never fires hooks: only the Trainer does.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Mapping
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
        """Move ``batch`` to this process's device, then let the precision convert it."""
        device = self.root_device
        return self._move(batch, device, device.type == "cpu", device.type == "cuda")

    def _move(self, batch: Any, device: torch.device, on_cpu: bool, non_blocking: bool) -> Any:
        if not on_cpu:
            # Host-to-device copies may run asynchronously only where the device has a
            # stream ordered after them (CUDA); MPS and others copy synchronously.
            from fitkit.utilities.apply_func import move_data_to_device

            batch = move_data_to_device(batch, device, non_blocking)
        # On the CPU, loaders already yield host tensors: a no-op `.to("cpu")` per tensor
        # costs about a microsecond each, so the walk is skipped entirely.
        return self._convert_input(batch)

    def _convert_input(self, batch: Any) -> Any:
        precision = self.precision
        if type(precision).convert_input is Precision.convert_input:
            return batch
        return precision.convert_input(batch)

    def on_exception(self, exception: BaseException) -> None:
        """Called by the Trainer when the run raises, before :meth:`teardown`."""

    def teardown(self) -> None:
        if self.accelerator is not None:
            self.accelerator.teardown()

    # -- the step ----------------------------------------------------------------
    def step_method(self, module: nn.Module, name: str) -> Callable[..., Any]:
        """What the loops call for ``module.<name>`` (a wrapper such as DDP redirects it)."""
        return getattr(module, name)  # type: ignore[no-any-return]

    def no_sync(self) -> contextlib.AbstractContextManager[Any]:
        """Context that skips gradient synchronisation on a non-final micro-batch."""
        return _NULL_CONTEXT

    def backward(self, loss: torch.Tensor) -> None:
        self.precision.backward(loss)

    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Callable[[], Any] | None = None) -> Any:
        return self.precision.optimizer_step(optimizer, closure)

    @property
    def host_reads_are_free(self) -> bool:
        """Whether a per-step host read costs nothing here (the accelerator's flag; False without one).

        Where it is False, ``Trainer(nonfinite_loss="raise")`` defers its check to the
        next read of logged values instead of calling :meth:`loss_is_finite` per step.
        """
        return self.accelerator is not None and self.accelerator.host_reads_are_free

    def loss_is_finite(self, loss: torch.Tensor, agree: bool = False) -> bool:
        """Whether the training loss is finite: the exact check behind ``Trainer(nonfinite_loss=...)``.

        Called once per training step, before ``backward``, where host reads are free
        (:attr:`host_reads_are_free`) or the policy is ``"skip"``. Here it is one host
        read of the loss (``loss.item()``: about a microsecond on a CPU scalar, where
        ``bool(torch.isfinite(loss))`` takes 15-30 µs; timeit, torch 2.14). With
        ``agree=True`` (``"skip"``) and several processes every process gets the same
        answer (a ``min`` all-reduce of the flag: one small blocking collective per step),
        so all of them skip together and DDP's gradient all-reduce stays in step.

        Example::

            >>> Strategy().loss_is_finite(torch.tensor(float("nan")))
            False
        """
        finite = math.isfinite(loss.item())
        if not agree or self.world_size == 1:
            return finite
        flag = torch.tensor(1.0 if finite else 0.0, device=self.root_device)
        return bool(self.reduce(flag, "min"))

    def execute_pending(self) -> None:
        """Run the device work traced so far, before logged values are read on the host.

        The Trainer calls it every ``log_every_n_steps`` and at epoch end, never per step.
        A no-op on eager devices; XLA runs its pending graph here (``torch_xla.sync()``),
        so that reading a value does not compile and run a graph of its own.
        """

    def rng_state(self) -> dict[str, Any]:
        """Random-number state of the device beyond torch's CPU and CUDA generators.

        Checkpoints store it next to :func:`fitkit.utilities.rng.capture`'s state, and a
        resumed run hands it back to :meth:`load_rng_state`. Empty for devices that torch's
        own generators cover; XLA returns its per-device seed.
        """
        return {}

    def load_rng_state(self, state: dict[str, Any]) -> None:
        """Put back what :meth:`rng_state` returned (missing keys are left alone)."""

    # -- checkpoints ----------------------------------------------------------------------
    # The Trainer builds and restores checkpoints through these, so a strategy whose
    # parameters are sharded (FSDP) can gather them into, and scatter them out of, the
    # plain full tensors a checkpoint holds.
    def module_state_dict(self, module: nn.Module) -> dict[str, Any]:
        """The full state dict of ``module``, with ``torch.compile``'s ``_orig_mod`` segments removed."""
        from fitkit.utilities.compile import clean_state_dict

        return clean_state_dict(module.state_dict())

    def load_module_state_dict(self, module: nn.Module, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Load a full state dict (as :meth:`module_state_dict` returns) into ``module``.

        Clean names load into a module with compiled submodules too.
        """
        from fitkit.utilities.compile import load_state_dict

        load_state_dict(module, state_dict, strict=strict)

    def optimizer_state_dict(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        return optimizer.state_dict()

    def load_optimizer_state_dict(self, optimizer: torch.optim.Optimizer, state_dict: Mapping[str, Any]) -> None:
        optimizer.load_state_dict(dict(state_dict))

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: str | os.PathLike[str]) -> None:
        """Write ``checkpoint`` atomically; only global rank zero writes."""
        if self.is_global_zero:
            from fitkit.checkpoint import atomic_save

            atomic_save(checkpoint, filepath)

    def load_checkpoint(self, filepath: str | os.PathLike[str]) -> dict[str, Any]:
        """Read a checkpoint (``weights_only=True``) onto this process's device. Every rank reads."""
        from fitkit.checkpoint import load

        return load(filepath, map_location=self.root_device)

    # -- collectives (identity for one process) -------------------------------------
    def reduce(self, tensor: torch.Tensor, reduce_op: str = "mean") -> torch.Tensor:
        return tensor

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor.unsqueeze(0)

    def barrier(self, name: str | None = None) -> None:
        pass

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        return obj
