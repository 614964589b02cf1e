"""The semantics of the Trainer's arguments that shape each step and the run's switches:
``accumulate_grad_batches``, gradient clipping, ``fast_dev_run``, ``overfit_batches``,
``log_every_n_steps``, ``deterministic``/``benchmark``/``inference_mode``, and the
arguments that are accepted now and act later (loggers, progress bar, devices).
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from _trainer_helpers import (
    FEATURES,
    IndexDataset,
    Model,
    StepCounter,
    fit,
    loader,
    trainer,
)
from torch.utils.data import DataLoader

import fitkit as fk
from fitkit.utilities.exceptions import FitkitTypeError, MisconfigurationError

# -- the optimizer step: accumulation, clipping -----------------------------------------------


class WithScheduler(Model):
    def __init__(self, interval: str = "step") -> None:
        super().__init__()
        self.interval = interval

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=0.1)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": self.scheduler, "interval": self.interval}}


@pytest.mark.parametrize(("batches", "k"), [(10, 3), (10, 1), (9, 3), (4, 8), (5, 2)])
def test_accumulate_grad_batches_steps_ceil_of_batches_over_k(batches: int, k: int) -> None:
    model = WithScheduler("step")
    t, c = fit(num_batches=batches, val_batches=None, model=model, max_epochs=2, accumulate_grad_batches=k)
    per_epoch = math.ceil(batches / k)
    assert (c.optimizer_steps, t.global_step) == (2 * per_epoch, 2 * per_epoch)
    assert c.backwards == 2 * batches  # every batch runs backward
    assert model.scheduler.last_epoch == 2 * per_epoch  # "step" schedulers follow optimizer steps


def test_accumulate_grad_batches_steps_on_window_ends_and_the_last_batch() -> None:
    stepped: list[int] = []

    class Where(fk.Callback):
        def on_before_optimizer_step(self, trainer: fk.Trainer, module: fk.Module, optimizer: Any) -> None:
            stepped.append(trainer.progress.epoch_batches)  # batches finished before this one

    fit(num_batches=10, val_batches=None, max_epochs=1, accumulate_grad_batches=3, callbacks=[Where()])
    assert stepped == [2, 5, 8, 9]  # batch_idx of the batch that stepped


def test_accumulated_gradient_is_the_mean_over_the_window() -> None:
    # two micro-batches of 2 with k=2 give the gradient of one batch of 4 (the loss is a mean)
    torch.manual_seed(0)
    data = torch.randn(4, FEATURES)
    grads: dict[str, torch.Tensor] = {}

    class Grab(fk.Callback):
        def __init__(self, key: str) -> None:
            self.key = key

        def on_before_optimizer_step(self, trainer: fk.Trainer, module: fk.Module, optimizer: Any) -> None:
            grads[self.key] = module.layer.weight.grad.clone()

    for key, bs, k in (("accumulated", 2, 2), ("full", 4, 1)):
        torch.manual_seed(1)
        model = Model()
        t = trainer(max_steps=1, callbacks=[Grab(key)], accumulate_grad_batches=k)
        t.fit(model, DataLoader(data, batch_size=bs))
    torch.testing.assert_close(grads["accumulated"], grads["full"])


def test_epoch_scheduler_steps_once_per_epoch() -> None:
    model = WithScheduler("epoch")
    fit(num_batches=4, val_batches=None, model=model, max_epochs=3, accumulate_grad_batches=2)
    assert model.scheduler.last_epoch == 3


class BigGradients(Model):
    def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        return self(batch).sum() * 100.0


class GradProbe(fk.Callback):
    """Gradient norm and largest entry before clipping (on_before_optimizer_step) and after
    (on_before_zero_grad: the step has run, zero_grad has not)."""

    def __init__(self) -> None:
        self.before: list[tuple[float, float]] = []
        self.after: list[tuple[float, float]] = []

    @staticmethod
    def _measure(module: fk.Module) -> tuple[float, float]:
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item()
        return norm, max(g.abs().max().item() for g in grads)

    def on_before_optimizer_step(self, trainer: fk.Trainer, module: fk.Module, optimizer: Any) -> None:
        self.before.append(self._measure(module))

    def on_before_zero_grad(self, trainer: fk.Trainer, module: fk.Module, optimizer: Any) -> None:
        self.after.append(self._measure(module))


@pytest.mark.parametrize("algorithm", ["norm", None])
def test_gradient_clip_by_norm(algorithm: str | None) -> None:
    probe = GradProbe()
    fit(
        num_batches=3,
        val_batches=None,
        model=BigGradients(),
        max_epochs=1,
        callbacks=[probe],
        gradient_clip_val=0.5,
        gradient_clip_algorithm=algorithm,
    )
    assert len(probe.after) == 3
    assert all(norm > 0.5 for norm, _ in probe.before)  # the bound was really needed
    assert all(norm == pytest.approx(0.5, rel=1e-4) for norm, _ in probe.after)


def test_gradient_clip_by_value() -> None:
    probe = GradProbe()
    fit(
        num_batches=3,
        val_batches=None,
        model=BigGradients(),
        max_epochs=1,
        callbacks=[probe],
        gradient_clip_val=0.1,
        gradient_clip_algorithm="value",
    )
    assert all(largest > 0.1 for _, largest in probe.before)
    assert all(largest <= 0.1 + 1e-7 for _, largest in probe.after)


@pytest.mark.parametrize("value", [None, 0, 0.0])
def test_no_gradient_clipping_when_off(value: Any) -> None:
    probe = GradProbe()
    fit(num_batches=2, val_batches=None, model=BigGradients(), max_epochs=1, callbacks=[probe], gradient_clip_val=value)
    assert probe.before == probe.after
    assert all(norm > 1.0 for norm, _ in probe.after)


def test_gradient_clipping_applies_to_the_accumulated_gradient() -> None:
    probe = GradProbe()
    fit(
        num_batches=4,
        val_batches=None,
        model=BigGradients(),
        max_epochs=1,
        callbacks=[probe],
        gradient_clip_val=0.5,
        accumulate_grad_batches=2,
    )
    assert len(probe.after) == 2
    assert all(norm == pytest.approx(0.5, rel=1e-4) for norm, _ in probe.after)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"gradient_clip_val": -1.0}, "gradient_clip_val"),
        ({"gradient_clip_val": "1"}, "gradient_clip_val"),
        ({"gradient_clip_algorithm": "max"}, "gradient_clip_algorithm"),
        ({"accumulate_grad_batches": 0}, "accumulate_grad_batches"),
    ],
)
def test_step_arguments_reject_bad_values(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(MisconfigurationError, match=name):
        fk.Trainer(**kwargs)


# -- debugging switches: fast_dev_run, overfit_batches -----------------------------------------


@pytest.mark.parametrize(("value", "n"), [(True, 1), (3, 3)])
def test_fast_dev_run(value: bool | int, n: int) -> None:
    model = StepCounter()
    t, c = fit(
        num_batches=10,
        val_batches=10,
        model=model,
        fast_dev_run=value,
        max_epochs=5,
        max_steps=20,
        num_sanity_val_steps=2,
        val_check_interval=0.25,
        check_val_every_n_epoch=3,
        limit_val_batches=5,
    )
    assert (c.epochs, c.train_batches, t.global_step) == (1, n, n)
    assert (c.sanity_runs, c.sanity_batches) == (0, 0)
    assert (c.val_runs, c.val_batches) == (1, n)
    t.test(model, loader(10), verbose=False)
    assert model.steps["test"] == list(range(n))
    assert len(t.predict(model, loader(10))) == n  # type: ignore[arg-type]


def test_fast_dev_run_false_and_zero_are_off() -> None:
    for value in (False, 0):
        _, c = fit(num_batches=3, max_epochs=2, fast_dev_run=value)
        assert c.train_batches == 6


@pytest.mark.parametrize("value", [-1, 1.5, "1"])
def test_fast_dev_run_rejects_bad_values(value: Any) -> None:
    with pytest.raises(MisconfigurationError, match="fast_dev_run"):
        fk.Trainer(fast_dev_run=value)


class RecordBatches(Model):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[list[int]] = []

    def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        self.seen.append(batch[:, 0].long().tolist())
        return super().training_step(batch, batch_idx)


@pytest.mark.parametrize(("overfit", "n"), [(3, 3), (0.2, 2)])
def test_overfit_batches_reads_the_same_first_batches_in_order(overfit: int | float, n: int) -> None:
    model = RecordBatches()
    shuffled = DataLoader(IndexDataset(20), batch_size=2, shuffle=True)
    with pytest.warns(UserWarning, match="shuffles"):
        t, c = fit(model=model, train=shuffled, val_batches=10, max_epochs=2, overfit_batches=overfit)
    first = [[2 * i, 2 * i + 1] for i in range(n)]
    assert model.seen == first + first
    assert t.num_training_batches == n
    assert t.num_val_batches == [n]  # validation is limited the same way
    assert c.val_batches == 2 * n


def test_overfit_batches_zero_is_off() -> None:
    model = RecordBatches()
    fit(model=model, train=DataLoader(IndexDataset(8), batch_size=2), max_epochs=1, overfit_batches=0.0)
    assert len(model.seen) == 4


# -- logging cadence ------------------------------------------------------------------------------


class LogsBatchIdx(Model):
    def __init__(self) -> None:
        super().__init__()
        self.logged_at_start: list[float | None] = []
        self.callback_at_end: list[float] = []

    def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        self.log("idx", float(batch_idx))
        return super().training_step(batch, batch_idx)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        value = self.trainer.logged_metrics.get("idx")
        self.logged_at_start.append(None if value is None else float(value))

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.callback_at_end.append(float(self.trainer.callback_metrics["idx"]))


def test_log_every_n_steps_decides_when_logged_metrics_update() -> None:
    model = LogsBatchIdx()
    t, _ = fit(num_batches=7, val_batches=None, model=model, max_epochs=1, log_every_n_steps=3)
    assert model.logged_at_start == [None, None, None, 2.0, 2.0, 2.0, 5.0]
    assert model.callback_at_end == [float(i) for i in range(7)]  # callbacks see every step
    assert float(t.logged_metrics["idx"]) == 5.0  # batch 6 was not a logging step


def test_log_every_n_steps_default_is_50() -> None:
    assert fk.Trainer().log_every_n_steps == 50
    model = LogsBatchIdx()
    t, _ = fit(num_batches=7, val_batches=None, model=model, max_epochs=1)
    assert "idx" not in t.logged_metrics


def test_log_every_n_steps_rejects_zero() -> None:
    with pytest.raises(MisconfigurationError, match="log_every_n_steps"):
        fk.Trainer(log_every_n_steps=0)


# -- global torch switches: deterministic, benchmark, inference_mode --------------------------------


class FlagProbe(Model):
    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[str, tuple[Any, ...]] = {}

    def _record(self, where: str) -> None:
        self.seen[where] = (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.benchmark,
            torch.is_inference_mode_enabled(),
            torch.is_grad_enabled(),
        )

    def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        self._record("train")
        return super().training_step(batch, batch_idx)

    def validation_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        self._record("validate")
        return super().validation_step(batch, batch_idx)

    def test_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        self._record("test")
        return super().test_step(batch, batch_idx)

    def predict_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        self._record("predict")
        return super().predict_step(batch, batch_idx)


def run_all(model: FlagProbe, **kwargs: Any) -> None:
    t = trainer(max_epochs=1, **kwargs)
    t.fit(model, loader(1), loader(1))
    t.test(model, loader(1), verbose=False)
    t.predict(model, loader(1))


@pytest.mark.parametrize(("value", "enabled", "warn_only"), [(True, True, False), ("warn", True, True)])
def test_deterministic_on_during_the_run_and_restored_after(value: Any, enabled: bool, warn_only: bool) -> None:
    torch.use_deterministic_algorithms(False)
    model = FlagProbe()
    run_all(model, deterministic=value)
    for where in ("train", "validate", "test", "predict"):
        assert model.seen[where][:2] == (enabled, warn_only), where
    assert not torch.are_deterministic_algorithms_enabled()


def test_deterministic_false_turns_it_off_for_the_run() -> None:
    torch.use_deterministic_algorithms(True)
    model = FlagProbe()
    run_all(model, deterministic=False)
    assert model.seen["train"][0] is False
    assert torch.are_deterministic_algorithms_enabled()


def test_deterministic_none_leaves_the_users_setting_alone() -> None:
    torch.use_deterministic_algorithms(True, warn_only=True)
    model = FlagProbe()
    run_all(model)
    assert model.seen["train"][:2] == (True, True)
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()


def test_deterministic_restored_after_an_exception() -> None:
    torch.use_deterministic_algorithms(False)

    class Boom(Model):
        def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        trainer(max_epochs=1, deterministic=True, benchmark=True).fit(Boom(), loader(1))
    assert not torch.are_deterministic_algorithms_enabled()
    assert torch.backends.cudnn.benchmark is False


def test_deterministic_rejects_bad_values() -> None:
    with pytest.raises(MisconfigurationError, match="deterministic"):
        fk.Trainer(deterministic="yes")


@pytest.mark.parametrize(("before", "value", "inside"), [(False, True, True), (True, False, False), (True, None, True)])
def test_benchmark_set_during_the_run_and_restored_after(before: bool, value: bool | None, inside: bool) -> None:
    torch.backends.cudnn.benchmark = before
    model = FlagProbe()
    run_all(model, benchmark=value)
    assert all(seen[2] is inside for seen in model.seen.values())
    assert torch.backends.cudnn.benchmark is before


def test_deterministic_turns_benchmark_off_unless_asked() -> None:
    # Lightning: "If deterministic is set to True, [benchmark] will default to False."
    torch.backends.cudnn.benchmark = True
    model = FlagProbe()
    run_all(model, deterministic=True)
    assert model.seen["train"][2] is False
    assert torch.backends.cudnn.benchmark is True
    model = FlagProbe()
    run_all(model, deterministic=True, benchmark=True)
    assert model.seen["train"][2] is True


def test_benchmark_rejects_bad_values() -> None:
    with pytest.raises(FitkitTypeError, match="benchmark"):
        fk.Trainer(benchmark="yes")


def test_inference_mode_true_runs_evaluation_in_inference_mode() -> None:
    model = FlagProbe()
    run_all(model)
    assert model.seen["train"][3:] == (False, True)
    for where in ("validate", "test", "predict"):
        assert model.seen[where][3:] == (True, False), where


def test_inference_mode_false_uses_no_grad_only() -> None:
    model = FlagProbe()
    run_all(model, inference_mode=False)
    for where in ("validate", "test", "predict"):
        assert model.seen[where][3:] == (False, False), where
    assert model.seen["train"][3:] == (False, True)


def test_inference_mode_false_allows_in_place_updates_of_outputs_later() -> None:
    # the point of inference_mode=False: tensors made in validation can be used in autograd afterwards
    kept: list[torch.Tensor] = []

    class Keep(Model):
        def validation_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
            kept.append(self(batch))

    trainer(inference_mode=False).validate(Keep(), loader(1), verbose=False)
    assert not kept[0].is_inference()
    trainer(inference_mode=True).validate(Keep(), loader(1), verbose=False)
    assert kept[1].is_inference()


def test_inference_mode_rejects_non_bools() -> None:
    with pytest.raises(FitkitTypeError, match="inference_mode"):
        fk.Trainer(inference_mode=1)


# -- arguments accepted now, active later -------------------------------------------------------------


def test_default_root_dir(tmp_path: Any) -> None:
    assert fk.Trainer().default_root_dir == str(tmp_path)  # the working directory (conftest chdirs here)
    assert fk.Trainer(default_root_dir=tmp_path / "runs").default_root_dir == str(tmp_path / "runs")
    assert fk.Trainer(default_root_dir="relative").default_root_dir == "relative"


def test_switches_accepted_and_the_run_works() -> None:
    t = fk.Trainer(
        enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False, logger=False, max_epochs=1
    )
    t.fit(Model(), loader(2))
    assert (t.enable_progress_bar, t.enable_checkpointing, t.enable_model_summary) == (False, False, False)
    assert t.logger is None and t.loggers == []
    assert t.state.finished
    t = fk.Trainer(logger=True, max_epochs=1)
    t.fit(Model(), loader(2))
    assert (t.enable_progress_bar, t.enable_checkpointing, t.enable_model_summary) == (True, True, True)
    assert fk.Trainer(logger=None).logger is None


@pytest.mark.parametrize("name", ["enable_progress_bar", "enable_checkpointing", "enable_model_summary"])
def test_switches_reject_non_bools(name: str) -> None:
    with pytest.raises(FitkitTypeError, match=name):
        fk.Trainer(**{name: "yes"})


def test_logger_objects_are_refused_until_loggers_ship() -> None:
    with pytest.raises(FitkitTypeError, match="logger"):
        fk.Trainer(logger=object())


@pytest.mark.parametrize(
    ("accelerator", "devices", "strategy", "precision"),
    [
        ("cpu", 1, "auto", "32-true"),
        ("auto", "auto", "auto", 32),
        ("cpu", "1", "single_device", "32"),
        ("auto", -1, "auto", "32-true"),
    ],
)
def test_device_arguments_accepted(accelerator: Any, devices: Any, strategy: Any, precision: Any) -> None:
    t = fk.Trainer(
        accelerator=accelerator,
        devices=devices,
        strategy=strategy,
        precision=precision,
        max_epochs=1,
        enable_progress_bar=False,
    )
    assert t.strategy.root_device == torch.device("cpu")
    assert t.precision == "32-true" and t.precision_plugin is t.strategy.precision
    assert t.world_size == 1 and t.global_rank == 0 and t.is_global_zero
    model = Model()
    t.fit(model, loader(2))
    assert model.device == torch.device("cpu")
    assert t.global_step == 2


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"accelerator": "ipu"}, "accelerator"),
        ({"devices": 0}, "devices"),
        ({"devices": 2, "strategy": "single_device"}, "devices"),
        ({"devices": True}, "devices"),
        ({"strategy": "ddp_unknown"}, "strategy"),
        ({"precision": "64-weird"}, "precision"),
        ({"precision": 8}, "precision"),
    ],
)
def test_device_arguments_reject_bad_values(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(MisconfigurationError, match=name):
        fk.Trainer(**kwargs)
