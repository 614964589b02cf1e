"""Data-parallel training with ``torch.nn.parallel.DistributedDataParallel``.

Every process holds a full copy of the module; DDP averages the gradients across
processes during ``backward``. The training step runs through the DDP wrapper's
``forward`` (a small :class:`_StepRedirect` module whose forward calls the user's
``training_step``), which is what lets DDP prepare its gradient hooks; inside the
step, ``self`` is still the user's Module. Evaluation steps call the Module
directly: they need no gradient sync, and evaluation shards may have different
lengths per process, which a collective inside DDP's forward would not survive.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fitkit.accelerators.accelerator import Accelerator
from fitkit.precision.precision import Precision
from fitkit.strategies.parallel import DEFAULT_TIMEOUT, ParallelStrategy
from fitkit.utilities.exceptions import MisconfigurationError, invalid

START_METHODS = ("popen", "spawn", "fork", "forkserver")
_NULL_CONTEXT = contextlib.nullcontext()


class _StepRedirect(nn.Module):
    """What DDP wraps: ``forward(name, *args)`` calls ``module.<name>(*args)``."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.module, method)(*args, **kwargs)


class DDPStrategy(ParallelStrategy):
    """One process per device, each with the whole model; gradients averaged by DDP.

    Args:
        accelerator, precision, parallel_devices, num_nodes, process_group_backend, timeout:
            as for :class:`~fitkit.strategies.parallel.ParallelStrategy`.
        start_method: how processes start when the script was not run by ``torchrun``:
            ``"popen"`` re-runs the script once per extra process (the default);
            ``"spawn"`` (``strategy="ddp_spawn"``), ``"fork"`` or ``"forkserver"`` use
            ``torch.multiprocessing`` from inside ``fit``.
        find_unused_parameters, static_graph, gradient_as_bucket_view: passed to
            ``DistributedDataParallel``, as is any other keyword in ``ddp_kwargs``.
        sync_batchnorm: convert BatchNorm layers to ``SyncBatchNorm``
            (``Trainer(sync_batchnorm=True)`` sets it).

    Example::

        >>> import fitkit
        >>> trainer = fitkit.Trainer(accelerator="cpu", devices=2, strategy=DDPStrategy(static_graph=True))
        >>> trainer.strategy.world_size
        2
    """

    name = "ddp"

    def __init__(
        self,
        accelerator: Accelerator | None = None,
        precision: Precision | None = None,
        *,
        parallel_devices: list[torch.device] | None = None,
        num_nodes: int = 1,
        process_group_backend: str | None = None,
        timeout: datetime.timedelta = DEFAULT_TIMEOUT,
        start_method: str = "popen",
        find_unused_parameters: bool = False,
        static_graph: bool = False,
        gradient_as_bucket_view: bool = False,
        sync_batchnorm: bool = False,
        **ddp_kwargs: Any,
    ) -> None:
        super().__init__(
            accelerator,
            precision,
            parallel_devices=parallel_devices,
            num_nodes=num_nodes,
            process_group_backend=process_group_backend,
            timeout=timeout,
        )
        if start_method not in START_METHODS:
            raise MisconfigurationError(
                invalid("start_method", start_method, "no such way to start processes", f"one of {START_METHODS}")
            )
        self.start_method = start_method
        self.sync_batchnorm = sync_batchnorm
        self.ddp_kwargs: dict[str, Any] = {
            "find_unused_parameters": find_unused_parameters,
            "static_graph": static_graph,
            "gradient_as_bucket_view": gradient_as_bucket_view,
            **ddp_kwargs,
        }
        self.model: nn.Module | None = None  # the DDP wrapper, once set up
        self.configure_launcher()

    def setup_module(self, module: nn.Module) -> nn.Module:
        """Place ``module``, then wrap it in DDP (the wrapper is ``self.model``; the Module is returned)."""
        module = super().setup_module(module)
        if not self.distributed_ready:
            self.model = None
            return module
        if self.sync_batchnorm:
            module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
            self.module = module
        from torch.nn.parallel import DistributedDataParallel

        device = self.root_device
        device_ids = [device.index] if device.type == "cuda" and device.index is not None else None
        self.model = DistributedDataParallel(_StepRedirect(module), device_ids=device_ids, **self.ddp_kwargs)
        return module

    def step_method(self, module: nn.Module, name: str) -> Callable[..., Any]:
        model = self.model
        if model is None or name != "training_step":
            return getattr(module, name)  # type: ignore[no-any-return]

        def step(*args: Any, **kwargs: Any) -> Any:
            return model(name, *args, **kwargs)

        return step

    def no_sync(self) -> contextlib.AbstractContextManager[Any]:
        """DDP's ``no_sync``: this micro-batch's gradients stay local until the boundary."""
        model = self.model
        if model is None:
            return _NULL_CONTEXT
        return model.no_sync()  # type: ignore[operator,no-any-return]

    def teardown(self) -> None:
        self.model = None
        super().teardown()
