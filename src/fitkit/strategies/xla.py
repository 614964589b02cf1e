"""Training on XLA devices (TPU cores, or torch_xla's CPU backend): one process per device.

What differs from an eager device, and where it lives here:

- **Lazy tensors, one graph per step.** torch_xla records operations and compiles and
  runs them as one graph when told to (``torch_xla.sync()``). This strategy cuts the
  graph once per batch, in :meth:`XLAStrategy.batch_to_device` (so the previous step's
  forward, backward, optimizer step and logging run as one graph), and before values
  are read on the host (:meth:`XLAStrategy.execute_pending`: the Trainer calls it every
  ``log_every_n_steps`` and at epoch end) and before a checkpoint is written. Micro-batches
  of an accumulation window and gradient clipping add no cut. The graphs are the same
  every step, so after the first few steps nothing compiles any more.
- **Loading.** Loaders are wrapped in torch_xla's ``MpDeviceLoader``, whose threads copy
  the next batches to the device while the current step runs. Its own per-batch cut is
  switched off: the strategy makes the cut, at the same point.
- **Replicas.** With ``devices > 1`` torch_xla's launcher (``torch_xla.launch``, i.e.
  ``xmp.spawn``) starts one process per device (:class:`XLALauncher`). Gradients are
  averaged across replicas at the end of ``backward`` (as DDP does, skipped inside
  ``no_sync`` while a window accumulates), so hooks and clipping see the averaged
  gradients; the optimizer then steps. ``xm.optimizer_step`` is the same reduction plus
  the step, which is what runs with one replica.
- **Checkpoints.** The master ordinal writes them, its tensors moved to the CPU as
  ``xm.save`` moves them (so the file loads anywhere), with fitkit's atomic write;
  loading maps to the CPU first.

``torch_xla`` is imported inside methods only. Not owned here: the device count
(:mod:`fitkit.accelerators.xla`) and the number format (:mod:`fitkit.precision.xla`).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import sys
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from fitkit.accelerators.accelerator import Accelerator
from fitkit.precision.precision import Precision
from fitkit.precision.xla import XLAPrecision
from fitkit.strategies.launchers.xla import XLALauncher
from fitkit.strategies.strategy import Strategy
from fitkit.utilities.apply_func import move_data_to_device
from fitkit.utilities.exceptions import FitkitRuntimeError, MisconfigurationError, invalid
from fitkit.utilities.seed import take_device_seed

REDUCE_OPS = ("mean", "sum", "max", "min")


class _NoSync(contextlib.AbstractContextManager[None]):
    __slots__ = ("_strategy",)

    def __init__(self, strategy: XLAStrategy) -> None:
        self._strategy = strategy

    def __enter__(self) -> None:
        self._strategy._sync_grads = False

    def __exit__(self, *exc: object) -> None:
        self._strategy._sync_grads = True


class XLALoader:
    """A loader read through torch_xla's ``MpDeviceLoader``: batches arrive on the device.

    Everything else (``len``, ``sampler``, ``dataset``, ``batch_size``...) is the wrapped
    loader's, so samplers, resuming and seeding see the user's loader.

    Example::

        >>> # XLALoader(DataLoader(ds, batch_size=32), torch_xla.device())
    """

    def __init__(self, loader: Any, device: torch.device) -> None:
        from torch_xla.distributed.parallel_loader import MpDeviceLoader

        self.loader = loader
        # batches_per_execution: the strategy cuts the graph itself, so the loader never does.
        self.device_loader = MpDeviceLoader(loader, device, batches_per_execution=sys.maxsize)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.device_loader)

    def __getattr__(self, name: str) -> Any:
        if name in ("loader", "device_loader"):  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.loader, name)

    def close(self) -> None:
        """Stop the loading threads of the current pass, if any."""
        parallel = getattr(self.device_loader, "_parallel_loader", None)
        if parallel is not None:
            parallel.close()
            self.device_loader._parallel_loader = None


def _on_device(batch: Any, device: torch.device) -> bool:
    """Whether ``batch`` is a tensor, or a tuple, list or dict of tensors, all on ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.device == device
    if isinstance(batch, (tuple, list)):
        return all(_on_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return all(_on_device(b, device) for b in batch.values())
    return False


def _to_cpu(data: Any) -> Any:
    """``data`` with every XLA tensor copied to the CPU, in one transfer where torch_xla offers it."""
    import torch_xla.core.xla_model as xm

    convert = getattr(xm, "_maybe_convert_to_cpu", None)  # what xm.save uses; private, so guarded
    if convert is not None:
        return convert(data, convert=True)
    return move_data_to_device(data, torch.device("cpu"))


# torch_xla's recurrence for the device seed at each graph cut (its MarkStep).
_SEED_MUL, _SEED_ADD, _SEED_MASK = 7012063, 1012031, 2**64 - 1


class XLAStrategy(Strategy):
    """One process per XLA device; the Trainer picks it for ``accelerator="xla"`` (alias ``"tpu"``).

    Args:
        accelerator: the XLA accelerator; ``select_strategy`` fills it in.
        precision: an :class:`~fitkit.precision.xla.XLAPrecision`; ``select_strategy`` fills it in.
        num_processes: replicas on this host: 1, or all of its XLA devices (the Trainer's ``devices``).
        sync_module_states: with several replicas, start every replica from the master's weights.

    Example::

        >>> import fitkit
        >>> # fitkit.Trainer(accelerator="xla", devices=8)  # on a TPU VM: 8 processes, one per core
    """

    name = "xla"

    def __init__(
        self,
        accelerator: Accelerator | None = None,
        precision: Precision | None = None,
        *,
        num_processes: int = 1,
        sync_module_states: bool = True,
    ) -> None:
        super().__init__(accelerator, precision)
        self.sync_module_states = sync_module_states
        self.launcher: XLALauncher | None = None
        self._device: torch.device | None = None
        self._planned = 1
        self._world_size: int | None = None  # known once the runtime runs in this process
        self._global_rank = 0
        self._local_rank = 0
        self._sync_grads = True
        self._no_sync = _NoSync(self)
        self._convert_inputs = False  # whether batches go through precision.convert_input
        self._sync: Callable[[], None] | None = None  # torch_xla.sync, once torch_xla is imported
        self._loaders: list[XLALoader] = []
        # The device seed each batch starts from: advanced per batch as torch_xla advances
        # it per graph cut, so extra cuts (a checkpoint, a log flush) do not shift it.
        self._seed: int | None = None
        self._set_seed: Callable[[int, str], None] | None = None
        self._device_name = ""
        self.set_num_processes(num_processes)

    def set_num_processes(self, num_processes: int) -> None:
        """Plan ``num_processes`` replicas (``select_strategy`` passes the Trainer's ``devices``)."""
        if isinstance(num_processes, bool) or not isinstance(num_processes, int) or num_processes < 1:
            raise MisconfigurationError(
                invalid("num_processes", num_processes, "it counts XLA replicas", "an int >= 1")
            )
        if num_processes > 1 and os.environ.get("PJRT_DEVICE", "").upper() == "CPU":
            raise MisconfigurationError(
                invalid(
                    "devices",
                    num_processes,
                    "torch_xla 2.9's CPU backend cannot reduce across replicas: with CPU_NUM_DEVICES > 1 the "
                    "replicas' first all-reduce never meets (see docs/tpu.md)",
                    "devices=1, or strategy='xla_spmd' (one process shards each batch over the CPU devices), "
                    "or a TPU (PJRT_DEVICE=TPU) for several processes",
                )
            )
        self._planned = num_processes
        self.launcher = XLALauncher(num_processes) if num_processes > 1 else None

    # -- ranks ---------------------------------------------------------------------------------
    @property
    def root_device(self) -> torch.device:
        if self._device is None:
            import torch_xla

            self._device = torch.device(torch_xla.device())
        return self._device

    @property
    def world_size(self) -> int:
        return self._world_size if self._world_size is not None else self._planned

    @property
    def global_rank(self) -> int:
        return self._global_rank

    @property
    def local_rank(self) -> int:
        return self._local_rank

    # -- set-up and tear-down -----------------------------------------------------------------
    def setup_environment(self) -> None:
        """Start (or join) the XLA runtime in this process and read this replica's ordinals."""
        from fitkit.accelerators.xla import require_torch_xla

        require_torch_xla()
        import torch_xla.runtime as xr

        self._world_size = int(xr.world_size())
        self._global_rank = int(xr.global_ordinal())
        self._local_rank = int(xr.local_ordinal())
        precision = self.precision
        if isinstance(precision, XLAPrecision):
            self._convert_inputs = precision.name == "bf16-true"  # the others leave batches as they are
        else:  # a user's Precision: convert only if it says how
            self._convert_inputs = type(precision).convert_input is not Precision.convert_input
        import torch_xla

        self._sync = torch_xla.sync
        super().setup_environment()
        import torch_xla.core.xla_model as xm

        self._device_name = str(self.root_device)
        self._set_seed = xm.set_rng_state
        seed = take_device_seed()  # torch.manual_seed does not reach XLA's generator
        self._seed = int(xm.get_rng_state(self._device_name)) if seed is None else seed

    def setup_module(self, module: nn.Module) -> nn.Module:
        module = super().setup_module(module)
        if self.world_size > 1 and self.sync_module_states:
            import torch_xla.core.xla_model as xm

            xm.broadcast_master_param(module)
        return module

    def process_dataloader(self, dataloader: Any) -> Any:
        """Read ``dataloader`` through ``MpDeviceLoader`` (background copies to the device)."""
        if isinstance(dataloader, XLALoader) or type(dataloader).__name__ == "MpDeviceLoader":
            return dataloader
        loader = XLALoader(dataloader, self.root_device)
        self._loaders.append(loader)
        return loader

    def teardown(self) -> None:
        for loader in self._loaders:
            loader.close()
        self._loaders.clear()
        self._sync_grads = True
        super().teardown()

    # -- the step ---------------------------------------------------------------------------------
    def batch_to_device(self, batch: Any) -> Any:
        """Cut the graph (the previous step runs), then place ``batch`` on the device."""
        sync = self._sync
        if sync is None:  # called before setup_environment (an example input, say)
            import torch_xla

            sync = self._sync = torch_xla.sync
        sync()
        if self._set_seed is not None:
            # The seed this batch's random ops start from: torch_xla's own per-cut recurrence,
            # applied once per batch however many cuts ran since, so a resumed run repeats it.
            self._seed = seed = (_SEED_ADD + self._seed * _SEED_MUL) & _SEED_MASK  # type: ignore[operator]
            self._set_seed(seed, self._device_name)
        # Batches from the wrapped loader are on the device already. Even a no-op `.to`
        # releases the GIL, which the loader's threads then take: skip it when possible.
        if not _on_device(batch, self.root_device):
            batch = move_data_to_device(batch, self.root_device)
        return self.precision.convert_input(batch) if self._convert_inputs else batch

    def execute_pending(self) -> None:
        """Run the traced graph now (``torch_xla.sync()``), so host reads find values, not graphs."""
        import torch_xla

        torch_xla.sync()

    def loss_is_finite(self, loss: torch.Tensor, agree: bool = False) -> bool:
        """The exact per-step check; on XLA the Trainer calls it for ``nonfinite_loss="skip"`` only.

        ``"raise"`` is deferred to the reads of logged values (the XLA accelerator's
        ``host_reads_are_free`` is False), so no step waits for it. ``"skip"`` must know
        before ``backward``: the graph is cut first, so each step runs as two graphs (the
        forward, then the rest), each compiled once, rather than reading the loss alone,
        which would compile and run the forward a second time.
        """
        self.execute_pending()
        return super().loss_is_finite(loss, agree)

    def no_sync(self) -> contextlib.AbstractContextManager[Any]:
        """Skip the gradient reduction of a micro-batch that is not the last of its window."""
        return self._no_sync

    def backward(self, loss: torch.Tensor) -> None:
        """Backward, then (several replicas, not inside ``no_sync``) average gradients across replicas."""
        self._backward(loss)
        if self._sync_grads and self.world_size > 1 and self.module is not None:
            import torch_xla.core.xla_model as xm

            grads = [p.grad for p in self.module.parameters() if p.grad is not None]
            if grads:
                xm.all_reduce(xm.REDUCE_SUM, grads, scale=1.0 / self.world_size)

    def _backward(self, loss: torch.Tensor) -> None:
        try:
            self.precision.backward(loss)
        except RuntimeError as err:
            if "device_ready_queues_" not in str(err):
                raise
            raise FitkitRuntimeError(
                "backward on the XLA device failed because this process ran a backward pass before torch_xla "
                "started: torch's autograd engine counts each kind of device once, at the first backward, and "
                "found no XLA device then. Start XLA first (train on accelerator='xla' before anything else in "
                "the process, or call torch_xla.device() at the top of the script)."
            ) from err

    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Callable[[], Any] | None = None) -> Any:
        """The optimizer step; no graph cut (the next batch makes it).

        One replica: ``xm.optimizer_step`` (its reduction is a no-op). Several: the
        gradients were averaged in :meth:`backward`, so a plain step, not a second reduction.
        """
        if self.world_size > 1:
            return self.precision.optimizer_step(optimizer, closure)
        import torch_xla.core.xla_model as xm

        return xm.optimizer_step(
            optimizer, barrier=False, optimizer_args={} if closure is None else {"closure": closure}
        )

    # -- random numbers ---------------------------------------------------------------------------------
    def rng_state(self) -> dict[str, Any]:
        """The XLA device seed the current batch started from (torch's generators miss it).

        torch_xla advances its per-device seed at every graph cut, and the number of cuts
        between two batches depends on what ran between them (a checkpoint save, a log
        flush). ``batch_to_device`` therefore sets the seed of each batch itself, with
        torch_xla's own recurrence applied once per batch; with one cut per batch, as in
        a plain torch_xla loop, that is the seed torch_xla would have used anyway. The
        state is this counter: no graph runs to read it.
        """
        if self._seed is None:
            return {}
        return {"xla": self._seed}

    def load_rng_state(self, state: dict[str, Any]) -> None:
        if "xla" in state:
            self._seed = int(state["xla"])
            if self._set_seed is not None:
                self._set_seed(self._seed, self._device_name)

    # -- checkpoints ----------------------------------------------------------------------------------
    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: str | os.PathLike[str]) -> None:
        """The master ordinal writes ``checkpoint`` with its tensors on the CPU; the others only sync.

        The tensors move to the CPU as ``xm.save`` moves them (one batched transfer), then
        fitkit's atomic write stores them (a temporary file, renamed; a failed write raises
        :class:`~fitkit.checkpoint.CheckpointWriteError`), so the file loads on any machine.
        """
        import torch_xla

        torch_xla.sync()  # the pending step runs as the usual graph, not as a subset of it
        if not self.is_global_zero:
            return
        from fitkit.checkpoint import atomic_save

        atomic_save(_to_cpu(checkpoint), filepath)

    def load_checkpoint(self, filepath: str | os.PathLike[str]) -> dict[str, Any]:
        """Read a checkpoint onto the CPU; ``load_state_dict`` copies it to the device."""
        from fitkit.checkpoint import load

        return load(filepath, map_location="cpu")

    # -- collectives (identity for one replica) ------------------------------------------------------
    def reduce(self, tensor: torch.Tensor, reduce_op: str = "mean") -> torch.Tensor:
        """``tensor`` reduced over every replica (``xm.all_reduce``)."""
        if reduce_op not in REDUCE_OPS:
            raise MisconfigurationError(invalid("reduce_op", reduce_op, "unknown reduction", f"one of {REDUCE_OPS}"))
        if not isinstance(tensor, torch.Tensor):
            tensor = torch.as_tensor(tensor, device=self.root_device)
        if self.world_size == 1:
            return tensor
        import torch_xla.core.xla_model as xm

        out = tensor.detach().to(self.root_device)
        if reduce_op == "mean" and not out.is_floating_point():
            out = out.float()
        kind = {"mean": xm.REDUCE_SUM, "sum": xm.REDUCE_SUM, "max": xm.REDUCE_MAX, "min": xm.REDUCE_MIN}
        scale = 1.0 / self.world_size if reduce_op == "mean" else 1.0
        return xm.all_reduce(kind[reduce_op], out, scale=scale)  # type: ignore[no-any-return]

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every replica's ``tensor``, stacked: ``[world_size, *shape]``."""
        if self.world_size == 1:
            return tensor.unsqueeze(0)
        import torch_xla.core.xla_model as xm

        return xm.all_gather(tensor.unsqueeze(0).to(self.root_device), dim=0)  # type: ignore[no-any-return]

    def barrier(self, name: str | None = None) -> None:
        """Wait until every replica gets here (``xm.rendezvous``)."""
        if self.world_size > 1:
            import torch_xla.core.xla_model as xm

            xm.rendezvous(name or "fitkit.barrier")

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """Replica ``src``'s picklable ``obj``, on every replica."""
        if self.world_size == 1:
            return obj
        import torch_xla.core.xla_model as xm

        payload = pickle.dumps(obj) if self.global_rank == src else b""
        return pickle.loads(xm.rendezvous("fitkit.broadcast", payload)[src])
