"""LearningRateMonitor: values and steps after StepLR / OneCycleLR, names per optimizer
and parameter group, momentum and weight decay, and its errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _train_cb_helpers import CollectLogger, Model, loader, trainer

import fitkit as fk
from fitkit.callbacks import LearningRateMonitor


class Configured(Model):
    """A Model whose configure_optimizers is given as a function of the module."""

    def __init__(self, configure: Any) -> None:
        super().__init__()
        self.configure = configure

    def configure_optimizers(self) -> Any:
        return self.configure(self)


def run(configure: Any, max_epochs: int = 3, batches: int = 2, **kwargs: Any) -> tuple[CollectLogger, Any]:
    logger = CollectLogger()
    own = ("logging_interval", "log_momentum", "log_weight_decay")
    monitor = LearningRateMonitor(**{k: kwargs.pop(k) for k in own if k in kwargs})
    t = trainer(max_epochs=max_epochs, logger=logger, callbacks=[monitor], **kwargs)
    t.fit(Configured(configure), loader(batches))
    return logger, monitor


def step_lr(module: fk.Module) -> Any:
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)}


def test_epoch_scheduler_logged_at_each_epoch_start() -> None:
    logger, monitor = run(step_lr, max_epochs=3, batches=2)
    assert logger.series("lr-SGD") == [(0, 0.1), (2, 0.05), (4, 0.025)]
    assert monitor.lrs == {"lr-SGD": [0.1, 0.05, 0.025]}


def test_step_scheduler_logged_every_n_steps_before_the_step() -> None:
    total = 6

    def one_cycle(module: fk.Module) -> Any:
        opt = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    logger, _ = run(one_cycle, max_epochs=2, batches=3, log_every_n_steps=2, log_momentum=True)
    # The LR and momentum each step used, from the same scheduler stepped by hand.
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=total)
    expected_lr, expected_momentum = [], []
    for _ in range(total):
        expected_lr.append(opt.param_groups[0]["lr"])
        expected_momentum.append(opt.param_groups[0]["momentum"])
        opt.step()
        sched.step()
    assert logger.series("lr-SGD") == [(s, pytest.approx(expected_lr[s])) for s in (0, 2, 4)]
    assert logger.series("lr-SGD-momentum") == [(s, pytest.approx(expected_momentum[s])) for s in (0, 2, 4)]
    assert len(set(expected_momentum)) > 1  # OneCycleLR cycles momentum: the values are really read


def test_logging_interval_overrides_the_scheduler_interval() -> None:
    logger, _ = run(step_lr, max_epochs=2, batches=2, logging_interval="step", log_every_n_steps=1)
    assert logger.series("lr-SGD") == [(0, 0.1), (1, 0.1), (2, 0.05), (3, 0.05)]

    def one_cycle(module: fk.Module) -> Any:
        opt = torch.optim.SGD(module.parameters(), lr=0.1)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=8)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    logger, _ = run(one_cycle, max_epochs=2, batches=2, logging_interval="epoch")
    assert [step for step, _ in logger.series("lr-SGD")] == [0, 2]


def test_accumulated_batches_log_once_per_step() -> None:
    logger, _ = run(
        step_lr, max_epochs=1, batches=4, logging_interval="step", log_every_n_steps=1, accumulate_grad_batches=2
    )
    assert [step for step, _ in logger.series("lr-SGD")] == [0, 1]


def test_optimizer_without_scheduler_is_logged() -> None:
    logger, _ = run(lambda m: torch.optim.SGD(m.parameters(), lr=0.3), max_epochs=1, batches=2, log_every_n_steps=1)
    # No scheduler: logged at the epoch start and at the steps.
    assert logger.series("lr-SGD") == [(0, 0.3), (1, 0.3)]


def test_momentum_and_weight_decay() -> None:
    def adam(module: fk.Module) -> Any:
        return torch.optim.Adam(module.parameters(), lr=0.01, betas=(0.8, 0.99), weight_decay=0.1)

    logger, monitor = run(adam, max_epochs=1, batches=1, log_momentum=True, log_weight_decay=True)
    metrics, step = logger.calls[0]
    assert step == 0
    assert metrics == {"lr-Adam": 0.01, "lr-Adam-momentum": pytest.approx(0.8), "lr-Adam-weight_decay": 0.1}
    assert monitor.last_momentum_values == {"lr-Adam-momentum": pytest.approx(0.8)}


def test_momentum_warns_and_logs_zero_without_momentum() -> None:
    with pytest.warns(RuntimeWarning, match="no momentum"):
        logger, _ = run(lambda m: torch.optim.Adagrad(m.parameters(), lr=0.1), max_epochs=1, log_momentum=True)
    assert logger.series("lr-Adagrad-momentum")[0][1] == 0.0


def test_names_for_param_groups_and_scheduler_names() -> None:
    def groups(module: fk.Module) -> Any:
        opt = torch.optim.SGD([{"params": [module.layer.weight]}, {"params": [module.layer.bias], "lr": 0.01}], lr=0.1)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 1, 0.5)}

    logger, _ = run(groups, max_epochs=2)
    assert logger.series("lr-SGD/pg1") == [(0, 0.1), (2, 0.05)]
    assert logger.series("lr-SGD/pg2") == [(0, 0.01), (2, 0.005)]

    def named(module: fk.Module) -> Any:
        opt = torch.optim.SGD(
            [{"params": [module.layer.weight], "name": "w"}, {"params": [module.layer.bias], "name": "b"}], lr=0.1
        )
        sched = torch.optim.lr_scheduler.StepLR(opt, 1, 0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "name": "my-lr"}}

    logger, _ = run(named, max_epochs=1)
    assert logger.calls[0][0] == {"my-lr/w": 0.1, "my-lr/b": 0.1}


def test_duplicate_group_names_are_refused() -> None:
    def dup(module: fk.Module) -> Any:
        return torch.optim.SGD(
            [{"params": [module.layer.weight], "name": "x"}, {"params": [module.layer.bias], "name": "x"}], lr=0.1
        )

    with pytest.raises(fk.MisconfigurationError, match="name"):
        run(dup, max_epochs=1)


class TwoOptimizers(Model):
    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.other = torch.nn.Linear(2, 2)

    def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        for opt in self.optimizers():
            opt.zero_grad()
        loss = self.loss(self.other(self(batch)))
        self.manual_backward(loss)
        for opt in self.optimizers():
            opt.step()

    def configure_optimizers(self) -> Any:
        a = torch.optim.SGD(self.layer.parameters(), lr=0.1)
        b = torch.optim.SGD(self.other.parameters(), lr=0.2)
        return [a, b], [torch.optim.lr_scheduler.StepLR(b, 1, 0.5)]


def test_optimizers_of_the_same_class_are_numbered() -> None:
    logger = CollectLogger()
    t = trainer(max_epochs=2, logger=logger, callbacks=[LearningRateMonitor(logging_interval="epoch")])
    t.fit(TwoOptimizers(), loader(2))
    # The scheduled optimizer is named first, as in Lightning (manual optimization: never stepped).
    assert logger.series("lr-SGD") == [(0, 0.2), (2, 0.2)]
    assert logger.series("lr-SGD-1") == [(0, 0.1), (2, 0.1)]


def test_values_reach_callback_metrics() -> None:
    monitor = LearningRateMonitor()
    t = trainer(max_epochs=2, logger=CollectLogger(), callbacks=[monitor])
    t.fit(Configured(step_lr), loader(2))
    value = t.callback_metrics["lr-SGD"]
    assert isinstance(value, torch.Tensor) and float(value) == pytest.approx(0.05)


def test_requires_a_logger() -> None:
    t = trainer(max_epochs=1, logger=False, callbacks=[LearningRateMonitor()])
    with pytest.raises(fk.MisconfigurationError, match="logger"):
        t.fit(Configured(step_lr), loader(1))


def test_bad_logging_interval() -> None:
    with pytest.raises(fk.MisconfigurationError, match="logging_interval"):
        LearningRateMonitor(logging_interval="batch")
