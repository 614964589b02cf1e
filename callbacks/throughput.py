"""ThroughputMonitor: samples per second and time per optimizer step, sent to the loggers.

Usage::

    # copy this file next to your script (or put the gallery folder on sys.path)
    import fitkit
    from throughput import ThroughputMonitor

    monitor = ThroughputMonitor(log_every_n_steps=50)
    trainer = fitkit.Trainer(max_epochs=5, callbacks=[monitor])
    trainer.fit(model, train_loader)
    print(monitor.metrics)   # the latest window, e.g. {"throughput/samples_per_sec": 51234.5, ...}

Every ``log_every_n_steps`` optimizer steps it sends, at ``trainer.global_step``, to
every logger in ``trainer.loggers``:

* ``throughput/samples_per_sec`` and ``throughput/batches_per_sec`` over the window;
* ``throughput/step_time_ms``: mean wall time of one optimizer step in the window
  (``accumulate_grad_batches`` batches each);
* ``throughput/total_samples``: samples trained on since ``fit`` started.

It costs a few attribute updates per batch and never synchronizes with the device:
time comes from ``time.perf_counter`` and sample counts from tensor shapes. On an
accelerator the host runs ahead of the device by a bounded queue, so over a window of
tens of steps the rate is the device's; make the window longer for steadier numbers.
Validation that runs inside the window is not counted as training time.

Samples per batch: ``batch_size_fn(batch)`` if given, else the length of the first
tensor found in the batch (a tensor, or a list/tuple/dict of them).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

import fitkit


def first_tensor_len(batch: Any) -> int:
    """The size of the first dimension of the first tensor in ``batch`` (1 if there is none)."""
    if isinstance(batch, torch.Tensor):
        return batch.shape[0] if batch.dim() else 1
    if isinstance(batch, Mapping):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)):
        for item in batch:
            if isinstance(item, (torch.Tensor, list, tuple, Mapping)):
                return first_tensor_len(item)
    return 1


class ThroughputMonitor(fitkit.Callback):
    """Log training throughput (samples/s, batches/s) and step time every ``log_every_n_steps`` steps.

    Args:
        batch_size_fn: ``batch -> number of samples``; by default the first tensor's length.
        log_every_n_steps: optimizer steps per measurement window.

    Example::

        >>> monitor = ThroughputMonitor(batch_size_fn=lambda batch: batch["input_ids"].shape[0])
        >>> trainer = fitkit.Trainer(max_epochs=1, callbacks=[monitor], logger=False)
    """

    def __init__(self, batch_size_fn: Callable[[Any], int] | None = None, log_every_n_steps: int = 50) -> None:
        if isinstance(log_every_n_steps, bool) or not isinstance(log_every_n_steps, int) or log_every_n_steps < 1:
            raise fitkit.MisconfigurationError(
                f"`log_every_n_steps={log_every_n_steps!r}` is not valid: it counts optimizer steps. "
                "Expected an int >= 1."
            )
        self.batch_size_fn = batch_size_fn or first_tensor_len
        self.log_every_n_steps = log_every_n_steps
        self.metrics: dict[str, float] = {}  # the latest window's values
        self.total_samples = 0
        self._window_samples = 0
        self._window_batches = 0
        self._window_steps = 0
        self._window_start = 0.0
        self._last_step = -1
        self._paused_at: float | None = None

    def _reset_window(self, now: float) -> None:
        self._window_samples = self._window_batches = self._window_steps = 0
        self._window_start = now

    def on_train_start(self, trainer: fitkit.Trainer, module: fitkit.Module) -> None:
        self.total_samples = 0
        self._last_step = trainer.global_step
        self._reset_window(time.perf_counter())

    def on_train_batch_end(
        self, trainer: fitkit.Trainer, module: fitkit.Module, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        self._window_samples += self.batch_size_fn(batch)
        self._window_batches += 1
        step = trainer.global_step
        if step == self._last_step:  # accumulating: no optimizer step in this batch
            return
        self._window_steps += step - self._last_step
        self._last_step = step
        if step % self.log_every_n_steps == 0:
            self._log(trainer, time.perf_counter())

    def _log(self, trainer: fitkit.Trainer, now: float) -> None:
        elapsed = max(now - self._window_start, 1e-9)
        self.total_samples += self._window_samples
        self.metrics = {
            "throughput/samples_per_sec": self._window_samples / elapsed,
            "throughput/batches_per_sec": self._window_batches / elapsed,
            "throughput/step_time_ms": 1000.0 * elapsed / max(self._window_steps, 1),
            "throughput/total_samples": float(self.total_samples),
        }
        for logger in trainer.loggers:
            logger.log_metrics(self.metrics, step=trainer.global_step)
        self._reset_window(now)

    # Validation inside a window is not training time: stop the clock while it runs.
    def on_validation_start(self, trainer: fitkit.Trainer, module: fitkit.Module) -> None:
        if trainer.state.fn == "fit":
            self._paused_at = time.perf_counter()

    def on_validation_end(self, trainer: fitkit.Trainer, module: fitkit.Module) -> None:
        if self._paused_at is not None:
            self._window_start += time.perf_counter() - self._paused_at
            self._paused_at = None
