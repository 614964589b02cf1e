"""callbacks/throughput.py: keys, values against a driven clock, and what counts as a step."""

from __future__ import annotations

import types
from typing import Any

import pytest
import torch
from _gallery_helpers import Model, RecordingLogger, load, loader, trainer

import fitkit as fk

throughput = load("throughput")
ThroughputMonitor = throughput.ThroughputMonitor
KEYS = {
    "throughput/samples_per_sec",
    "throughput/batches_per_sec",
    "throughput/step_time_ms",
    "throughput/total_samples",
}


def test_logs_positive_values_every_n_steps() -> None:
    logger = RecordingLogger()
    trainer(callbacks=[ThroughputMonitor(log_every_n_steps=2)], logger=logger).fit(Model(), loader(8, batch_size=4))
    records = logger.with_key("throughput/samples_per_sec")
    assert [step for step, _ in records] == [2, 4, 6, 8]
    for _, m in records:
        assert set(m) == KEYS
        assert all(v > 0 for v in m.values())
        assert m["throughput/samples_per_sec"] == pytest.approx(4 * m["throughput/batches_per_sec"])
    assert records[-1][1]["throughput/total_samples"] == 32


class Clocked(Model):
    """Advances the monitor's clock: 1 s per training batch, 100 s per validation batch."""

    def __init__(self, clock: list[float]) -> None:
        super().__init__()
        self.clock = clock

    def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        self.clock[0] += 1.0
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        self.clock[0] += 100.0
        return super().validation_step(batch, batch_idx)


def test_values_with_a_driven_clock_and_validation_excluded(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(throughput, "time", types.SimpleNamespace(perf_counter=lambda: clock[0]))
    logger, monitor = RecordingLogger(), ThroughputMonitor(log_every_n_steps=4)
    # validation after every 3rd batch falls inside the windows; its 100 s must not count
    t = trainer(callbacks=[monitor], logger=logger, val_check_interval=3, accumulate_grad_batches=2)
    t.fit(Clocked(clock), loader(16, batch_size=5), loader(1))
    records = [m for _, m in logger.with_key("throughput/step_time_ms")]
    assert len(records) == 2  # 8 optimizer steps, a window of 4
    for m in records:
        assert m["throughput/step_time_ms"] == pytest.approx(2000.0)  # two 1 s batches per step
        assert m["throughput/batches_per_sec"] == pytest.approx(1.0)
        assert m["throughput/samples_per_sec"] == pytest.approx(5.0)
    assert monitor.metrics == records[-1] and monitor.metrics["throughput/total_samples"] == 80


def test_batch_size_fn_and_default_inference() -> None:
    logger = RecordingLogger()
    monitor = ThroughputMonitor(batch_size_fn=lambda batch: 10, log_every_n_steps=3)
    trainer(callbacks=[monitor], logger=logger).fit(Model(), loader(3))
    assert monitor.metrics["throughput/total_samples"] == 30

    first_len = throughput.first_tensor_len
    assert first_len(torch.zeros(7, 2)) == 7
    assert first_len((torch.zeros(3), torch.zeros(9))) == 3
    assert first_len({"x": [torch.zeros(6, 1)], "y": 1}) == 6
    assert first_len("text") == 1


def test_no_logger_still_measures() -> None:
    monitor = ThroughputMonitor(log_every_n_steps=2)
    trainer(callbacks=[monitor]).fit(Model(), loader(4))
    assert set(monitor.metrics) == KEYS


def test_bad_log_every_n_steps() -> None:
    with pytest.raises(fk.MisconfigurationError, match="`log_every_n_steps=0`"):
        ThroughputMonitor(log_every_n_steps=0)
