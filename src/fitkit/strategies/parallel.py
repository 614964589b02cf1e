"""The base class of strategies that train in several processes, one device each.

:class:`ParallelStrategy` owns what every multi-process strategy shares: reading
this process's ranks from the torchrun-style environment variables, starting and
ending the default ``torch.distributed`` process group, the collectives the Trainer
and callbacks call (``reduce``, ``all_gather``, ``barrier``, ``broadcast``), and the
``launcher`` that starts the other processes when the script was run as plain
``python train.py``. How the module is wrapped (DDP, FSDP) is the subclass's business.

The distributed sampler is inserted by the Trainer (``fitkit.trainer.data.distribute``)
for any strategy whose ``world_size`` is above one, so subclasses get it for free.
``torch.distributed`` is imported only when a method needs it, so that
``import fitkit`` stays as cheap as before.
"""

from __future__ import annotations

import datetime
import os
from typing import TYPE_CHECKING, Any

import torch

from fitkit.accelerators.accelerator import Accelerator
from fitkit.precision.precision import Precision
from fitkit.strategies.strategy import Strategy
from fitkit.utilities.exceptions import FitkitRuntimeError, MisconfigurationError, invalid

if TYPE_CHECKING:
    from fitkit.strategies.launchers.launcher import Launcher

DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)
REDUCE_OPS = ("mean", "sum", "max", "min")
# The variables torchrun sets for each process; fitkit's own launchers set the same.
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun_style_env() -> bool:
    """Whether this process was started with its ranks in the environment (torchrun or fitkit)."""
    return all(v in os.environ for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


class ParallelStrategy(Strategy):
    """Several processes, one device each, joined by one ``torch.distributed`` process group.

    Args:
        accelerator: the device kind; ``select_strategy`` fills it in when None.
        precision: the number format; ``select_strategy`` fills it in.
        parallel_devices: this node's devices, one per process (``devices[local_rank]``
            is this process's); None asks the accelerator.
        num_nodes: machines taking part.
        process_group_backend: ``"gloo"``, ``"nccl"``...; None picks ``nccl`` for
            CUDA devices and ``gloo`` otherwise.
        timeout: how long a collective waits for the other processes before failing.

    Example::

        >>> s = ParallelStrategy(parallel_devices=[torch.device("cpu")] * 2)
        >>> s.world_size, s.global_rank  # before launch: the planned size, this is rank 0
        (2, 0)
    """

    name = "parallel"
    #: how :meth:`configure_launcher` starts processes: ``"popen"`` re-runs the script,
    #: ``"spawn"``/``"fork"``/``"forkserver"`` use ``torch.multiprocessing``.
    start_method = "popen"

    def __init__(
        self,
        accelerator: Accelerator | None = None,
        precision: Precision | None = None,
        *,
        parallel_devices: list[torch.device] | None = None,
        num_nodes: int = 1,
        process_group_backend: str | None = None,
        timeout: datetime.timedelta = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(accelerator, precision)
        if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 1:
            raise MisconfigurationError(invalid("num_nodes", num_nodes, "it counts machines", "an int >= 1"))
        if not isinstance(timeout, datetime.timedelta):
            raise MisconfigurationError(invalid("timeout", timeout, "it must be a duration", "a datetime.timedelta"))
        self.parallel_devices = parallel_devices
        self.num_nodes = num_nodes
        self.process_group_backend = process_group_backend
        self.timeout = timeout
        self.launcher: Launcher | None = None
        self._owns_process_group = False
        self._failed = False  # the run raised: peers may be stuck in a collective, so no barrier
        self._global_rank = 0
        self._local_rank = 0
        self._node_rank = 0
        self._world_size: int | None = None  # None: the planned num_nodes * num_processes
        self.read_ranks_from_env()
        self.configure_launcher()

    def configure_launcher(self) -> None:
        """Pick the launcher for the planned processes; none when the ranks are already in the environment.

        ``select_strategy`` calls it again after filling in the devices and nodes.
        """
        if launched_by_torchrun_style_env() or self.world_size == 1:
            self.launcher = None
        elif self.start_method == "popen":
            from fitkit.strategies.launchers.subprocess_script import SubprocessScriptLauncher

            self.launcher = SubprocessScriptLauncher(self.num_processes, self.num_nodes)
        else:
            from fitkit.strategies.launchers.multiprocessing import MultiprocessingLauncher

            self.launcher = MultiprocessingLauncher(self.num_processes, self.num_nodes, self.start_method)

    # -- ranks -----------------------------------------------------------------------------
    def read_ranks_from_env(self) -> None:
        """Take this process's ranks from ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``/``GROUP_RANK``.

        Called on construction and again by launchers in each process they start.
        Without those variables this is the launching process: rank 0 of the planned size.
        """
        env = os.environ
        if not launched_by_torchrun_style_env():
            self._global_rank = self._local_rank = self._node_rank = 0
            self._world_size = None
            return
        self._global_rank = int(env["RANK"])
        self._local_rank = int(env["LOCAL_RANK"])
        self._world_size = int(env["WORLD_SIZE"])
        self._node_rank = int(env.get("GROUP_RANK", env.get("NODE_RANK", "0")))

    @property
    def num_processes(self) -> int:
        """Processes on each node (one per device)."""
        return len(self.parallel_devices) if self.parallel_devices is not None else 1

    @property
    def world_size(self) -> int:
        return self._world_size if self._world_size is not None else self.num_nodes * self.num_processes

    @property
    def global_rank(self) -> int:
        return self._global_rank

    @property
    def local_rank(self) -> int:
        return self._local_rank

    @property
    def node_rank(self) -> int:
        return self._node_rank

    @property
    def root_device(self) -> torch.device:
        if self.parallel_devices is not None:
            return self.parallel_devices[self._local_rank % len(self.parallel_devices)]
        if self.accelerator is not None:
            return self.accelerator.get_device(self._local_rank)
        return torch.device("cpu")

    @property
    def distributed_ready(self) -> bool:
        """Whether the default process group exists (collectives would work)."""
        import torch.distributed as dist

        return dist.is_available() and dist.is_initialized()

    # -- set-up and tear-down --------------------------------------------------------------
    def _backend(self) -> str:
        if self.process_group_backend is not None:
            return self.process_group_backend
        return "nccl" if self.root_device.type == "cuda" else "gloo"

    def setup_environment(self) -> None:
        """Join (or create) the default process group, then claim this process's device."""
        self._failed = False
        self.read_ranks_from_env()
        if self.world_size > 1:
            self._init_process_group()
        super().setup_environment()

    def _init_process_group(self) -> None:
        import torch.distributed as dist

        if not dist.is_available():
            raise FitkitRuntimeError("torch.distributed is not available in this PyTorch build.")
        if dist.is_initialized():
            return  # the user (or an earlier fit) made it: use it, and leave it to them
        missing = [v for v in ENV_VARS if v not in os.environ]
        if missing:
            raise FitkitRuntimeError(
                f"{type(self).__name__} needs {', '.join(missing)} in the environment to join "
                f"{self.world_size} processes. Run the script with `torchrun`, or as `python script.py` "
                "with the Trainer's `devices`/`num_nodes` so fitkit starts the processes itself."
            )
        if self.world_size != self.num_nodes * self.num_processes:
            # Every rank checks before joining, so each one stops here at once instead of
            # waiting (up to `timeout`) for ranks that will never come.
            raise MisconfigurationError(
                invalid(
                    "devices",
                    self.num_processes,
                    f"on rank {self._global_rank}, devices={self.num_processes} x num_nodes={self.num_nodes} "
                    f"makes {self.num_nodes * self.num_processes} processes, but the environment says "
                    f"WORLD_SIZE={self.world_size} (torchrun's --nproc_per_node x --nnodes, or an exported variable)",
                    "devices * num_nodes equal to WORLD_SIZE: match `devices` to torchrun's --nproc_per_node "
                    "(or use devices='auto'), or unset a stale WORLD_SIZE",
                )
            )
        # init_process_group with clear errors (port taken, a rank that never came) and a
        # watchdog, so that no rank waits past `timeout` even where c10d itself would.
        from fitkit.strategies.launchers.rendezvous import join_process_group

        join_process_group(self._backend(), rank=self._global_rank, world_size=self.world_size, timeout=self.timeout)
        self._owns_process_group = True

    def on_exception(self, exception: BaseException) -> None:
        self._failed = True
        if self.distributed_ready and hasattr(exception, "add_note"):
            from fitkit.strategies.launchers.errors import is_peer_failure, peer_failure_note

            if is_peer_failure(exception):  # say, in this rank's traceback, that it is not the root cause
                exception.add_note(peer_failure_note(self._global_rank, self.world_size))

    def teardown(self) -> None:
        """Destroy the process group if this strategy created it, then release the device."""
        if self._owns_process_group:
            import torch.distributed as dist

            if dist.is_initialized():
                if not self._failed:
                    _quiesce(dist)
                dist.destroy_process_group()
            self._owns_process_group = False
        super().teardown()

    # -- collectives -------------------------------------------------------------------------
    def reduce(self, tensor: torch.Tensor, reduce_op: str = "mean") -> torch.Tensor:
        """``tensor`` reduced over every process (a new tensor; floats for ``"mean"``)."""
        if reduce_op not in REDUCE_OPS:
            raise MisconfigurationError(invalid("reduce_op", reduce_op, "unknown reduction", f"one of {REDUCE_OPS}"))
        if not isinstance(tensor, torch.Tensor):
            tensor = torch.as_tensor(tensor, device=self.root_device)
        if not self.distributed_ready:
            return tensor
        import torch.distributed as dist

        out = tensor.detach().clone()
        if reduce_op == "mean" and not out.is_floating_point():
            out = out.float()
        op = {"mean": dist.ReduceOp.SUM, "sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
        dist.all_reduce(out, op=op[reduce_op])
        if reduce_op == "mean":
            out = out / self.world_size
        return out

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every process's ``tensor`` (same shape everywhere), stacked: ``[world_size, *shape]``."""
        if not self.distributed_ready:
            return tensor.unsqueeze(0)
        import torch.distributed as dist

        tensor = tensor.contiguous()
        gathered = [torch.empty_like(tensor) for _ in range(self.world_size)]
        dist.all_gather(gathered, tensor)
        return torch.stack(gathered)

    def all_gather_object(self, obj: Any) -> list[Any]:
        """Every process's picklable ``obj``, in rank order."""
        if not self.distributed_ready:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        # Object collectives build and fill tensors in place; under the evaluation loop's
        # inference mode torch 2.3 refuses that, so they run outside it.
        with torch.inference_mode(False):
            dist.all_gather_object(out, obj)
        return out

    def barrier(self, name: str | None = None) -> None:
        """Wait until every process gets here."""
        if self.distributed_ready:
            import torch.distributed as dist

            dist.barrier()

    def broadcast(self, obj: Any, src: int = 0) -> Any:
        """Process ``src``'s ``obj`` (any picklable object), returned on every process."""
        if not self.distributed_ready:
            return obj
        import torch.distributed as dist

        box = [obj]
        with torch.inference_mode(False):  # see all_gather_object
            dist.broadcast_object_list(box, src=src)
        return box[0]


def _quiesce(dist: Any) -> None:
    """Let the backend's worker threads finish with every collective before the group goes.

    Destroying a gloo group joins its worker threads while holding the GIL; a worker
    still freeing a finished collective's tensors needs the GIL to do so, and on torch
    2.3 that deadlocks (seen here: rank 1 hung in ``~ProcessGroupGloo``). A barrier
    completes every earlier collective, ``gc.collect`` drops what Python still holds,
    and a short sleep gives the workers the GIL to free the rest.
    """
    import gc
    import time

    try:
        dist.barrier()
    except Exception:  # a peer already gone: nothing left to wait for
        return
    gc.collect()
    time.sleep(0.05)
