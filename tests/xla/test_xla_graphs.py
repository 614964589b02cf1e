"""The XLA performance contract, read from ``torch_xla.debug.metrics``.

- compilations stop after the first epoch (a new graph every step is the classic
  XLA performance bug; a module that causes it is shown to be caught);
- one graph execution per batch (accumulation and clipping add no cut);
- logged values reach the host every ``log_every_n_steps`` and at epoch end, not per step.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _xla_helpers import Regressor, loader, trainer

pytestmark = pytest.mark.xla
pytest.importorskip("torch_xla")

import torch_xla.debug.metrics as met  # noqa: E402

import fitkit as fk  # noqa: E402
from fitkit.loggers import CSVLogger  # noqa: E402


def _counter(name: str) -> int:
    return int(met.counter_value(name) or 0)


def _host_reads() -> int:
    data = met.metric_data("TransferFromDeviceTime")
    return int(data[0]) if data else 0


class Meter(fk.Callback):
    """Counter readings at each training epoch's end (host-side reads: no sync, no graph)."""

    def __init__(self) -> None:
        self.compiles: list[int] = []
        self.executions: list[int] = []

    def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
        self.compiles.append(_counter("UncachedCompile"))
        self.executions.append(_counter("ExecuteComputation"))


def _fit(model: fk.Module, epochs: int = 4, samples: int = 32, **kwargs: Any) -> Meter:
    meter = Meter()
    kwargs.setdefault("accumulate_grad_batches", 2)
    kwargs.setdefault("gradient_clip_val", 1.0)
    trainer(max_epochs=epochs, log_every_n_steps=4, callbacks=[meter], **kwargs).fit(
        model, loader(samples), loader(8, seed=1)
    )
    return meter


def test_compilations_stop_growing_and_one_graph_runs_per_batch() -> None:
    meter = _fit(Regressor())
    new_per_epoch = [b - a for a, b in zip(meter.compiles, meter.compiles[1:], strict=False)]
    assert new_per_epoch == [0, 0, 0], meter.compiles  # every graph compiled in epoch 1 (5 of them here)
    runs_per_epoch = [b - a for a, b in zip(meter.executions, meter.executions[1:], strict=False)]
    # One graph per batch (8 training, 2 validation), one or two at the epoch end, and at
    # most one small one per log step (2 here: the deferred non-finite check's read of the
    # losses, Trainer(nonfinite_loss="raise")). A cut per step would add 8.
    assert all(n <= 8 + 2 + 2 + 2 for n in runs_per_epoch), runs_per_epoch


class NewGraphEveryStep(Regressor):
    """The bug the test above must catch: a shape that changes every step recompiles every step."""

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        return loss + torch.zeros(self.global_step + 1, device=loss.device).sum()


def test_a_graph_that_changes_every_step_is_caught() -> None:
    meter = _fit(NewGraphEveryStep(), epochs=2, samples=12, accumulate_grad_batches=1)
    growth = meter.compiles[-1] - meter.compiles[-2]
    assert growth >= 3  # one compilation per step of the second epoch: the check above would fail


def test_logged_values_reach_the_host_only_at_log_steps(tmp_path: Any) -> None:
    model = Regressor()
    t = trainer(max_epochs=1, log_every_n_steps=8, logger=CSVLogger(tmp_path, name=""))
    before = _host_reads()
    t.fit(model, loader(128, batch_size=4))  # 32 steps, each logging train_loss
    reads = _host_reads() - before
    # At most two reads per log step (the logged values, and the deferred non-finite check's
    # losses) and one at the epoch end: 9 of 32. log_every_n_steps=1 gives 32 and more.
    assert reads <= 2 * (32 // 8) + 1, reads
    rows = (tmp_path / "version_0" / "metrics.csv").read_text().splitlines()
    assert len([r for r in rows[1:] if r.split(",")[0]]) >= 4  # the step values did reach the logger
