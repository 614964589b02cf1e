"""Every user error raises a fitkit exception with a message that helps.

Each test checks three things: the exception is a :class:`fitkit.FitkitError` that
is also the built-in type a caller would catch (``ValueError``/``TypeError``/
``RuntimeError``); the message names the argument, echoes the value and says what
is allowed; and, where the error can be found before training starts, that no
training work ran (``training_step`` was never called, the weights did not move).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import fitkit as fk
from fitkit.testing import BoringModule, RandomDataset, quiet_trainer

BUILTIN_ERRORS = (ValueError, TypeError, RuntimeError)


def _trainer(**kwargs: Any) -> fk.Trainer:
    defaults: dict[str, Any] = dict(
        max_epochs=1,
        num_sanity_val_steps=0,
        limit_train_batches=4,
        limit_val_batches=2,
    )
    return quiet_trainer(**{**defaults, **kwargs})


def _check(err: BaseException, *fragments: str, house_format: bool = True) -> None:
    """The error is a fitkit error of a built-in kind, and its message holds ``fragments``."""
    assert isinstance(err, fk.FitkitError), type(err).__mro__
    assert isinstance(err, BUILTIN_ERRORS), type(err).__mro__
    message = str(err)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    if house_format:
        assert "is not valid" in message and "Expected" in message, message


class Recorder(BoringModule):
    """A BoringModule that counts ``training_step`` calls and remembers its initial weights."""

    def __init__(self) -> None:
        super().__init__()
        self.train_calls = 0
        self.initial = [p.detach().clone() for p in self.parameters()]

    def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        self.train_calls += 1
        return super().training_step(batch, batch_idx)

    def assert_untouched(self) -> None:
        assert self.train_calls == 0
        for before, now in zip(self.initial, self.parameters(), strict=True):
            assert torch.equal(before, now)


# -- Trainer arguments: refused in the constructor ------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        ({"precision": "17"}, ["`precision='17'`", "'32-true'"]),
        ({"precision": 17}, ["`precision=17`", "'32-true'"]),
        ({"max_epochs": -2}, ["`max_epochs=-2`", ">= -1"]),
        ({"max_epochs": 1.5}, ["`max_epochs=1.5`", ">= -1"]),
        ({"min_epochs": -1}, ["`min_epochs=-1`", ">= 0"]),
        ({"max_steps": -5}, ["`max_steps=-5`", ">= -1"]),
        ({"min_steps": -1}, ["`min_steps=-1`", ">= 0"]),
        ({"accumulate_grad_batches": 0}, ["`accumulate_grad_batches=0`", ">= 1"]),
        ({"accumulate_grad_batches": 2.0}, ["`accumulate_grad_batches=2.0`", ">= 1"]),
        ({"accelerator": "tpu9000"}, ["`accelerator='tpu9000'`", "'cpu'", "Accelerator instance"]),
        ({"strategy": "ddp_magic"}, ["`strategy='ddp_magic'`", "'single_device'", "Strategy instance"]),
        ({"devices": 0}, ["`devices=0`", ">= 1"]),
        ({"devices": -3}, ["`devices=-3`", ">= 1"]),
        ({"devices": "two"}, ["`devices='two'`", ">= 1"]),
        ({"devices": 2, "strategy": "single_device"}, ["`strategy='single_device'`", "devices=2", "ddp"]),
        ({"limit_train_batches": -1}, ["`limit_train_batches=-1`", "[0.0, 1.0]"]),
        ({"limit_train_batches": 1.5}, ["`limit_train_batches=1.5`", "[0.0, 1.0]"]),
        ({"limit_val_batches": "all"}, ["`limit_val_batches='all'`", "[0.0, 1.0]"]),
        ({"limit_test_batches": -0.5}, ["`limit_test_batches=-0.5`", "[0.0, 1.0]"]),
        ({"limit_predict_batches": 2.0}, ["`limit_predict_batches=2.0`", "[0.0, 1.0]"]),
        ({"overfit_batches": -1}, ["`overfit_batches=-1`", ">= 0"]),
        ({"val_check_interval": 0}, ["`val_check_interval=0`", "(0.0, 1.0]"]),
        ({"val_check_interval": 1.5}, ["`val_check_interval=1.5`", "(0.0, 1.0]"]),
        ({"check_val_every_n_epoch": 0}, ["`check_val_every_n_epoch=0`", ">= 1"]),
        ({"check_val_every_n_epoch": None}, ["`check_val_every_n_epoch=None`", "int val_check_interval"]),
        ({"num_sanity_val_steps": -2}, ["`num_sanity_val_steps=-2`", ">= -1"]),
        ({"fast_dev_run": -1}, ["`fast_dev_run=-1`", "int >= 0"]),
        ({"gradient_clip_algorithm": "foo"}, ["`gradient_clip_algorithm='foo'`", "'norm'", "'value'"]),
        ({"gradient_clip_val": -1.0}, ["`gradient_clip_val=-1.0`", ">= 0"]),
        ({"gradient_clip_val": "big"}, ["`gradient_clip_val='big'`", ">= 0"]),
        ({"log_every_n_steps": 0}, ["`log_every_n_steps=0`", ">= 1"]),
        ({"max_time": "bogus"}, ["`max_time='bogus'`", "DD:HH:MM:SS"]),
        ({"max_time": "00:00:00:00"}, ["`max_time='00:00:00:00'`", "positive"]),
        ({"max_time": {"hourz": 1}}, ["`max_time={'hourz': 1}`", "timedelta"]),
        ({"max_time": dt.timedelta(seconds=-1)}, ["max_time=", "positive"]),
        ({"max_time": 3.5}, ["`max_time=3.5`", "DD:HH:MM:SS"]),
        ({"deterministic": "yes"}, ["`deterministic='yes'`", "'warn'"]),
        ({"benchmark": "yes"}, ["`benchmark='yes'`", "True or False"]),
        ({"inference_mode": 1}, ["`inference_mode=1`", "True or False"]),
        ({"enable_progress_bar": "no"}, ["`enable_progress_bar='no'`", "True or False"]),
        ({"logger": "csv"}, ["`logger='csv'`", "a fitkit Logger"]),
    ],
)
def test_trainer_argument_errors(kwargs: dict[str, Any], fragments: list[str]) -> None:
    with pytest.raises(fk.FitkitError) as info:
        fk.Trainer(**kwargs)
    _check(info.value, *fragments)


def test_argument_errors_are_catchable_as_builtin_types() -> None:
    with pytest.raises(ValueError, match="precision"):
        fk.Trainer(precision="17")
    with pytest.raises(TypeError, match="logger"):
        fk.Trainer(logger="csv")


def test_unhashable_precision_is_a_fitkit_error() -> None:
    with pytest.raises(fk.FitkitError) as info:
        fk.Trainer(precision=["32"])
    _check(info.value, "`precision=['32']`", "'32-true'")


def test_callbacks_must_be_callbacks() -> None:
    thing = object()
    with pytest.raises(fk.FitkitError) as info:
        fk.Trainer(callbacks=[thing])
    _check(info.value, f"callbacks={thing!r}", "Callback")


@pytest.mark.parametrize("callbacks", [object(), "abc", 3])
def test_callbacks_must_be_a_list(callbacks: Any) -> None:
    with pytest.raises(fk.FitkitError) as info:
        fk.Trainer(callbacks=callbacks)
    _check(info.value, f"callbacks={callbacks!r}", "Callback")


def test_callback_hook_typo_suggests_the_real_hook() -> None:
    class Typo(fk.Callback):
        def on_train_epoch_ned(self, trainer: Any, module: Any) -> None: ...

    with pytest.raises(fk.FitkitError) as info:
        fk.Trainer(callbacks=[Typo()])
    _check(info.value, "Typo.on_train_epoch_ned", "on_train_epoch_end")


# -- fit(): refused after set-up, before the first training_step ------------------------------------------
def test_val_check_interval_larger_than_the_training_loader() -> None:
    model = Recorder()
    with pytest.raises(fk.FitkitError) as info:
        _trainer(val_check_interval=10, limit_train_batches=4).fit(model)
    _check(info.value, "`val_check_interval=10`", "4 training batches", "check_val_every_n_epoch=None")
    model.assert_untouched()


def test_empty_training_loader() -> None:
    model = Recorder()
    loader = DataLoader(RandomDataset(32, 0), batch_size=2)
    with pytest.raises(fk.FitkitError) as info:
        _trainer().fit(model, loader)
    _check(info.value, "train_dataloaders=", "no batches", "at least one batch")
    model.assert_untouched()


def test_empty_training_iterable_without_len() -> None:
    class Empty:
        def __iter__(self) -> Iterator[Any]:
            return iter(())

    model = Recorder()
    with pytest.raises(fk.FitkitError) as info:
        _trainer(limit_train_batches=None).fit(model, Empty())
    _check(info.value, "train_dataloaders=", "no batches", "at least one batch")
    model.assert_untouched()


def test_fraction_of_train_batches_that_rounds_to_zero() -> None:
    model = Recorder()
    with pytest.raises(fk.FitkitError) as info:
        _trainer(limit_train_batches=0.01).fit(model)
    _check(info.value, "`limit_train_batches=0.01`", "rounds down to none")
    model.assert_untouched()


def test_fit_without_training_data() -> None:
    class NoData(fk.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(2, 1)

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            raise AssertionError("training_step must not run")

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    with pytest.raises(fk.FitkitError) as info:
        _trainer().fit(NoData())
    _check(info.value, "`train_dataloaders=None`", "DataLoader", "DataModule")


def test_fit_with_several_training_loaders() -> None:
    model = Recorder()
    loader = DataLoader(RandomDataset(32, 8), batch_size=2)
    with pytest.raises(fk.FitkitError) as info:
        _trainer().fit(model, [loader, loader])
    _check(info.value, "`train_dataloaders='list'`", "one iterable")
    model.assert_untouched()


def test_fit_rejects_a_plain_nn_module() -> None:
    with pytest.raises(fk.FitkitError) as info:
        _trainer().fit(nn.Linear(2, 2))  # type: ignore[arg-type]
    _check(info.value, "`model='Linear'`", "fitkit.Module")
    assert isinstance(info.value, TypeError)


def test_fit_rejects_a_non_datamodule() -> None:
    model = Recorder()
    with pytest.raises(fk.FitkitError) as info:
        _trainer().fit(model, datamodule=object())  # type: ignore[arg-type]
    _check(info.value, "`datamodule='object'`", "fitkit.DataModule")
    model.assert_untouched()


@pytest.mark.parametrize("method", ["validate", "test", "predict"])
def test_evaluation_without_a_model(method: str) -> None:
    with pytest.raises(fk.FitkitError) as info:
        getattr(_trainer(), method)()
    _check(info.value, "`model=None`", "fitkit.Module", f"`{method}`")


@pytest.mark.parametrize("method", ["fit", "validate", "test", "predict"])
def test_missing_ckpt_path_is_refused_before_training(method: str) -> None:
    model = Recorder()
    with pytest.raises(fk.FitkitError) as info:
        getattr(_trainer(), method)(model, ckpt_path="missing.ckpt")
    _check(info.value, "`ckpt_path='missing.ckpt'`", "no such file")
    model.assert_untouched()


@pytest.mark.parametrize("which", ["best", "last"])
def test_best_or_last_without_a_checkpoint_callback_is_refused(which: str) -> None:
    model = Recorder()
    with pytest.raises(fk.FitkitError) as info:
        _trainer().fit(model, ckpt_path=which)
    _check(info.value, f"`ckpt_path='{which}'`", "ModelCheckpoint")
    model.assert_untouched()


def test_validate_without_validation_data() -> None:
    class NoVal(Recorder):
        val_dataloader = None  # type: ignore[assignment]

    with pytest.raises(fk.FitkitError) as info:
        _trainer().validate(NoVal())
    _check(info.value, "`dataloaders=None`", "validate() found no data", "val_dataloader()")


def test_several_val_loaders_need_a_dataloader_idx_argument() -> None:
    class OneLoaderStep(Recorder):
        def validation_step(self, batch: Any, batch_idx: int) -> Any:  # type: ignore[override]
            return None

    loader = DataLoader(RandomDataset(32, 4), batch_size=2)
    with pytest.raises(fk.FitkitError) as info:
        _trainer().validate(OneLoaderStep(), [loader, loader], verbose=False)
    _check(info.value, "`validation_step()='2 loaders'`", "dataloader_idx=0")


# -- configure_optimizers ---------------------------------------------------------------------------------
def _module_returning(result: Any) -> type[Recorder]:
    class Configured(Recorder):
        def configure_optimizers(self) -> Any:
            return result(self) if callable(result) else result

    return Configured


def test_configure_optimizers_missing() -> None:
    class NoOptimizer(fk.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(32, 2)
            self.train_calls = 0

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            self.train_calls += 1
            return self.layer(batch).sum()

    model = NoOptimizer()
    loader = DataLoader(RandomDataset(32, 4), batch_size=2)
    with pytest.raises(fk.FitkitError) as info:
        _trainer().fit(model, loader)
    _check(info.value, "NoOptimizer", "configure_optimizers", "Expected", house_format=False)
    assert model.train_calls == 0


def _sgd(module: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(module.parameters(), lr=0.1)


@pytest.mark.parametrize(
    ("result", "fragments"),
    [
        (None, ["`configure_optimizers()=None`", "an optimizer", "'lr_scheduler'"]),
        ("adam", ["`configure_optimizers()='adam'`", "an optimizer"]),
        ([], ["`configure_optimizers()=[]`", "an optimizer"]),
        ([1], ["`configure_optimizers()=1`", "torch.optim.Optimizer"]),
        (
            lambda m: {"lr_scheduler": torch.optim.lr_scheduler.StepLR(_sgd(m), 1)},
            ["configure_optimizers()=", "no 'optimizer' key"],
        ),
        (
            lambda m: {"optimizer": _sgd(m), "lr_schedular": None},
            ["`configure_optimizers()=['lr_schedular']`", "'optimizer', 'lr_scheduler' and 'monitor'"],
        ),
        (lambda m: {"optimizer": "sgd"}, ["`configure_optimizers()='sgd'`", "torch.optim.Optimizer"]),
    ],
)
def test_configure_optimizers_returns_something_unusable(result: Any, fragments: list[str]) -> None:
    model = _module_returning(result)()
    with pytest.raises(fk.FitkitError) as info:
        _trainer().fit(model)
    _check(info.value, *fragments)
    model.assert_untouched()


def _with_scheduler(scheduler: Any) -> Any:
    def build(m: nn.Module) -> Any:
        opt = _sgd(m)
        return {"optimizer": opt, "lr_scheduler": scheduler(opt)}

    return build


@pytest.mark.parametrize(
    ("result", "fragments"),
    [
        (
            _with_scheduler(lambda o: {"scheduler": torch.optim.lr_scheduler.StepLR(o, 1), "interval": "fortnight"}),
            ["`lr_scheduler['interval']='fortnight'`", "'epoch' or 'step'"],
        ),
        (
            _with_scheduler(lambda o: {"scheduler": torch.optim.lr_scheduler.StepLR(o, 1), "frequency": 0}),
            ["`lr_scheduler['frequency']=0`", "int >= 1"],
        ),
        (
            _with_scheduler(lambda o: {"scheduler": torch.optim.lr_scheduler.StepLR(o, 1), "intervall": "step"}),
            ["`lr_scheduler=['intervall']`", "'interval'"],
        ),
        (_with_scheduler(lambda o: {"interval": "step"}), ["lr_scheduler=", "no 'scheduler' key"]),
        (_with_scheduler(lambda o: "cosine"), ["`lr_scheduler='cosine'`", "step() method"]),
        (
            _with_scheduler(lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o)),
            ["`lr_scheduler['monitor']=None`", "ReduceLROnPlateau", "'monitor': 'val_loss'"],
        ),
    ],
)
def test_bad_scheduler_config(result: Any, fragments: list[str]) -> None:
    model = _module_returning(result)()
    with pytest.raises(fk.FitkitError) as info:
        _trainer().fit(model)
    _check(info.value, *fragments)
    model.assert_untouched()


def test_scheduler_of_an_optimizer_that_was_not_returned() -> None:
    def build(m: nn.Module) -> Any:
        other = torch.optim.Adam(m.parameters())
        return {"optimizer": _sgd(m), "lr_scheduler": torch.optim.lr_scheduler.StepLR(other, 1)}

    model = _module_returning(build)()
    with pytest.raises(fk.FitkitError) as info:
        _trainer().fit(model)
    _check(info.value, "Adam", "did not return", house_format=False)
    model.assert_untouched()


def test_two_optimizers_in_automatic_optimization() -> None:
    model = _module_returning(lambda m: [_sgd(m), torch.optim.Adam(m.parameters())])()
    with pytest.raises(fk.FitkitError) as info:
        _trainer().fit(model)
    _check(info.value, "`configure_optimizers()='2 optimizers'`", "automatic_optimization = False")
    model.assert_untouched()


def test_plateau_monitor_never_logged_lists_the_logged_keys() -> None:
    def build(m: nn.Module) -> Any:
        opt = _sgd(m)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": plateau, "monitor": "val_los"}}

    model = _module_returning(build)()
    with pytest.raises(fk.FitkitError) as info:
        _trainer().fit(model)
    _check(info.value, "`lr_scheduler['monitor']='val_los'`", "['val_loss']", "'strict': False")


def test_plateau_monitor_not_strict_skips_the_step() -> None:
    def build(m: nn.Module) -> Any:
        opt = _sgd(m)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": plateau, "monitor": "nope", "strict": False}}

    _trainer().fit(_module_returning(build)())


def test_closure_optimizer_cannot_accumulate() -> None:
    model = _module_returning(lambda m: torch.optim.LBFGS(m.parameters()))()
    with pytest.raises(fk.FitkitError) as info:
        _trainer(accumulate_grad_batches=2).fit(model)
    _check(info.value, "`accumulate_grad_batches=2`", "LBFGS.step needs a closure", "Expected 1")
    model.assert_untouched()


@pytest.mark.parametrize(
    ("kwargs", "fragments"),
    [
        ({"accumulate_grad_batches": 2}, ["`accumulate_grad_batches=2`", "automatic_optimization=False"]),
        ({"gradient_clip_val": 1.0}, ["`gradient_clip_val=1.0`", "self.clip_gradients"]),
    ],
)
def test_manual_optimization_refuses_automatic_settings(kwargs: dict[str, Any], fragments: list[str]) -> None:
    class Manual(Recorder):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False

    model = Manual()
    with pytest.raises(fk.FitkitError) as info:
        _trainer(**kwargs).fit(model)
    _check(info.value, *fragments)
    model.assert_untouched()


# -- what training_step returns ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("output", "fragments"),
    [
        (lambda m, b: m(b), ["`training_step() loss=(2, 2)`", "scalar tensor"]),
        (lambda m, b: "hello", ["`training_step() result='hello'`", "'loss'"]),
        (lambda m, b: 3, ["`training_step() result=3`", "'loss'"]),
        (lambda m, b: {"los": m(b).sum()}, ["training_step() result=", "'los'", "'loss' tensor"]),
        (lambda m, b: {"loss": 1.0}, ["`training_step() loss='float'`", "scalar tensor"]),
        (lambda m, b: {"loss": m(b)}, ["`training_step() loss=(2, 2)`", "scalar tensor"]),
    ],
)
def test_training_step_returns_something_unusable(output: Any, fragments: list[str]) -> None:
    class Bad(Recorder):
        def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
            self.train_calls += 1
            return output(self, batch)

    model = Bad()
    with pytest.raises(fk.FitkitError) as info:
        _trainer().fit(model)
    _check(info.value, *fragments)
    assert model.train_calls == 1  # refused at the first batch
    for before, now in zip(model.initial, model.parameters(), strict=True):
        assert torch.equal(before, now)  # and no optimizer step happened


# -- self.log -------------------------------------------------------------------------------------------
def _logging_in_training_step(*log_calls: tuple[tuple[Any, ...], dict[str, Any]]) -> Recorder:
    class Logs(Recorder):
        def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
            for a, kw in log_calls:
                self.log(*a, **kw)
            return super().training_step(batch, batch_idx)

    return Logs()


@pytest.mark.parametrize(
    ("log_calls", "fragments"),
    [
        ([(("x", torch.ones(3)), {})], ["`self.log('x', value)='tensor of shape (3,)'`", "scalar tensor"]),
        ([(("x", torch.ones(2, 2)), {})], ["shape (2, 2)", "Python number"]),
        ([(("x", "abc"), {})], ["`self.log('x', value)='abc'`", "not numeric", "update/compute/reset"]),
        ([(("x", None), {})], ["`self.log('x', value)=None`", "not numeric"]),
        ([(("x", torch.tensor(1 + 1j)), {})], ["self.log('x', value)", "complex", "real number"]),
        (
            [(("x", 1.0), {"reduce_fx": "mean"}), (("x", 1.0), {"reduce_fx": "max"})],
            ["`self.log('x', reduce_fx=...)='max'`", "already logged with reduce_fx='mean'", "one reduce_fx per name"],
        ),
        (
            [(("x", 1.0), {"reduce_fx": "median"})],
            ["`self.log('x', reduce_fx=...)='median'`", "'mean', 'sum', 'max' or 'min'"],
        ),
        ([(("x", 1.0), {"on_step": False, "on_epoch": False})], ["on_step=False, on_epoch=False", "go nowhere"]),
        ([(("", 1.0), {})], ["`self.log(name)=''`", "a str"]),
        ([((3, 1.0), {})], ["`self.log(name)=3`", "a str"]),
    ],
)
def test_bad_log_calls(log_calls: list[tuple[tuple[Any, ...], dict[str, Any]]], fragments: list[str]) -> None:
    model = _logging_in_training_step(*log_calls)
    with pytest.raises(fk.FitkitError) as info:
        _trainer().fit(model)
    _check(info.value, *fragments)
    for before, now in zip(model.initial, model.parameters(), strict=True):
        assert torch.equal(before, now)


def test_reduce_fx_conflict_across_hooks() -> None:
    class TwoHooks(Recorder):
        def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
            self.log("x", 1.0, on_epoch=True, reduce_fx="sum")
            return super().training_step(batch, batch_idx)

        def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
            self.log("x", 1.0, on_epoch=True, reduce_fx="min")

    with pytest.raises(fk.FitkitError) as info:
        _trainer().fit(TwoHooks())
    _check(info.value, "`self.log('x', reduce_fx=...)='min'`", "already logged with reduce_fx='sum'")


def test_log_from_on_fit_start() -> None:
    class LogsTooEarly(Recorder):
        def on_fit_start(self) -> None:
            self.log("x", 1.0)

    model = LogsTooEarly()
    with pytest.raises(fk.FitkitError) as info:
        _trainer().fit(model)
    _check(info.value, "self.log('x', ...)", "`on_fit_start`", "not supported", "training_step", house_format=False)
    assert isinstance(info.value, RuntimeError)
    model.assert_untouched()


@pytest.mark.parametrize("hook", ["setup", "on_train_end", "on_validation_end", "on_fit_end"])
def test_log_from_other_hooks_that_cannot_log(hook: str) -> None:
    def logs(self: Any, *args: Any) -> None:
        self.log("x", 1.0)

    model = type("LogsHere", (Recorder,), {hook: logs})()
    with pytest.raises(fk.FitkitError) as info:
        _trainer().fit(model)
    _check(info.value, f"`{hook}`", "not supported", house_format=False)


def test_log_from_configure_optimizers() -> None:
    class LogsInConfigure(Recorder):
        def configure_optimizers(self) -> Any:
            self.log("lr", 0.1)
            return super().configure_optimizers()

    model = LogsInConfigure()
    with pytest.raises(fk.FitkitError) as info:
        _trainer().fit(model)
    _check(info.value, "`configure_optimizers`", "not supported", house_format=False)
    model.assert_untouched()


def test_log_from_predict_step() -> None:
    class LogsInPredict(Recorder):
        def predict_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
            self.log("x", 1.0)
            return self(batch)

    with pytest.raises(fk.FitkitError) as info:
        _trainer().predict(LogsInPredict())
    _check(info.value, "`predict_step`", "not supported", "validation_step", house_format=False)


def test_log_from_a_callback_hook_that_cannot_log() -> None:
    class LogsOnSanity(fk.Callback):
        def on_sanity_check_start(self, trainer: Any, module: Any) -> None:
            module.log("x", 1.0)

    model = Recorder()
    with pytest.raises(fk.FitkitError) as info:
        _trainer(callbacks=[LogsOnSanity()], num_sanity_val_steps=1).fit(model)
    _check(info.value, "`on_sanity_check_start`", "not supported", house_format=False)
    model.assert_untouched()


def test_log_without_a_trainer() -> None:
    with pytest.raises(fk.FitkitError) as info:
        BoringModule().log("x", 1.0)
    _check(info.value, "self.log('x', ...)", "Trainer", house_format=False)
    assert isinstance(info.value, RuntimeError)


# -- Module calls made at the wrong time ------------------------------------------------------------------
def test_optimizers_before_fit() -> None:
    with pytest.raises(fk.FitkitError) as info:
        BoringModule().optimizers()
    _check(info.value, "self.optimizers()", "trainer.fit()", house_format=False)
    assert isinstance(info.value, RuntimeError)


def test_lr_schedulers_before_fit() -> None:
    with pytest.raises(fk.FitkitError) as info:
        BoringModule().lr_schedulers()
    _check(info.value, "self.lr_schedulers()", "trainer.fit()", house_format=False)


def test_trainer_when_detached() -> None:
    with pytest.raises(fk.FitkitError) as info:
        _ = BoringModule().trainer
    _check(info.value, "BoringModule", "not attached to a Trainer", house_format=False)
    assert isinstance(info.value, RuntimeError)


def test_manual_backward_when_detached() -> None:
    model = BoringModule()
    loss = model(torch.randn(2, 32)).sum()
    with pytest.raises(fk.FitkitError, match="not attached to a Trainer"):
        model.manual_backward(loss)


def test_training_step_not_overridden() -> None:
    class NoStep(fk.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(32, 2)

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    loader = DataLoader(RandomDataset(32, 4), batch_size=2)
    with pytest.raises(fk.FitkitError) as info:
        _trainer().fit(NoStep(), loader)
    _check(info.value, "NoStep", "training_step", house_format=False)


def test_distributed_arguments_are_checked() -> None:
    with pytest.raises(fk.MisconfigurationError, match="num_nodes"):
        fk.Trainer(num_nodes=0)
    with pytest.raises(fk.FitkitTypeError, match="use_distributed_sampler"):
        fk.Trainer(use_distributed_sampler="yes")
    with pytest.raises(fk.FitkitTypeError, match="sync_batchnorm"):
        fk.Trainer(sync_batchnorm=1)
    trainer = fk.Trainer(num_nodes=1, use_distributed_sampler=False, sync_batchnorm=False)
    assert (trainer.num_nodes, trainer.use_distributed_sampler, trainer.sync_batchnorm) == (1, False, False)
