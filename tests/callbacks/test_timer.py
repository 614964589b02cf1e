"""Timer: duration parsing, stopping by step and by epoch (with a fake clock), time per
stage, and the elapsed time a checkpoint carries into a resumed run."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from _train_cb_helpers import Model, SaveAtEpochEnd, loader, trainer

import fitkit as fk
from fitkit.callbacks import Timer
from fitkit.callbacks import timer as timer_module
from fitkit.checkpoint import check_plain


class FakeTime:
    """Stands in for the ``time`` module in fitkit.callbacks.timer; tests move it by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    monkeypatch.setattr(timer_module, "time", fake)
    return fake


class Ticking(Model):
    """Each training step takes one (fake) second, each validation or test step half a second."""

    def __init__(self, clock: FakeTime) -> None:
        super().__init__()
        self.clock = clock

    def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        self.clock.now += 1.0
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        self.clock.now += 0.5
        return super().validation_step(batch, batch_idx)

    def test_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        self.clock.now += 0.5
        return super().test_step(batch, batch_idx)


@pytest.mark.parametrize(
    ("duration", "seconds"),
    [
        ("00:00:00:01", 1.0),
        (" 01:02:03:04 ", 93784.0),
        (timedelta(minutes=2), 120.0),
        ({"hours": 1, "minutes": 30}, 5400.0),
        (None, None),
    ],
)
def test_duration_forms(duration: Any, seconds: float | None) -> None:
    assert Timer(duration).duration == seconds


def test_single_digit_fields_are_accepted_as_in_max_time() -> None:
    assert Timer("00:00:00:1").duration == 1.0


@pytest.mark.parametrize("duration", ["1:00:00", {"hourz": 1}, timedelta(seconds=-1)])
def test_bad_durations(duration: Any) -> None:
    with pytest.raises(fk.MisconfigurationError, match="duration"):
        Timer(duration)


def test_bad_duration_type_and_interval() -> None:
    with pytest.raises(fk.FitkitTypeError, match="duration"):
        Timer(5)
    with pytest.raises(fk.MisconfigurationError, match="interval"):
        Timer("00:00:00:01", interval="batch")


def test_stops_after_the_step_that_spends_the_budget(clock: FakeTime, capsys: pytest.CaptureFixture[str]) -> None:
    timer = Timer({"seconds": 2.5}, interval="step")
    t = trainer(max_epochs=10, callbacks=[timer])
    t.fit(Ticking(clock), loader(4))
    assert t.global_step == 3 and t.current_epoch == 1
    assert timer.time_elapsed("train") == 3.0
    assert timer.time_remaining("train") == -0.5
    assert "Time limit reached" in capsys.readouterr().out


def test_epoch_interval_finishes_the_epoch(clock: FakeTime) -> None:
    timer = Timer({"seconds": 2.5}, interval="epoch", verbose=False)
    t = trainer(max_epochs=10, callbacks=[timer])
    t.fit(Ticking(clock), loader(4))
    assert t.global_step == 4 and t.current_epoch == 1


def test_time_per_stage(clock: FakeTime) -> None:
    timer = Timer()
    t = trainer(max_epochs=2, callbacks=[timer])
    model = Ticking(clock)
    t.fit(model, loader(3), loader(2))
    # Training time includes the validation inside fit: 2 x (3 x 1 s + 2 x 0.5 s).
    assert timer.time_elapsed("train") == 8.0
    assert timer.time_elapsed("validate") == 1.0  # the last validation run
    assert timer.time_remaining() is None
    assert timer.start_time("train") == 1000.0 and timer.end_time("train") == 1008.0
    assert timer.start_time("test") is None and timer.time_elapsed("test") == 0.0
    t.test(model, loader(4), verbose=False)
    assert timer.time_elapsed("test") == 2.0
    with pytest.raises(fk.MisconfigurationError, match="stage"):
        timer.time_elapsed("training")


def test_elapsed_time_runs_while_a_stage_runs(clock: FakeTime) -> None:
    timer = Timer()
    timer.on_train_start(None, None)  # type: ignore[arg-type]
    clock.now += 4.0
    assert timer.time_elapsed() == 4.0 and timer.end_time() is None


def test_state_round_trip(clock: FakeTime) -> None:
    timer = Timer(verbose=False)
    trainer(max_epochs=1, callbacks=[timer]).fit(Ticking(clock), loader(3))
    state = timer.state_dict()
    check_plain(state)
    assert state["time_elapsed"]["train"] == 3.0
    fresh = Timer({"seconds": 10})
    fresh.load_state_dict(state)
    assert fresh.time_elapsed("train") == 3.0 and fresh.time_remaining() == 7.0
    assert fresh.time_elapsed("validate") == 0.0  # only the training budget carries over


def test_resumed_run_continues_the_budget(clock: FakeTime, tmp_path: Path) -> None:
    path = tmp_path / "timer.ckpt"
    timer = Timer({"seconds": 100}, verbose=False)
    t = trainer(max_epochs=1, enable_checkpointing=True, callbacks=[timer, SaveAtEpochEnd(path, epoch=0)])
    t.fit(Ticking(clock), loader(2))

    # 2 s were spent; a budget of 3.5 s leaves room for two more steps.
    resumed_timer = Timer({"seconds": 3.5}, verbose=False)
    resumed = trainer(max_epochs=10, callbacks=[resumed_timer])
    resumed.fit(Ticking(clock), loader(2), ckpt_path=path)
    assert resumed.global_step == 4
    assert resumed_timer.time_elapsed() == 4.0


def test_resumed_run_with_a_spent_budget_stops_at_once(clock: FakeTime, tmp_path: Path) -> None:
    path = tmp_path / "timer.ckpt"
    t = trainer(max_epochs=1, enable_checkpointing=True, callbacks=[Timer(), SaveAtEpochEnd(path, epoch=0)])
    t.fit(Ticking(clock), loader(3))

    resumed = trainer(max_epochs=10, callbacks=[Timer({"seconds": 2}, verbose=False)])
    resumed.fit(Ticking(clock), loader(3), ckpt_path=path)
    assert resumed.global_step == 3  # nothing trained after the resume
