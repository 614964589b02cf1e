"""GradientAccumulationScheduler: optimizer steps per epoch follow the schedule, the
result equals Trainer(accumulate_grad_batches=...), and bad schedules are refused."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _train_cb_helpers import Model, loader, trainer

import fitkit as fk
from fitkit.callbacks import GradientAccumulationScheduler


class StepsPerEpoch(fk.Callback):
    def __init__(self) -> None:
        self.steps: list[int] = []
        self.factors: list[int] = []
        self._start = 0

    def on_train_epoch_start(self, trainer: fk.Trainer, module: Any) -> None:
        self._start = trainer.global_step

    def on_train_batch_start(self, trainer: fk.Trainer, module: Any, batch: Any, batch_idx: int) -> None:
        if batch_idx == 0:
            self.factors.append(trainer.accumulate_grad_batches)

    def on_train_epoch_end(self, trainer: fk.Trainer, module: Any) -> None:
        self.steps.append(trainer.global_step - self._start)


@pytest.mark.parametrize(
    ("scheduling", "batches", "factors", "steps"),
    [
        ({0: 4, 2: 2}, 8, [4, 4, 2, 2], [2, 2, 4, 4]),
        ({1: 4, 3: 2}, 8, [1, 4, 4, 2], [8, 2, 2, 4]),  # epoch 0 is not in the schedule: factor 1
        ({0: 4}, 7, [4, 4, 4, 4], [2, 2, 2, 2]),  # the short last window still steps
        ({0: 3, 1: 1, 2: 8}, 6, [3, 1, 8, 8], [2, 6, 1, 1]),
    ],
)
def test_optimizer_steps_per_epoch(
    scheduling: dict[int, int], batches: int, factors: list[int], steps: list[int]
) -> None:
    counter = StepsPerEpoch()
    t = trainer(max_epochs=4, callbacks=[GradientAccumulationScheduler(scheduling), counter])
    t.fit(Model(), loader(batches))
    assert counter.factors == factors
    assert counter.steps == steps
    assert t.accumulate_grad_batches == 1  # the Trainer's own value is back after fit


def test_same_result_as_the_trainer_argument() -> None:
    torch.manual_seed(0)
    model_a = Model()
    model_b = Model()
    model_b.load_state_dict(model_a.state_dict())
    data = loader(6)
    trainer(max_epochs=2, callbacks=[GradientAccumulationScheduler({0: 3})]).fit(model_a, data)
    trainer(max_epochs=2, accumulate_grad_batches=3).fit(model_b, data)
    for a, b in zip(model_a.parameters(), model_b.parameters(), strict=True):
        assert torch.equal(a, b)


def test_schedule_lookup() -> None:
    cb = GradientAccumulationScheduler({2: 4, 5: 2})
    assert [cb.get_accumulate_grad_batches(e) for e in range(7)] == [1, 1, 4, 4, 4, 2, 2]
    assert cb.scheduling == {0: 1, 2: 4, 5: 2} and cb.going_to_accumulate_grad_batches()
    assert not GradientAccumulationScheduler({0: 1}).going_to_accumulate_grad_batches()


@pytest.mark.parametrize(
    ("scheduling", "match"),
    [
        ({}, "empty"),
        ({-1: 2}, "epochs"),
        ({"1": 2}, "epochs"),
        ({True: 2}, "epochs"),
        ({0: 0}, "factors"),
        ({0: 1.5}, "factors"),
        ({0: False}, "factors"),
    ],
)
def test_bad_schedules(scheduling: Any, match: str) -> None:
    with pytest.raises(fk.MisconfigurationError, match=match):
        GradientAccumulationScheduler(scheduling)


def test_not_a_dict() -> None:
    with pytest.raises(fk.FitkitTypeError, match="scheduling"):
        GradientAccumulationScheduler([(0, 2)])  # type: ignore[arg-type]


def test_refused_with_the_trainer_argument() -> None:
    t = trainer(max_epochs=1, accumulate_grad_batches=2, callbacks=[GradientAccumulationScheduler({0: 4})])
    with pytest.raises(fk.MisconfigurationError, match="accumulate_grad_batches"):
        t.fit(Model(), loader(2))


class Manual(Model):
    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward(self.loss(self(batch)))
        opt.step()


def test_refused_with_manual_optimization() -> None:
    t = trainer(max_epochs=1, callbacks=[GradientAccumulationScheduler({0: 2})])
    with pytest.raises(fk.MisconfigurationError, match="manual optimization"):
        t.fit(Manual(), loader(2))
