"""The semantics of the Trainer's arguments that say how long to train, on how much data,
and when to validate: counted, not assumed.

Each test runs a tiny model over a few batches and counts training batches, optimizer
steps and validation runs with ``Counter`` (a callback in ``_trainer_helpers.py``).
The step-shaping arguments (accumulation, clipping, debugging switches, torch flags) are
in ``test_trainer_step_arguments.py``; trainer properties and data handling in
``test_trainer_loop_control.py`` and ``test_trainer_data_flow.py``.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
import torch
from _trainer_helpers import (
    FEATURES,
    Counter,
    Model,
    StepCounter,
    StopAt,
    fit,
    loader,
    trainer,
)

import fitkit as fk
from fitkit.trainer.arguments import parse_max_time
from fitkit.utilities.exceptions import FitkitTypeError, MisconfigurationError

# -- how long: epochs, steps, time --------------------------------------------------------


def test_max_epochs_runs_every_batch_of_each_epoch() -> None:
    t, c = fit(num_batches=4, max_epochs=3)
    assert (c.epochs, c.train_batches, c.optimizer_steps, c.val_runs) == (3, 12, 12, 3)
    assert (t.current_epoch, t.global_step) == (3, 12)
    assert c.batch_idx == [(e, b) for e in range(3) for b in range(4)]


def test_max_epochs_defaults() -> None:
    assert fk.Trainer().max_epochs == 1000
    assert fk.Trainer(max_steps=5).max_epochs == -1  # max_steps alone bounds the run
    assert fk.Trainer(max_epochs=2, max_steps=5).max_epochs == 2


def test_max_epochs_zero_trains_nothing() -> None:
    t, c = fit(max_epochs=0)
    assert (c.epochs, c.train_batches, t.global_step, t.current_epoch) == (0, 0, 0, 0)


def test_max_epochs_minus_one_runs_until_max_steps() -> None:
    t, c = fit(num_batches=4, val_batches=None, max_epochs=-1, max_steps=10)
    assert (t.global_step, c.train_batches, c.optimizer_steps) == (10, 10, 10)
    assert c.epochs == 3
    assert c.batch_idx[-1] == (2, 1)  # the third epoch stopped after its second batch
    assert t.current_epoch == 3  # the truncated epoch counts as completed, as in Lightning


@pytest.mark.parametrize("value", [-2, 1.5, "3", True])
def test_max_epochs_rejects_bad_values(value: Any) -> None:
    with pytest.raises(MisconfigurationError, match="max_epochs"):
        fk.Trainer(max_epochs=value)


def test_max_steps_stops_mid_epoch_with_exact_global_step() -> None:
    t, c = fit(num_batches=4, max_epochs=10, max_steps=5)
    assert (t.global_step, c.optimizer_steps, c.train_batches) == (5, 5, 5)
    assert c.batch_idx[-1] == (1, 0)
    # fitkit still validates the truncated epoch's end (Lightning would not: is_last_batch is False)
    assert c.val_runs == 2


def test_max_steps_counts_optimizer_steps_not_batches() -> None:
    t, c = fit(num_batches=4, max_epochs=10, max_steps=3, accumulate_grad_batches=2)
    assert (t.global_step, c.optimizer_steps) == (3, 3)
    assert c.train_batches == 6  # 2 steps in epoch 0, then 2 more batches for the third step


def test_max_steps_is_hit_before_max_epochs_and_vice_versa() -> None:
    t, _ = fit(num_batches=4, max_epochs=2, max_steps=100)
    assert t.global_step == 8
    t, _ = fit(num_batches=4, max_epochs=100, max_steps=8)
    assert (t.global_step, t.current_epoch) == (8, 2)


def test_should_stop_ends_the_run_after_the_current_batch() -> None:
    t, c = fit(num_batches=4, max_epochs=5, callbacks=[StopAt(0, 1)])
    assert c.train_batches == 2
    assert t.should_stop


def test_min_epochs_ignores_an_early_stop_until_reached() -> None:
    t, c = fit(num_batches=4, max_epochs=10, min_epochs=3, callbacks=[StopAt(0, 0)])
    assert c.epochs == 3
    assert c.train_batches == 12  # every batch of the three epochs, not just one
    assert t.current_epoch == 3


def test_min_epochs_does_not_extend_a_run_nobody_stopped() -> None:
    _, c = fit(num_batches=2, max_epochs=2, min_epochs=1)
    assert c.epochs == 2


def test_min_steps_ignores_an_early_stop_until_reached() -> None:
    t, c = fit(num_batches=4, max_epochs=10, min_steps=6, callbacks=[StopAt(0, 0)])
    assert (t.global_step, c.train_batches) == (6, 6)
    assert c.batch_idx[-1] == (1, 1)  # stopped mid-epoch, as soon as min_steps was met


def test_min_steps_and_min_epochs_both_must_be_met() -> None:
    t, c = fit(num_batches=4, max_epochs=10, min_steps=2, min_epochs=2, callbacks=[StopAt(0, 0)])
    assert (c.epochs, t.global_step) == (2, 8)


class Slow(Model):
    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        time.sleep(self.delay)
        return super().training_step(batch, batch_idx)


@pytest.mark.parametrize("max_time", [dt.timedelta(seconds=0.2), {"milliseconds": 200}], ids=["timedelta", "dict"])
def test_max_time_stops_a_slow_run_quickly(max_time: Any) -> None:
    start = time.monotonic()
    t, c = fit(num_batches=50, val_batches=None, model=Slow(0.05), max_epochs=10, max_time=max_time)
    elapsed = time.monotonic() - start
    assert 1 <= c.train_batches <= 4  # each step sleeps 0.05 s: the fifth would start after the deadline
    assert elapsed < 2.0
    assert t.current_epoch == 1  # stopped inside the first epoch


def test_max_time_string_dd_hh_mm_ss() -> None:
    start = time.monotonic()
    t, c = fit(num_batches=200, val_batches=None, model=Slow(0.1), max_epochs=10, max_time="00:00:00:01")
    elapsed = time.monotonic() - start
    assert 1.0 <= elapsed < 3.0
    assert 1 <= c.train_batches <= 10
    assert t.state.finished


def test_max_time_stops_between_epochs_too() -> None:
    # each epoch is 2 slow batches: the deadline is checked after every batch, so no new epoch starts
    _, c = fit(num_batches=2, val_batches=None, model=Slow(0.06), max_epochs=100, max_time={"seconds": 0.25})
    assert c.train_batches <= 5
    assert c.epochs <= 3


def test_parse_max_time_forms() -> None:
    assert parse_max_time(None) is None
    assert parse_max_time("01:02:03:04") == 86400 + 2 * 3600 + 3 * 60 + 4
    assert parse_max_time(dt.timedelta(minutes=2)) == 120
    assert parse_max_time({"hours": 1, "minutes": 30}) == 5400


@pytest.mark.parametrize("value", ["1:00", "00:00:00:00", {"weeks_": 1}, dt.timedelta(0), "aa:bb:cc:dd"])
def test_max_time_rejects_bad_values(value: Any) -> None:
    with pytest.raises(MisconfigurationError, match="max_time"):
        fk.Trainer(max_time=value)


def test_max_time_rejects_a_number() -> None:
    with pytest.raises(FitkitTypeError, match="max_time"):
        fk.Trainer(max_time=10)


# -- how much: limit_*_batches ---------------------------------------------------------------


@pytest.mark.parametrize(("limit", "expected"), [(3, 3), (0.5, 5), (1.0, 10), (20, 10)])
def test_limit_train_batches(limit: int | float, expected: int) -> None:
    t, c = fit(num_batches=10, max_epochs=2, limit_train_batches=limit)
    assert t.num_training_batches == expected
    assert c.train_batches == 2 * expected
    assert t.global_step == 2 * expected
    assert c.batch_idx[-1] == (1, expected - 1)


def test_limit_train_batches_zero_trains_nothing() -> None:
    # as Lightning's fit loop: no training batches means no epochs (and no per-epoch validation)
    t, c = fit(num_batches=4, limit_train_batches=0, num_sanity_val_steps=2)
    assert (c.epochs, c.train_batches, t.global_step, t.current_epoch) == (0, 0, 0, 0)
    assert (c.sanity_batches, c.val_runs) == (2, 0)  # the sanity check still runs
    assert t.state.finished


@pytest.mark.parametrize(("limit", "expected"), [(2, 2), (0.25, 2), (0.5, 4), (1.0, 8)])
def test_limit_val_batches(limit: int | float, expected: int) -> None:
    t, c = fit(num_batches=2, val_batches=8, max_epochs=2, limit_val_batches=limit, num_sanity_val_steps=-1)
    assert t.num_val_batches == [expected]
    assert c.sanity_batches == expected  # the sanity check honours the limit too
    assert (c.val_runs, c.val_batches) == (2, 2 * expected)


def test_limit_val_batches_zero_disables_validation_and_sanity() -> None:
    _, c = fit(num_batches=2, val_batches=4, max_epochs=2, limit_val_batches=0, num_sanity_val_steps=2)
    assert (c.sanity_runs, c.val_runs, c.val_batches) == (0, 0, 0)


@pytest.mark.parametrize(("limit", "expected"), [(3, 3), (0.5, 4), (1.0, 8)])
def test_limit_test_and_predict_batches(limit: int | float, expected: int) -> None:
    model = StepCounter()
    t = trainer(limit_test_batches=limit, limit_predict_batches=limit)
    t.test(model, loader(8), verbose=False)
    predictions = t.predict(model, loader(8))
    assert model.steps["test"] == list(range(expected))
    assert model.steps["predict"] == list(range(expected))
    assert predictions is not None and len(predictions) == expected
    assert (t.num_test_batches, t.num_predict_batches) == ([expected], [expected])


def test_limit_val_batches_applies_to_trainer_validate() -> None:
    model = StepCounter()
    trainer(limit_val_batches=0.25).validate(model, loader(8), verbose=False)
    assert model.steps["validate"] == [0, 1]


@pytest.mark.parametrize("value", [-1, 1.5, "all", None])
def test_limit_batches_reject_bad_values(value: Any) -> None:
    if value is None:
        fk.Trainer(limit_train_batches=None)  # None means "all"
        return
    with pytest.raises(MisconfigurationError, match="limit_train_batches"):
        fk.Trainer(limit_train_batches=value)


def test_limit_fraction_rounding_to_zero_is_an_error() -> None:
    t = trainer(limit_train_batches=0.1, max_epochs=1)
    with pytest.raises(MisconfigurationError, match="limit_train_batches"):
        t.fit(Model(), loader(4))


# -- when to validate --------------------------------------------------------------------------


def test_val_check_interval_int_validates_every_n_batches() -> None:
    _, c = fit(num_batches=10, max_epochs=1, val_check_interval=3)
    assert c.val_at == [(0, 3), (0, 6), (0, 9)]  # not again at the end: 10 is not a multiple of 3


def test_val_check_interval_int_restarts_each_epoch() -> None:
    _, c = fit(num_batches=5, max_epochs=2, val_check_interval=2)
    assert c.val_at == [(0, 2), (0, 4), (1, 7), (1, 9)]


@pytest.mark.parametrize(("fraction", "runs"), [(0.5, 2), (0.25, 5), (1.0, 1), (0.3, 3)])
def test_val_check_interval_fraction_runs_per_epoch(fraction: float, runs: int) -> None:
    _, c = fit(num_batches=10, max_epochs=2, val_check_interval=fraction)
    assert c.val_runs == 2 * runs
    assert c.val_at[runs - 1][0] == 0 and c.val_at[runs][0] == 1


def test_val_check_interval_fraction_positions() -> None:
    _, c = fit(num_batches=10, max_epochs=1, val_check_interval=0.5)
    assert c.val_at == [(0, 5), (0, 10)]


def test_val_check_interval_int_counts_across_epochs_without_check_val_every_n_epoch() -> None:
    _, c = fit(num_batches=4, max_epochs=3, val_check_interval=3, check_val_every_n_epoch=None)
    assert c.val_at == [(0, 3), (1, 6), (2, 9), (2, 12)]


def test_val_check_interval_larger_than_an_epoch_needs_check_val_every_n_epoch_none() -> None:
    with pytest.raises(MisconfigurationError, match="val_check_interval"):
        fit(num_batches=4, max_epochs=3, val_check_interval=6)
    _, c = fit(num_batches=4, max_epochs=3, val_check_interval=6, check_val_every_n_epoch=None)
    assert c.val_at == [(1, 6), (2, 12)]


def test_val_check_interval_fraction_with_check_val_every_n_epoch_none_is_refused() -> None:
    with pytest.raises(MisconfigurationError, match="check_val_every_n_epoch"):
        fk.Trainer(val_check_interval=0.5, check_val_every_n_epoch=None)


@pytest.mark.parametrize("value", [0, -1, 0.0, 1.5, "1"])
def test_val_check_interval_rejects_bad_values(value: Any) -> None:
    with pytest.raises(MisconfigurationError, match="val_check_interval"):
        fk.Trainer(val_check_interval=value)


@pytest.mark.parametrize(("every", "epochs_validated"), [(1, [0, 1, 2, 3, 4]), (2, [1, 3]), (3, [2]), (6, [])])
def test_check_val_every_n_epoch(every: int, epochs_validated: list[int]) -> None:
    _, c = fit(num_batches=2, max_epochs=5, check_val_every_n_epoch=every)
    assert [epoch for epoch, _ in c.val_at] == epochs_validated


def test_check_val_every_n_epoch_combines_with_a_fraction() -> None:
    _, c = fit(num_batches=4, max_epochs=4, check_val_every_n_epoch=2, val_check_interval=0.5)
    assert c.val_at == [(1, 6), (1, 8), (3, 14), (3, 16)]


def test_validation_needs_a_validation_step() -> None:
    class NoValidationStep(fk.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(FEATURES, 1)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            return self.layer(batch).sum()

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    _, c = fit(model=NoValidationStep(), max_epochs=2, num_sanity_val_steps=2)
    assert (c.sanity_runs, c.val_runs) == (0, 0)


# -- the sanity check --------------------------------------------------------------------------


class SanityProbe(Model):
    """Logs a distinct value during sanity and remembers what the trainer held afterwards."""

    def __init__(self) -> None:
        super().__init__()
        self.after_sanity: dict[str, Any] = {}
        self.sanity_flags: list[bool] = []

    def validation_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        self.sanity_flags.append(self.trainer.sanity_checking)
        self.log("probe", -1.0 if self.trainer.sanity_checking else 1.0)
        return super().validation_step(batch, batch_idx)

    def on_train_start(self) -> None:
        t = self.trainer
        self.after_sanity = {
            "callback": dict(t.callback_metrics),
            "logged": dict(t.logged_metrics),
            "bar": dict(t.progress_bar_metrics),
        }


@pytest.mark.parametrize(("steps", "expected"), [(0, 0), (2, 2), (-1, 5), (10, 5), (None, 2)])
def test_num_sanity_val_steps_batches_seen(steps: int | None, expected: int) -> None:
    model = SanityProbe()
    _, c = fit(num_batches=2, val_batches=5, max_epochs=1, model=model, num_sanity_val_steps=steps)
    assert c.sanity_batches == expected
    assert c.sanity_runs == (1 if expected else 0)
    assert model.sanity_flags == [True] * expected + [False] * 5
    assert c.val_batches == 5  # the real validation is untouched


def test_sanity_metrics_never_reach_the_metric_dicts() -> None:
    model = SanityProbe()
    t, _ = fit(num_batches=2, val_batches=3, max_epochs=1, model=model, num_sanity_val_steps=-1)
    for name, metrics in model.after_sanity.items():
        assert "probe" not in metrics and "val_loss" not in metrics, name
    assert float(t.callback_metrics["probe"]) == 1.0  # only the real validation's values
    assert float(t.logged_metrics["probe"]) == 1.0


def test_num_sanity_val_steps_counts_per_loader() -> None:
    class TwoLoaders(Model):
        def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
            return super().validation_step(batch, batch_idx)

    counter = Counter()
    t = trainer(max_epochs=1, num_sanity_val_steps=2, callbacks=[counter])
    t.fit(TwoLoaders(), loader(2), [loader(3), loader(1)])
    assert t.num_sanity_val_batches == [2, 1]
    assert counter.sanity_batches == 3


@pytest.mark.parametrize("value", [-2, 1.0, "2"])
def test_num_sanity_val_steps_rejects_bad_values(value: Any) -> None:
    with pytest.raises(MisconfigurationError, match="num_sanity_val_steps"):
        fk.Trainer(num_sanity_val_steps=value)
