"""Starting one process per XLA device with ``torch_xla.launch`` (``XLAStrategy``, ``devices > 1``).

``torch_xla.launch`` (``xmp.spawn``) starts as many processes as the host has XLA
devices (torch_xla cannot start fewer: ``TPU_NUM_DEVICES`` limits what it sees). Each
gets the pickled Trainer and runs the stage; the master ordinal writes what the caller
needs (weights, progress, metrics, callback states) to a file that the caller reads
back, as ``strategy="ddp_spawn"`` returns its rank zero's. torch_xla's process pool
passes arguments through a pipe, which cannot carry a multiprocessing queue, hence
the file. ``torch_xla`` is imported only when a launch happens.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Callable
from typing import Any

import torch

from fitkit.strategies.launchers.launcher import Launcher


class XLALauncher(Launcher):
    """Starts one process per XLA device with ``torch_xla.launch`` and returns the master's result.

    The Trainer, module and loaders are pickled to each process. The master sends back
    what the calling process needs to look as if it had trained itself (weights,
    progress, metrics, callback states), as ``strategy="ddp_spawn"`` does.

    Example::

        >>> launcher = XLALauncher(num_processes=8)
        >>> # launcher.launch(trainer._run, ...)  # inside Trainer.fit
    """

    def __init__(self, num_processes: int, start_method: str = "spawn") -> None:
        self.num_processes = num_processes
        self.start_method = start_method
        self.in_worker = False

    @property
    def launched(self) -> bool:
        return self.in_worker

    def launch(self, function: Callable[..., Any], *args: Any, trainer: Any = None, **kwargs: Any) -> Any:
        if self.in_worker:
            return function(*args, **kwargs)
        import torch_xla

        job = pickle.dumps((function, args, kwargs, trainer))
        with tempfile.TemporaryDirectory(prefix="fitkit-xla-") as folder:
            result_path = os.path.join(folder, "master.pt")
            torch_xla.launch(_xla_worker, args=(job, result_path), start_method=self.start_method)
            if not os.path.exists(result_path):
                return None
            returned = torch.load(result_path, weights_only=False)
        from fitkit.strategies.launchers.multiprocessing import _restore_in_caller

        if trainer is not None:
            _restore_in_caller(trainer, returned)
        return returned["result"]


def _xla_worker(ordinal: int, job: bytes, result_path: str) -> None:
    function, args, kwargs, trainer = pickle.loads(job)
    os.environ["RANK"] = str(ordinal)  # for fitkit's rank-zero print and warn helpers
    if trainer is not None and getattr(trainer.strategy, "launcher", None) is not None:
        trainer.strategy.launcher.in_worker = True
    result = function(*args, **kwargs)
    if ordinal == 0:
        from fitkit.strategies.launchers.multiprocessing import _collect

        torch.save(_collect(trainer, result), result_path)
