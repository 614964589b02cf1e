"""Trainer properties and loop control: ``should_stop``, ``current_epoch``, ``global_step``,
``state`` during and after each method, ``estimated_stepping_batches`` and the batch
counts, loaders without ``__len__``, several evaluation loaders, and the two ways a
step can skip work (``on_train_batch_start`` returning -1, ``training_step`` returning None).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from _trainer_helpers import (
    Model,
    Steps,
    Stream,
    loader,
    trainer,
)
from torch.utils.data import DataLoader

import fitkit as fk
from fitkit.trainer.state import RunningStage, TrainerFn, TrainerStatus
from fitkit.utilities.exceptions import MisconfigurationError

# -- trainer properties ------------------------------------------------------------------------------


def test_current_epoch_and_global_step_during_and_after_fit() -> None:
    steps = Steps()
    t = trainer(max_epochs=2, accumulate_grad_batches=2, callbacks=[steps])
    assert (t.current_epoch, t.global_step, t.should_stop) == (0, 0, False)
    model = Model()
    t.fit(model, loader(4))
    assert steps.at_batch_start == [(0, 0), (0, 0), (0, 1), (0, 1), (1, 2), (1, 2), (1, 3), (1, 3)]
    assert (t.current_epoch, t.global_step) == (2, 4)
    assert (model.current_epoch, model.global_step) == (2, 4)  # the module's views agree


def test_should_stop_set_by_a_callback_and_reset_by_the_next_fit() -> None:
    class StopNow(fk.Callback):
        def on_train_batch_end(self, trainer: fk.Trainer, *args: Any) -> None:
            trainer.should_stop = True

    steps = Steps()
    t = trainer(max_epochs=3, callbacks=[StopNow(), steps])
    t.fit(Model(), loader(4))
    assert t.should_stop
    assert steps.batches == [(0, 0)]
    t.validate(Model(), loader(1), verbose=False)
    assert not t.should_stop  # every entry point starts with should_stop=False


def test_should_stop_in_on_train_epoch_end_stops_after_that_epoch() -> None:
    class StopAfterEpoch(fk.Callback):
        def on_train_epoch_end(self, trainer: fk.Trainer, module: fk.Module) -> None:
            trainer.should_stop = True

    steps = Steps()
    t = trainer(max_epochs=5, callbacks=[StopAfterEpoch(), steps])
    t.fit(Model(), loader(3))
    assert len(steps.batches) == 3
    assert t.current_epoch == 1


class StateProbe(Model):
    def __init__(self) -> None:
        super().__init__()
        self.states: dict[str, set[tuple[Any, ...]]] = {}

    def _record(self, where: str) -> None:
        t = self.trainer
        flags = (t.training, t.sanity_checking, t.validating, t.testing, t.predicting)
        self.states.setdefault(where, set()).add((t.state.fn, t.state.status, t.state.stage, flags))

    def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        self._record("train")
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        self._record("sanity" if self.trainer.sanity_checking else "validate")
        return super().validation_step(batch, batch_idx)

    def test_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        self._record("test")
        return super().test_step(batch, batch_idx)

    def predict_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        self._record("predict")
        return super().predict_step(batch, batch_idx)

    def setup(self, stage: str) -> None:
        self._record(f"setup:{stage}")


def test_state_during_and_after_each_method() -> None:
    running, finished = TrainerStatus.RUNNING, TrainerStatus.FINISHED
    model = StateProbe()
    t = trainer(max_epochs=1, num_sanity_val_steps=1, val_check_interval=1)  # training resumes after validating
    assert (t.state.fn, t.state.status, t.state.stage) == (None, TrainerStatus.INITIALIZING, None)
    assert not t.state.finished

    t.fit(model, loader(2), loader(2))
    fit_ = TrainerFn.FITTING
    assert model.states["setup:fit"] == {(fit_, running, None, (False,) * 5)}
    assert model.states["train"] == {(fit_, running, RunningStage.TRAINING, (True, False, False, False, False))}
    assert model.states["sanity"] == {(fit_, running, RunningStage.SANITY_CHECKING, (False, True, False, False, False))}
    assert model.states["validate"] == {(fit_, running, RunningStage.VALIDATING, (False, False, True, False, False))}
    assert (t.state.fn, t.state.status, t.state.stage) == (fit_, finished, None)
    assert t.state.finished and not t.training

    for method, fn, stage, flags in (
        ("validate", TrainerFn.VALIDATING, RunningStage.VALIDATING, (False, False, True, False, False)),
        ("test", TrainerFn.TESTING, RunningStage.TESTING, (False, False, False, True, False)),
        ("predict", TrainerFn.PREDICTING, RunningStage.PREDICTING, (False, False, False, False, True)),
    ):
        model.states.clear()
        kwargs = {} if method == "predict" else {"verbose": False}
        getattr(t, method)(model, loader(2), **kwargs)
        assert model.states[method] == {(fn, running, stage, flags)}, method
        assert model.states[f"setup:{method}"] == {(fn, running, None, (False,) * 5)}
        assert (t.state.fn, t.state.status, t.state.stage) == (fn, finished, None)


def test_state_after_an_exception_is_interrupted() -> None:
    seen: list[BaseException] = []

    class Boom(Model):
        def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
            raise KeyError("boom")

    class OnException(fk.Callback):
        def on_exception(self, trainer: fk.Trainer, module: fk.Module, exception: BaseException) -> None:
            seen.append(exception)

    t = trainer(max_epochs=1, callbacks=[OnException()])
    with pytest.raises(KeyError, match="boom"):
        t.fit(Boom(), loader(2))
    assert (t.state.fn, t.state.status, t.state.stage) == (TrainerFn.FITTING, TrainerStatus.INTERRUPTED, None)
    assert len(seen) == 1 and isinstance(seen[0], KeyError)


class RecordsEstimate(Model):
    """Reads ``estimated_stepping_batches`` where schedulers such as OneCycleLR need it."""

    def configure_optimizers(self) -> Any:
        self.estimate = self.trainer.estimated_stepping_batches
        return super().configure_optimizers()


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"max_epochs": 3}, 30),
        ({"max_epochs": 3, "accumulate_grad_batches": 3}, 12),
        ({"max_epochs": 3, "accumulate_grad_batches": 4, "limit_train_batches": 0.5}, 6),
        ({"max_epochs": 3, "max_steps": 7}, 7),
        ({"max_epochs": -1, "max_steps": 25}, 25),
        ({"max_steps": 13}, 13),
        ({"max_epochs": 2, "limit_train_batches": 4}, 8),
        ({"fast_dev_run": 2}, 2),
    ],
)
def test_estimated_stepping_batches_matches_the_run(kwargs: dict[str, Any], expected: int) -> None:
    model = RecordsEstimate()
    t = trainer(**kwargs)
    t.fit(model, loader(10))
    assert model.estimate == expected
    assert t.estimated_stepping_batches == expected
    assert t.global_step == expected


def test_estimated_stepping_batches_is_inf_when_unbounded() -> None:
    model = RecordsEstimate()
    t = trainer(max_epochs=1)
    t.fit(model, DataLoader(Stream(3), batch_size=None))
    assert model.estimate == math.inf  # an iterable of unknown length
    t = trainer(max_epochs=-1, max_steps=-1)
    t.num_training_batches = 10
    assert t.estimated_stepping_batches == math.inf


def test_num_training_and_val_batches() -> None:
    t = trainer(max_epochs=1, limit_train_batches=0.5, limit_val_batches=3)
    t.fit(Model(), loader(10), [loader(5), loader(2)])
    assert t.num_training_batches == 5
    assert t.num_val_batches == [3, 2]
    t = trainer(max_epochs=1)
    t.fit(Model(), DataLoader(Stream(3), batch_size=None), DataLoader(Stream(2), batch_size=None))
    assert t.num_training_batches == math.inf
    assert t.num_val_batches == [math.inf]


# -- loaders without __len__ ---------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "k", "steps_per_epoch"), [(5, 1, 5), (5, 2, 3), (4, 2, 2), (1, 3, 1), (7, 3, 3)])
def test_iterable_dataset_epochs_and_accumulation_boundary(n: int, k: int, steps_per_epoch: int) -> None:
    steps = Steps()
    t = trainer(max_epochs=2, accumulate_grad_batches=k, callbacks=[steps])
    t.fit(Model(), DataLoader(Stream(n), batch_size=None), DataLoader(Stream(2), batch_size=None))
    assert steps.batches == [(e, b) for e in range(2) for b in range(n)]
    assert steps.optimizer_steps == t.global_step == 2 * steps_per_epoch  # the partial window at the end steps


def test_iterable_dataset_shorter_than_an_int_limit_still_ends_the_accumulation_window() -> None:
    steps = Steps()
    t = trainer(max_epochs=2, limit_train_batches=5, accumulate_grad_batches=3, callbacks=[steps])
    t.fit(Model(), DataLoader(Stream(2), batch_size=None))
    assert steps.batches == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert steps.optimizer_steps == t.global_step == 2  # the 2-batch epoch's end is a step boundary


@pytest.mark.parametrize(
    ("n", "limit", "expected"),
    [
        (3, math.inf, [(0, False), (1, False), (2, True)]),
        (3, 2, [(0, False), (1, True)]),
        (2, 5, [(0, False), (1, True)]),
        (1, 1, [(0, True)]),
        (0, 3, []),
    ],
)
def test_with_last_flag_marks_the_last_batch_of_an_unsized_iterable(n: int, limit: float, expected: list[Any]) -> None:
    from fitkit.trainer.data import with_last_flag

    assert [(i, last) for i, _, last in with_last_flag(iter(range(n)), limit)] == expected
    assert [(i, last) for i, _, last in with_last_flag(list(range(n)), min(limit, n))] == expected


def test_iterable_dataset_with_limits_and_validation() -> None:
    steps = Steps()
    validated: list[int] = []

    class Count(fk.Callback):
        def on_validation_batch_end(self, trainer: fk.Trainer, *args: Any) -> None:
            validated.append(trainer.current_epoch)

    t = trainer(max_epochs=2, limit_train_batches=3, limit_val_batches=1, callbacks=[steps, Count()])
    t.fit(Model(), DataLoader(Stream(10), batch_size=None), DataLoader(Stream(5), batch_size=None))
    assert t.num_training_batches == 3
    assert steps.batches == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert validated == [0, 1]  # validation at each epoch end, one batch each


def test_iterable_dataset_refuses_fractions() -> None:
    with pytest.raises(MisconfigurationError, match="limit_train_batches"):
        trainer(max_epochs=1, limit_train_batches=0.5).fit(Model(), DataLoader(Stream(4), batch_size=None))
    with pytest.raises(MisconfigurationError, match="val_check_interval"):
        trainer(max_epochs=1, val_check_interval=0.5).fit(Model(), DataLoader(Stream(4), batch_size=None))


def test_iterable_dataset_with_int_val_check_interval() -> None:
    at: list[int] = []

    class Where(fk.Callback):
        def on_validation_start(self, trainer: fk.Trainer, module: fk.Module) -> None:
            at.append(trainer.progress.total_batches)

    t = trainer(max_epochs=2, val_check_interval=2, check_val_every_n_epoch=None, callbacks=[Where()])
    t.fit(Model(), DataLoader(Stream(3), batch_size=None), DataLoader(Stream(1), batch_size=None))
    assert at == [2, 4, 6]


def test_empty_iterable_is_an_error() -> None:
    with pytest.raises(MisconfigurationError, match="no batches"):
        trainer(max_epochs=1).fit(Model(), DataLoader(Stream(0), batch_size=None))


# -- several evaluation loaders ---------------------------------------------------------------------------


class MultiLoader(Model):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, int, int]] = []

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        self.calls.append(("validate", dataloader_idx, batch_idx))
        self.log("loss", float(dataloader_idx + 1))
        return None

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        self.calls.append(("test", dataloader_idx, batch_idx))
        self.log("loss", float(dataloader_idx + 10))
        return None

    def on_validation_epoch_end(self) -> None:
        self.log("shared", 5.0)


def test_several_val_loaders_in_fit() -> None:
    model = MultiLoader()
    t = trainer(max_epochs=1)
    t.fit(model, loader(2), [loader(3), loader(2)])
    assert model.calls == [
        ("validate", 0, 0),
        ("validate", 0, 1),
        ("validate", 0, 2),
        ("validate", 1, 0),
        ("validate", 1, 1),
    ]
    metrics = {k: float(v) for k, v in t.callback_metrics.items()}
    assert metrics["loss/dataloader_idx_0"] == 1.0
    assert metrics["loss/dataloader_idx_1"] == 2.0
    assert "loss" not in metrics
    assert metrics["shared"] == 5.0  # logged outside a loader: no suffix


def test_several_test_loaders_return_one_dict_per_loader() -> None:
    model = MultiLoader()
    results = trainer().test(model, [loader(2), loader(1), loader(1)], verbose=False)
    assert results == [
        {"loss/dataloader_idx_0": 10.0},
        {"loss/dataloader_idx_1": 11.0},
        {"loss/dataloader_idx_2": 12.0},
    ]
    assert [c[1] for c in model.calls] == [0, 0, 1, 2]


def test_several_validate_loaders_share_unsuffixed_metrics() -> None:
    results = trainer().validate(MultiLoader(), [loader(1), loader(1)], verbose=False)
    assert results == [{"loss/dataloader_idx_0": 1.0, "shared": 5.0}, {"loss/dataloader_idx_1": 2.0, "shared": 5.0}]


def test_one_loader_passes_no_dataloader_idx_and_no_suffix() -> None:
    class TwoArgs(Model):
        def validation_step(self, batch: Any, batch_idx: int) -> Any:
            self.log("loss", 3.0)

    assert trainer().validate(TwoArgs(), loader(2), verbose=False) == [{"loss": 3.0}]
    assert trainer().validate(TwoArgs(), [loader(2)], verbose=False) == [{"loss": 3.0}]


def test_several_loaders_need_a_dataloader_idx_parameter() -> None:
    class TwoArgs(Model):
        def validation_step(self, batch: Any, batch_idx: int) -> Any:
            return None

    with pytest.raises(MisconfigurationError, match="dataloader_idx"):
        trainer().validate(TwoArgs(), [loader(1), loader(1)], verbose=False)


# -- skipping work from a hook or the step -----------------------------------------------------------


def test_on_train_batch_start_returning_minus_one_ends_the_epoch() -> None:
    class SkipRest(Model):
        def __init__(self) -> None:
            super().__init__()
            self.trained: list[tuple[int, int]] = []

        def on_train_batch_start(self, batch: Any, batch_idx: int) -> Any:
            return -1 if batch_idx == 2 else None

        def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
            self.trained.append((self.current_epoch, batch_idx))
            return super().training_step(batch, batch_idx)

    model = SkipRest()
    steps = Steps()
    t = trainer(max_epochs=2, callbacks=[steps])
    t.fit(model, loader(5))
    assert model.trained == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert steps.batches == model.trained  # on_train_batch_end does not run for the refused batch
    assert (t.global_step, t.current_epoch) == (4, 2)


def test_training_step_returning_none_skips_backward_and_step() -> None:
    class SkipOdd(Model):
        def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
            return None if batch_idx % 2 else super().training_step(batch, batch_idx)

    steps = Steps()
    t = trainer(max_epochs=1, callbacks=[steps])
    t.fit(SkipOdd(), loader(5))
    assert (steps.backwards, steps.optimizer_steps, t.global_step) == (3, 3, 3)
    assert len(steps.batches) == 5  # on_train_batch_end still runs for skipped batches


def test_training_step_returning_none_leaves_weights_unchanged() -> None:
    class Never(Model):
        def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
            return None

    model = Never()
    before = [p.detach().clone() for p in model.parameters()]
    t = trainer(max_epochs=2)
    t.fit(model, loader(3))
    assert t.global_step == 0
    for a, b in zip(before, model.parameters(), strict=True):
        torch.testing.assert_close(a, b.detach(), rtol=0, atol=0)
        assert b.grad is None


def test_training_step_returning_none_inside_an_accumulation_window() -> None:
    class SkipSome(Model):
        def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
            return None if batch_idx in (0, 2, 3) else super().training_step(batch, batch_idx)

    steps = Steps()
    t = trainer(max_epochs=1, accumulate_grad_batches=2, callbacks=[steps])
    t.fit(SkipSome(), loader(6))
    # windows (0,1) (2,3) (4,5): the middle one has no loss at all, so it does not step
    assert (steps.backwards, steps.optimizer_steps, t.global_step) == (3, 2, 2)


def test_training_step_may_return_a_dict_with_loss() -> None:
    outputs: list[Any] = []

    class DictOut(Model):
        def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
            return {"loss": super().training_step(batch, batch_idx), "extra": batch_idx}

        def on_train_batch_end(self, out: Any, batch: Any, batch_idx: int) -> None:
            outputs.append(out)

    t = trainer(max_epochs=1)
    t.fit(DictOut(), loader(2))
    assert t.global_step == 2
    assert [o["extra"] for o in outputs] == [0, 1]
    assert not outputs[0]["loss"].requires_grad  # handed on detached
