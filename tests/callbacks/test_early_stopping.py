"""EarlyStopping: the epoch it stops at for each mode, delta, patience and threshold;
where it checks; its errors; its state, also across a resumed run."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from _train_cb_helpers import Model, SaveAtEpochEnd, loader, trainer

import fitkit as fk
from fitkit.callbacks import EarlyStopping
from fitkit.checkpoint import check_plain, load


class Scripted(Model):
    """Logs ``values[i]`` as ``val_loss`` in the i-th validation run (and as ``train_metric`` per epoch)."""

    def __init__(self, values: list[float]) -> None:
        super().__init__()
        self.values = values
        self.val_runs = 0

    def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        value = self.values[min(self.current_epoch, len(self.values) - 1)]
        self.log("train_metric", torch.tensor(value), on_step=False, on_epoch=True)
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        value = self.values[min(self.val_runs, len(self.values) - 1)]
        self.log("val_loss", torch.tensor(value))

    def on_validation_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.val_runs += 1


def fit(values: list[float], max_epochs: int = 10, val: bool = True, **es_kwargs: Any) -> tuple[fk.Trainer, Any]:
    es_kwargs.setdefault("monitor", "val_loss")
    es = EarlyStopping(**es_kwargs)
    t = trainer(max_epochs=max_epochs, callbacks=[es])
    t.fit(Scripted(values), loader(2), loader(1) if val else None)
    return t, es


@pytest.mark.parametrize(
    ("mode", "values", "patience", "stopped"),
    [
        ("min", [5.0, 4.0, 3.0, 3.5, 3.2, 2.0, 1.0], 2, 4),  # best 3.0 at epoch 2, two worse checks
        ("min", [5.0, 4.0, 3.0, 3.5, 2.9, 3.2, 3.3], 2, 6),  # the improvement at epoch 4 resets the count
        ("max", [0.1, 0.5, 0.4, 0.45, 0.3, 0.9], 2, 3),
        ("max", [0.1, 0.5, 0.4, 0.45, 0.3, 0.9], 3, 4),
        ("min", [1.0, 1.0, 1.0], 0, 1),  # patience 0: the first check without improvement stops
    ],
)
def test_stops_at_the_expected_epoch(mode: str, values: list[float], patience: int, stopped: int) -> None:
    t, es = fit(values, mode=mode, patience=patience)
    assert es.stopped_epoch == stopped
    assert t.current_epoch == stopped + 1  # the epoch that decided to stop was completed
    assert es.wait_count == max(patience, 1)
    best = min(values[: stopped + 1]) if mode == "min" else max(values[: stopped + 1])
    assert float(es.best_score) == pytest.approx(best)


def test_runs_to_max_epochs_while_improving() -> None:
    t, es = fit([5.0, 4.0, 3.0, 2.0], max_epochs=4, patience=1)
    assert t.current_epoch == 4 and es.stopped_epoch == 0 and not t.should_stop


@pytest.mark.parametrize(("mode", "values"), [("min", [1.0, 0.95, 0.92, 0.85]), ("max", [1.0, 1.05, 1.08, 1.15])])
def test_min_delta(mode: str, values: list[float]) -> None:
    _, strict_es = fit(values, mode=mode, patience=2, min_delta=0.1)
    assert strict_es.stopped_epoch == 2  # 0.05 and 0.08 are below min_delta
    assert float(strict_es.best_score) == pytest.approx(1.0)
    t, es = fit(values, mode=mode, patience=2, max_epochs=4)
    assert es.stopped_epoch == 0 and t.current_epoch == 4


@pytest.mark.parametrize(
    ("mode", "values", "threshold", "stopped"),
    [("min", [5.0, 4.0, 3.0, 2.0, 1.0], 2.5, 3), ("max", [1.0, 2.0, 3.0, 4.0], 2.5, 2)],
)
def test_stopping_threshold(mode: str, values: list[float], threshold: float, stopped: int) -> None:
    _, es = fit(values, mode=mode, patience=10, stopping_threshold=threshold)
    assert es.stopped_epoch == stopped


@pytest.mark.parametrize(
    ("mode", "values", "threshold", "stopped"),
    [("min", [1.0, 2.0, 10.0, 0.5], 5.0, 2), ("max", [5.0, 4.0, 0.5, 9.0], 1.0, 2)],
)
def test_divergence_threshold(mode: str, values: list[float], threshold: float, stopped: int) -> None:
    _, es = fit(values, mode=mode, patience=10, divergence_threshold=threshold)
    assert es.stopped_epoch == stopped


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_check_finite(bad: float) -> None:
    _, es = fit([1.0, bad, 0.5], patience=10)
    assert es.stopped_epoch == 1
    assert float(es.best_score) == 1.0
    t, es = fit([1.0, bad, 0.5], patience=10, max_epochs=3, check_finite=False)
    assert t.current_epoch == 3 and es.stopped_epoch == 0
    assert float(es.best_score) == 0.5


def test_strict_missing_monitor_lists_available_metrics() -> None:
    with pytest.raises(fk.MisconfigurationError, match=r"`nope`.*val_loss") as info:
        fit([1.0], monitor="nope")
    assert "train_metric" in str(info.value)


def test_not_strict_skips_missing_monitor() -> None:
    t, es = fit([1.0], monitor="nope", strict=False, max_epochs=3)
    assert t.current_epoch == 3 and es.wait_count == 0


def test_without_validation_checks_at_train_epoch_end() -> None:
    t, es = fit([3.0, 2.0, 2.5, 2.4, 1.0], val=False, monitor="train_metric", patience=2)
    assert es.stopped_epoch == 3 and t.current_epoch == 4


def test_mid_epoch_validation_checks_after_each_validation() -> None:
    # Four batches per epoch and validation every two: two checks per epoch.
    es = EarlyStopping(monitor="val_loss", patience=2)
    model = Scripted([5.0, 4.0, 4.5, 4.2, 1.0, 1.0])
    t = trainer(max_epochs=10, val_check_interval=0.5, callbacks=[es])
    t.fit(model, loader(4), loader(1))
    assert model.val_runs == 4  # improvement, improvement, worse, worse -> stop after the 4th
    assert es.stopped_epoch == 1
    assert t.global_step == 8


def test_check_on_train_epoch_end_forced() -> None:
    # The same run checked only at epoch ends sees the second validation of each epoch.
    es = EarlyStopping(monitor="val_loss", patience=1, check_on_train_epoch_end=True)
    model = Scripted([5.0, 4.0, 4.5, 4.2, 3.0, 3.5, 9.0, 9.0])
    t = trainer(max_epochs=10, val_check_interval=0.5, callbacks=[es])
    t.fit(model, loader(4), loader(1))
    # Epoch ends see 4.0, 4.2 (worse: patience 1 reached).
    assert es.stopped_epoch == 1 and model.val_runs == 4


def test_check_after_validation_forced_skips_sanity_check() -> None:
    es = EarlyStopping(monitor="val_loss", patience=1, check_on_train_epoch_end=False)
    t = trainer(max_epochs=5, num_sanity_val_steps=1, callbacks=[es])
    t.fit(Scripted([3.0, 2.0, 2.5, 1.0]), loader(2), loader(1))
    assert es.stopped_epoch == 2


def test_not_checked_outside_fit() -> None:
    es = EarlyStopping(monitor="missing")  # strict: would raise if it checked
    t = trainer(callbacks=[es])
    t.validate(Scripted([1.0]), loader(1), verbose=False)


def test_arguments_are_checked() -> None:
    with pytest.raises(fk.MisconfigurationError, match="mode"):
        EarlyStopping("x", mode="maximum")
    with pytest.raises(fk.MisconfigurationError, match="min_delta"):
        EarlyStopping("x", min_delta=-0.1)
    with pytest.raises(fk.MisconfigurationError, match="patience"):
        EarlyStopping("x", patience=-1)
    with pytest.raises(fk.FitkitTypeError, match="stopping_threshold"):
        EarlyStopping("x", stopping_threshold="1")  # type: ignore[arg-type]


def test_state_key_includes_monitor_and_mode() -> None:
    a, b = EarlyStopping("val_loss"), EarlyStopping("val_acc", mode="max")
    assert a.state_key == "EarlyStopping{'monitor': 'val_loss', 'mode': 'min'}"
    assert a.state_key != b.state_key


def test_state_round_trip() -> None:
    _, es = fit([5.0, 4.0, 3.0, 3.5, 3.2, 2.0], patience=2)
    state = es.state_dict()
    check_plain(state)
    assert state == {"wait_count": 2, "stopped_epoch": 4, "best_score": 3.0, "patience": 2}
    fresh = EarlyStopping("val_loss", patience=7)
    fresh.load_state_dict(state)
    assert (fresh.wait_count, fresh.stopped_epoch, fresh.patience) == (2, 4, 2)
    assert isinstance(fresh.best_score, torch.Tensor) and float(fresh.best_score) == 3.0
    fresh.load_state_dict({**state, "best_score": torch.tensor(1.5)})  # a tensor is accepted too
    assert float(fresh.best_score) == 1.5


def test_state_survives_resume(tmp_path: Path) -> None:
    values = [5.0, 4.0, 3.0, 3.5, 3.2, 2.0, 1.0]
    path = tmp_path / "epoch1.ckpt"
    es = EarlyStopping(monitor="val_loss", patience=2)
    full = trainer(max_epochs=10, enable_checkpointing=True, callbacks=[es, SaveAtEpochEnd(path, epoch=3)])
    full.fit(Scripted(values), loader(2), loader(1))
    assert es.stopped_epoch == 4

    resumed_es = EarlyStopping(monitor="val_loss", patience=2)
    model = Scripted(values)
    model.val_runs = 4  # the scripted values continue where the saved run was
    resumed = trainer(max_epochs=10, callbacks=[resumed_es])
    resumed.fit(model, loader(2), loader(1), ckpt_path=path)
    assert resumed_es.stopped_epoch == 4 and resumed.current_epoch == 5
    assert float(resumed_es.best_score) == 3.0


def test_two_instances_coexist_in_a_checkpoint(tmp_path: Path) -> None:
    a, b = EarlyStopping("val_loss"), EarlyStopping("val_loss", mode="max")
    t = trainer(max_epochs=1, callbacks=[a, b])
    t.fit(Scripted([1.0]), loader(2), loader(1))
    t.save_checkpoint(tmp_path / "two.ckpt")
    saved = load(tmp_path / "two.ckpt")["callbacks"]
    assert saved[a.state_key]["best_score"] == 1.0 and saved[b.state_key]["best_score"] == 1.0


def test_verbose_says_why(capsys: pytest.CaptureFixture[str]) -> None:
    fit([3.0, 2.0, 2.5], verbose=True, patience=1)
    out = capsys.readouterr().out
    assert "Metric val_loss improved. New best score: 3.000" in out
    assert "improved by 1.000 >= min_delta = 0.0. New best score: 2.000" in out
    assert "did not improve in the last 1 records. Best score: 2.000. Signaling Trainer to stop." in out
