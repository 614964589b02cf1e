"""Spawning the processes with ``torch.multiprocessing`` (``strategy="ddp_spawn"``).

Each worker gets torchrun-style variables, runs the Trainer's stage and, on global
rank 0, sends back what the caller's process needs to look as if it had trained
itself: the stage's result, the weights, the progress counters, the metrics and the
callbacks' state (the best checkpoint's path, for example). Everything the stage
needs must pickle: the Trainer, the Module, the loaders (each worker gets its own
copy, as ``pickle`` makes it). If a worker raises, the others are ended and the
error surfaces in the calling process (``torch.multiprocessing``'s
``ProcessRaisedException``, carrying the worker's traceback once). If a worker dies
without raising (killed, ``os._exit``), the others are ended too and the caller gets a
:class:`~fitkit.utilities.exceptions.FitkitRuntimeError` naming its rank and how it ended.
"""

from __future__ import annotations

import inspect
import io
import os
import pickle
import time
from collections.abc import Callable
from typing import Any

import torch

from fitkit.strategies.launchers.errors import describe_exit, is_peer_failure
from fitkit.strategies.launchers.launcher import Launcher, rank_env, rendezvous_env
from fitkit.utilities.exceptions import FitkitRuntimeError

GRACE_S = 3.0
_ECHO_DELAY_S = 1.0  # how long a worker whose collective failed waits before exiting


class MultiprocessingLauncher(Launcher):
    """Spawns ``num_processes`` workers on this node and returns rank 0's result.

    Example::

        >>> launcher = MultiprocessingLauncher(num_processes=2)
        >>> # launcher.launch(trainer._run, ...)  # inside Trainer.fit
    """

    def __init__(self, num_processes: int, num_nodes: int = 1, start_method: str = "spawn") -> None:
        self.num_processes = num_processes
        self.num_nodes = num_nodes
        self.start_method = start_method

    def launch(self, function: Callable[..., Any], *args: Any, trainer: Any = None, **kwargs: Any) -> Any:
        if self.launched:
            return function(*args, **kwargs)
        import torch.multiprocessing as mp

        base = rendezvous_env(self.num_processes, self.num_nodes)
        queue = mp.get_context(self.start_method).SimpleQueue()
        # Plain pickle, not torch.multiprocessing's: that one would put the parameters in
        # shared memory, and every worker would then step the same weights.
        job = pickle.dumps((function, args, kwargs, trainer))
        try:
            context = mp.start_processes(
                _worker,
                args=(job, base, self.num_processes, queue),
                nprocs=self.num_processes,
                join=False,
                start_method=self.start_method,
            )
            # After one worker fails, the others get GRACE_S to stop by themselves (their
            # collective fails), then SIGTERM, then SIGKILL after GRACE_S more, instead of
            # torch's default 30 s: a worker stuck in C++ never runs its SIGTERM handler.
            # (torch < 2.4 has no grace period: it terminates the others at once.)
            grace = {"grace_period": GRACE_S} if "grace_period" in inspect.signature(context.join).parameters else {}
            while not context.join(**grace):
                pass
        except mp.ProcessExitedException as exc:  # a worker died without a Python error to show
            node_rank = int(base["NODE_RANK"])
            code = exc.exit_code  # negative: the signal that killed it
            raise FitkitRuntimeError(
                f"The ddp_spawn worker of global rank {node_rank * self.num_processes + exc.error_index} "
                f"(local rank {exc.error_index}) {describe_exit(code)}. The other workers were stopped."
            ) from None
        payload = queue.get() if not queue.empty() else None
        if payload is None:
            return None
        returned = torch.load(io.BytesIO(payload), weights_only=False)
        if trainer is not None:
            _restore_in_caller(trainer, returned)
        return returned["result"]


def _worker(local_rank: int, job: bytes, base: dict[str, str], num_processes: int, queue: Any) -> None:
    os.environ.update(rank_env(base, local_rank, num_processes))
    function, args, kwargs, trainer = pickle.loads(job)
    if trainer is not None:
        trainer.strategy.read_ranks_from_env()
    try:
        result = function(*args, **kwargs)
    except Exception as exc:
        if is_peer_failure(exc):
            # An echo of another worker's failure: let that worker exit first, so that the
            # caller's join reports its traceback (torch < 2.4 reports whichever exits first).
            time.sleep(_ECHO_DELAY_S)
        raise
    if int(os.environ["RANK"]) == 0:
        buffer = io.BytesIO()
        torch.save(_collect(trainer, result), buffer)
        queue.put(buffer.getvalue())


def _collect(trainer: Any, result: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"result": result}
    if trainer is None:
        return out
    to_cpu = _to_cpu
    out["state_dict"] = to_cpu(trainer.module.state_dict()) if trainer.module is not None else None
    out["progress"] = trainer.progress.state_dict()
    out["state"] = trainer.state
    out["metrics"] = {
        name: to_cpu(getattr(trainer._results, name))
        for name in ("callback_metrics", "logged_metrics", "progress_bar_metrics")
    }
    out["callbacks"] = {cb.state_key: to_cpu(cb.state_dict()) for cb in trainer.callbacks}
    return out


def _restore_in_caller(trainer: Any, returned: dict[str, Any]) -> None:
    if returned.get("state_dict") is not None and trainer.module is not None:
        trainer.module.load_state_dict(returned["state_dict"])
    if "progress" in returned:
        trainer.progress.load_state_dict(returned["progress"])
        trainer.state = returned["state"]
        for name, values in returned["metrics"].items():
            target = getattr(trainer._results, name)
            target.clear()
            target.update(values)
        states = returned["callbacks"]
        for cb in trainer.callbacks:
            if cb.state_key in states:
                cb.load_state_dict(states[cb.state_key])


def _to_cpu(obj: Any) -> Any:
    from fitkit.utilities.apply_func import move_data_to_device

    return move_data_to_device(obj, torch.device("cpu"))
