"""``TensorBoardLogger``: scalars, hyperparameters (the HPARAMS tab) and the model graph,
written with ``torch.utils.tensorboard.SummaryWriter``.

``tensorboard`` is imported the first time the logger writes, so ``import fitkit``
stays cheap. Scalars are held in a short in-memory queue and handed to the writer
in batches (at every epoch end, every :data:`PENDING_SECONDS` seconds or
:data:`PENDING_LIMIT` values, and at the end of the run): each hand-over wakes the
writer's background thread, and on a busy CPU those wake-ups cost more than the
writing itself (measured in ``docs/benchmarks.md``). Each scalar keeps the wall
time of its ``log_metrics`` call. Everything else TensorBoard shows (images, histograms, text,
embeddings) goes through :attr:`TensorBoardLogger.experiment`, the ``SummaryWriter``.
"""

from __future__ import annotations

import numbers
import os
import time
import warnings
from collections.abc import Mapping
from typing import Any

import torch

from fitkit.loggers._common import DummyExperiment, FileLogger, is_rank_zero, sanitize_params
from fitkit.utilities.exceptions import FitkitTypeError, invalid
from fitkit.utilities.rank_zero import rank_zero_warn

# Hand queued scalars to the SummaryWriter once this many are waiting, or once the
# oldest has waited this long (checked when the next one arrives).
PENDING_LIMIT = 512
PENDING_SECONDS = 5.0


class TensorBoardLogger(FileLogger):
    """Log to TensorBoard event files in ``<save_dir>/<name>/version_N[/<sub_dir>]``.

    Args:
        save_dir: the root folder (``tensorboard --logdir <save_dir>`` shows every run).
        name: the experiment's folder under ``save_dir``; ``""`` for none.
        version: an int (folder ``version_N``), a str (the folder's name), or ``None``
            for the next free ``version_N``.
        log_graph: record the model graph at fit start, traced with the module's
            ``example_input_array``.
        default_hp_metric: when hyperparameters are logged without metrics, log
            ``hp_metric = -1`` beside them; log ``"hp_metric"`` yourself to fill it in.
        prefix: put in front of every metric name, joined with ``-``.
        sub_dir: a folder inside the version folder to write into.
        **summary_writer_kwargs: passed to ``SummaryWriter`` (``flush_secs``,
            ``max_queue``, ``filename_suffix``, ...).

    Example::

        >>> import fitkit
        >>> from fitkit.loggers import TensorBoardLogger
        >>> logger = TensorBoardLogger("runs", name="mnist")
        >>> trainer = fitkit.Trainer(max_epochs=3, logger=logger)
        >>> # trainer.fit(model, train_loader, val_loader); then: tensorboard --logdir runs
    """

    def __init__(
        self,
        save_dir: str | os.PathLike[str],
        name: str | None = "fitkit_logs",
        version: int | str | None = None,
        log_graph: bool = False,
        default_hp_metric: bool = True,
        prefix: str = "",
        sub_dir: str | os.PathLike[str] | None = None,
        **summary_writer_kwargs: Any,
    ) -> None:
        super().__init__(save_dir, name, version, prefix)
        if "log_dir" in summary_writer_kwargs or "logdir" in summary_writer_kwargs:
            raise FitkitTypeError(
                invalid(
                    "log_dir",
                    summary_writer_kwargs.get("log_dir", summary_writer_kwargs.get("logdir")),
                    "the logger chooses the folder",
                    "save_dir, name, version and sub_dir",
                )
            )
        self._log_graph = bool(log_graph)
        self._default_hp_metric = bool(default_hp_metric)
        self._sub_dir = None if sub_dir is None else os.fspath(sub_dir)
        self._writer_kwargs = summary_writer_kwargs
        self._experiment: Any = None
        self._pending: list[tuple[str, float, int | None, float]] = []  # tag, value, step, wall time
        self._pending_since = 0.0

    @property
    def log_dir(self) -> str:
        """``<save_dir>/<name>/<version>``, plus ``sub_dir`` when given."""
        base = super().log_dir
        return os.path.join(base, self._sub_dir) if self._sub_dir else base

    @property
    def sub_dir(self) -> str | None:
        return self._sub_dir

    @property
    def experiment(self) -> Any:
        """The ``SummaryWriter`` (created on first use); a do-nothing stand-in on ranks other than zero.

        Example::

            logger.experiment.add_histogram("weights", model.layer.weight, global_step=10)
            logger.experiment.add_image("input", batch[0][0], global_step=10)
        """
        if self._experiment is not None:
            return self._experiment
        if not is_rank_zero():
            return DummyExperiment()
        from torch.utils.tensorboard import SummaryWriter

        self._experiment = SummaryWriter(log_dir=self.log_dir, **self._writer_kwargs)
        return self._experiment

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Queue each value as a scalar at ``step`` (a dict value becomes ``add_scalars``, written at once)."""
        if not is_rank_zero():
            return
        if self._experiment is None:
            self.experiment  # claims the version folder now, as an immediate write would  # noqa: B018
        now = time.time()
        for key, value in self._with_prefix(metrics).items():
            if isinstance(value, torch.Tensor):
                value = value.item()
            if isinstance(value, Mapping):
                self._write_pending()
                self.experiment.add_scalars(key, value, step, now)
                continue
            if not isinstance(value, numbers.Real):
                raise FitkitTypeError(
                    invalid(f"metrics[{key!r}]", value, "TensorBoard cannot write it as a scalar", "a number")
                )
            number = float(value)
            if not self._pending:
                self._pending_since = time.monotonic()
            self._pending.append((key, number, step, now))
        if self._pending and (
            len(self._pending) >= PENDING_LIMIT or time.monotonic() - self._pending_since >= PENDING_SECONDS
        ):
            self._write_pending()

    def _write_pending(self) -> None:
        """Hand the queued scalars to the SummaryWriter (its thread writes them to the file)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        writer = self.experiment
        for key, number, step, wall_time in pending:
            writer.add_scalar(key, number, step, wall_time)

    def log_hyperparams(self, params: Any, metrics: Mapping[str, float] | float | None = None) -> None:
        """Write ``params`` (flattened, non-scalars as ``str``) for the HPARAMS tab, with ``metrics`` beside them.

        Without ``metrics`` and with ``default_hp_metric=True``, ``hp_metric = -1`` is
        logged; log ``"hp_metric"`` from your module to give it a real value.
        """
        if not is_rank_zero():
            return
        from torch.utils.tensorboard.summary import hparams

        flat = sanitize_params(params)
        if metrics is None:
            metrics = {"hp_metric": -1} if self._default_hp_metric else {}
        elif not isinstance(metrics, Mapping):
            metrics = {"hp_metric": metrics}
        if not flat and not metrics:
            return
        if metrics:
            self.log_metrics(metrics, 0)
        exp, ssi, sei = hparams(flat, dict(self._with_prefix(metrics)))
        writer = self.experiment._get_file_writer()
        for summary in (exp, ssi, sei):
            writer.add_summary(summary)

    def log_graph(self, model: torch.nn.Module, input_array: Any = None) -> None:
        """Trace ``model`` on ``input_array`` (default: ``model.example_input_array``) and write its graph.

        Does nothing unless the logger was built with ``log_graph=True``. Tracing runs
        in eval mode without gradients and restores every submodule's mode, the
        buffers and the RNG state, so training goes on exactly as without it.
        """
        if not self._log_graph or not is_rank_zero():
            return
        if input_array is None:
            input_array = getattr(model, "example_input_array", None)
        if input_array is None:
            rank_zero_warn(
                "TensorBoardLogger(log_graph=True) found no input to trace the graph with: set "
                "`self.example_input_array` in your module (a tensor or a tuple of tensors)."
            )
            return
        modes = [(m, m.training) for m in model.modules()]
        buffers = [(b, b.detach().clone()) for b in model.buffers()]
        cuda = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
        try:
            with warnings.catch_warnings(), torch.random.fork_rng(devices=cuda), torch.no_grad():
                # add_graph traces with torch.jit.trace, which warns that it is deprecated.
                warnings.filterwarnings("ignore", r".*torch\.jit\.trace", FutureWarning)
                self.experiment.add_graph(model, input_array)
        finally:
            for m, training in modes:
                m.training = training
            with torch.no_grad():
                for b, saved in buffers:
                    b.copy_(saved)

    def save(self) -> None:
        """Write the queued scalars and flush every event to disk."""
        if not is_rank_zero():
            return
        self._write_pending()
        if self._experiment is not None:
            self._experiment.flush()

    def finalize(self, status: str) -> None:
        """Write the queued scalars, flush and close the event file (a later write opens a new one)."""
        if not is_rank_zero():
            return
        self._write_pending()
        if self._experiment is not None:
            self._experiment.flush()
            self._experiment.close()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_experiment"] = None  # a SummaryWriter holds a thread and a file: not picklable
        return state
