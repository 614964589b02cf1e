"""The bad-input catalogue: every user mistake fitkit refuses, as data, one test each.

``CASES`` lists each mistake as a :class:`Case`: what the user did (the ``input``
column of the table in ``docs/errors.md``), a callable that does it, the exact
exception class, and a regex its message must match. ``test_bad_input`` runs each
one and checks that the error is a :class:`fitkit.FitkitError` that is also the
built-in type a caller would catch (``ValueError``/``TypeError``/``RuntimeError``),
that the message has the house form (names the argument, echoes the value, says
what is allowed), and, where the error can be found before training, that no
training work ran (``training_step`` was not called, the weights did not move).
``test_the_docs_table_is_the_catalogue`` holds ``docs/errors.md`` to the list;
``python tests/_errors_table.py`` rewrites that table from it.

The few errors that are not fitkit's own (a ``TypeError`` from torch on a batch of
strings) keep their type: fitkit adds a note instead of wrapping them.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import fitkit as fk
from fitkit.accelerators.device_parser import parse_device_indices
from fitkit.callbacks import EarlyStopping, ModelCheckpoint
from fitkit.testing import BoringModule, RandomDataset, quiet_trainer

BUILTIN_ERRORS = (ValueError, TypeError, RuntimeError)
MCE, FTE, FRE = fk.MisconfigurationError, fk.FitkitTypeError, fk.FitkitRuntimeError


# -- the pieces a case is built from ----------------------------------------------------------------------
class Recorder(BoringModule):
    """A BoringModule that counts ``training_step`` calls and remembers its initial weights."""

    def __init__(self) -> None:
        super().__init__()
        self.train_calls = 0
        self.initial = [p.detach().clone() for p in self.parameters()]

    def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        self.train_calls += 1
        return super().training_step(batch, batch_idx)

    def weights_moved(self) -> bool:
        return any(not torch.equal(a, b) for a, b in zip(self.initial, self.parameters(), strict=True))


class Ctx:
    """What a case's trigger gets: a scratch folder, and a place to register the models it builds."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.models: list[Recorder] = []

    def model(self, cls: type[Recorder] = Recorder) -> Recorder:
        m = cls()
        self.models.append(m)
        return m

    def checkpoint(self, name: str = "good.ckpt", **changes: Any) -> Path:
        """A real checkpoint of a fitted ``Recorder`` (with ``changes`` written into its dict)."""
        path = self.tmp / name
        trainer = _trainer(max_steps=1)
        trainer.fit(Recorder())
        trainer.save_checkpoint(path)
        if changes:
            data = torch.load(path, weights_only=True)
            data.update(changes)
            torch.save(data, path)
        return path

    def payload(self, name: str = "evil.ckpt") -> Path:
        """A checkpoint-shaped pickle whose loading would write ``<tmp>/pwned``."""
        path = self.tmp / name
        torch.save({"format_version": 1, "state_dict": {}, "x": Payload(str(self.tmp / "pwned"))}, path)
        return path


class Payload:
    """Unpickling it with plain ``torch.load`` runs code: it writes a marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def _trainer(**kwargs: Any) -> fk.Trainer:
    defaults: dict[str, Any] = dict(max_epochs=1, num_sanity_val_steps=0, limit_train_batches=4, limit_val_batches=2)
    return quiet_trainer(**{**defaults, **kwargs})


def _loader(n: int = 8) -> DataLoader[torch.Tensor]:
    return DataLoader(RandomDataset(32, n), batch_size=2)


def _has(*fragments: str) -> str:
    """A regex that matches text holding every fragment, in any order."""
    return "(?s)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments)


@dataclass(frozen=True)
class Case:
    """One bad input: what the user did, how to do it, and what fitkit must answer."""

    id: str
    input: str  # what the user did: the table's "input" column
    trigger: Callable[[Ctx], object]
    error: type[BaseException]  # the exact class raised
    message: str  # a regex searched in the message (and its notes)
    steps: int | None = 0  # training_step calls before the error (None: not checked)
    house: bool = True  # "`arg=value` is not valid: why. Expected ..."
    skip: str | None = None  # why this machine cannot show it


CASES: list[Case] = []


def case(*args: Any, **kwargs: Any) -> None:
    CASES.append(Case(*args, **kwargs))


def _call_repr(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


# -- Trainer arguments: refused in the constructor -------------------------------------------------------
_TRAINER_ARGS: list[tuple[str, dict[str, Any], list[str], type[BaseException]]] = [
    ("precision-unknown", {"precision": "17"}, ["`precision='17'`", "'32-true'"], MCE),
    ("precision-int", {"precision": 17}, ["`precision=17`", "'32-true'"], MCE),
    ("precision-unhashable", {"precision": ["32"]}, ["`precision=['32']`", "'32-true'"], MCE),
    ("max-epochs-negative", {"max_epochs": -2}, ["`max_epochs=-2`", ">= -1"], MCE),
    ("max-epochs-float", {"max_epochs": 1.5}, ["`max_epochs=1.5`", ">= -1"], MCE),
    ("min-epochs-negative", {"min_epochs": -1}, ["`min_epochs=-1`", ">= 0"], MCE),
    ("max-steps-negative", {"max_steps": -5}, ["`max_steps=-5`", ">= -1"], MCE),
    ("min-steps-negative", {"min_steps": -1}, ["`min_steps=-1`", ">= 0"], MCE),
    ("accumulate-zero", {"accumulate_grad_batches": 0}, ["`accumulate_grad_batches=0`", ">= 1"], MCE),
    ("accumulate-float", {"accumulate_grad_batches": 2.0}, ["`accumulate_grad_batches=2.0`", ">= 1"], MCE),
    (
        "accelerator-unknown",
        {"accelerator": "tpu9000"},
        ["`accelerator='tpu9000'`", "'cpu'", "Accelerator instance"],
        MCE,
    ),
    ("strategy-unknown", {"strategy": "ddp_magic"}, ["`strategy='ddp_magic'`", "'single_device'"], MCE),
    ("devices-zero", {"devices": 0}, ["`devices=0`", ">= 1"], MCE),
    ("devices-negative", {"devices": -3}, ["`devices=-3`", ">= 1"], MCE),
    ("devices-word", {"devices": "two"}, ["`devices='two'`", ">= 1"], MCE),
    ("devices-cpu-index-list", {"accelerator": "cpu", "devices": [5]}, ["`devices=[5]`", "counts processes"], MCE),
    (
        "single-device-two-devices",
        {"devices": 2, "strategy": "single_device"},
        ["`strategy='single_device'`", "devices=2", "ddp"],
        MCE,
    ),
    ("num-nodes-zero", {"num_nodes": 0}, ["`num_nodes=0`"], MCE),
    ("limit-train-negative", {"limit_train_batches": -1}, ["`limit_train_batches=-1`", "[0.0, 1.0]"], MCE),
    ("limit-train-above-one", {"limit_train_batches": 1.5}, ["`limit_train_batches=1.5`", "[0.0, 1.0]"], MCE),
    ("limit-val-word", {"limit_val_batches": "all"}, ["`limit_val_batches='all'`", "[0.0, 1.0]"], MCE),
    ("limit-test-negative", {"limit_test_batches": -0.5}, ["`limit_test_batches=-0.5`", "[0.0, 1.0]"], MCE),
    ("limit-predict-float", {"limit_predict_batches": 2.0}, ["`limit_predict_batches=2.0`", "[0.0, 1.0]"], MCE),
    ("overfit-negative", {"overfit_batches": -1}, ["`overfit_batches=-1`", ">= 0"], MCE),
    ("val-check-zero", {"val_check_interval": 0}, ["`val_check_interval=0`", "(0.0, 1.0]"], MCE),
    ("val-check-above-one", {"val_check_interval": 1.5}, ["`val_check_interval=1.5`", "(0.0, 1.0]"], MCE),
    ("check-val-every-zero", {"check_val_every_n_epoch": 0}, ["`check_val_every_n_epoch=0`", ">= 1"], MCE),
    (
        "check-val-every-none",
        {"check_val_every_n_epoch": None},
        ["`check_val_every_n_epoch=None`", "int val_check_interval"],
        MCE,
    ),
    ("sanity-steps-negative", {"num_sanity_val_steps": -2}, ["`num_sanity_val_steps=-2`", ">= -1"], MCE),
    ("fast-dev-run-negative", {"fast_dev_run": -1}, ["`fast_dev_run=-1`", "int >= 0"], MCE),
    (
        "clip-algorithm-unknown",
        {"gradient_clip_algorithm": "foo"},
        ["`gradient_clip_algorithm='foo'`", "'norm'", "'value'"],
        MCE,
    ),
    ("clip-val-negative", {"gradient_clip_val": -1.0}, ["`gradient_clip_val=-1.0`", ">= 0"], MCE),
    ("clip-val-word", {"gradient_clip_val": "big"}, ["`gradient_clip_val='big'`", ">= 0"], MCE),
    ("log-every-zero", {"log_every_n_steps": 0}, ["`log_every_n_steps=0`", ">= 1"], MCE),
    ("max-time-bad-string", {"max_time": "bogus"}, ["`max_time='bogus'`", "DD:HH:MM:SS"], MCE),
    ("max-time-zero", {"max_time": "00:00:00:00"}, ["`max_time='00:00:00:00'`", "positive"], MCE),
    ("max-time-bad-dict", {"max_time": {"hourz": 1}}, ["`max_time={'hourz': 1}`", "timedelta"], MCE),
    ("max-time-negative", {"max_time": dt.timedelta(seconds=-1)}, ["max_time=", "positive"], MCE),
    ("max-time-float", {"max_time": 3.5}, ["`max_time=3.5`", "DD:HH:MM:SS"], FTE),
    ("deterministic-word", {"deterministic": "yes"}, ["`deterministic='yes'`", "'warn'"], MCE),
    ("benchmark-word", {"benchmark": "yes"}, ["`benchmark='yes'`", "True or False"], FTE),
    ("inference-mode-int", {"inference_mode": 1}, ["`inference_mode=1`", "True or False"], FTE),
    ("progress-bar-word", {"enable_progress_bar": "no"}, ["`enable_progress_bar='no'`", "True or False"], FTE),
    ("logger-string", {"logger": "csv"}, ["`logger='csv'`", "a fitkit Logger"], FTE),
    ("distributed-sampler-word", {"use_distributed_sampler": "yes"}, ["`use_distributed_sampler='yes'`"], FTE),
    ("sync-batchnorm-int", {"sync_batchnorm": 1}, ["`sync_batchnorm=1`"], FTE),
    ("callbacks-string", {"callbacks": "abc"}, ["callbacks='abc'", "Callback"], FTE),
    ("callbacks-int", {"callbacks": 3}, ["callbacks=3", "Callback"], FTE),
]
for _id, _kwargs, _fragments, _error in _TRAINER_ARGS:
    case(
        f"trainer-{_id}",
        f"`Trainer({_call_repr(_kwargs)})`",
        lambda ctx, kw=_kwargs: fk.Trainer(**kw),
        _error,
        _has(*_fragments),
    )


class TypoCallback(fk.Callback):
    def on_train_epoch_ned(self, trainer: Any, module: Any) -> None: ...


case(
    "trainer-callbacks-not-callbacks",
    "`Trainer(callbacks=[object()])`",
    lambda ctx: fk.Trainer(callbacks=[object()]),
    MCE,
    _has("callbacks=<object object", "Callback"),
)
case(
    "trainer-callbacks-object",
    "`Trainer(callbacks=object())`",
    lambda ctx: fk.Trainer(callbacks=object()),  # type: ignore[arg-type]
    FTE,
    _has("callbacks=<object object", "Callback"),
)
case(
    "trainer-callback-hook-typo",
    "a Callback defines `on_train_epoch_ned` (a typo)",
    lambda ctx: fk.Trainer(callbacks=[TypoCallback()]),
    MCE,
    _has("TypoCallback.on_train_epoch_ned", "on_train_epoch_end"),
)
case(
    "trainer-checkpointing-off-with-callback",
    "`Trainer(enable_checkpointing=False, callbacks=[ModelCheckpoint()])`",
    lambda ctx: fk.Trainer(enable_checkpointing=False, callbacks=[ModelCheckpoint()]),
    MCE,
    _has("enable_checkpointing", "ModelCheckpoint"),
)


# -- fit/validate/test/predict arguments: refused before the first step ----------------------------------
class EmptyIterable:
    def __iter__(self) -> Iterator[Any]:
        return iter(())


class NoData(Recorder):
    train_dataloader = None  # type: ignore[assignment]


class NoValData(Recorder):
    val_dataloader = None  # type: ignore[assignment]


class OneLoaderStep(Recorder):
    def validation_step(self, batch: Any, batch_idx: int) -> Any:  # type: ignore[override]
        return None


class NoValidationStep(Recorder):
    validation_step = fk.Module.validation_step
    test_step = fk.Module.test_step


class StringSteps(Recorder):
    """Feeds the batch to its layer as is: a batch of strings fails inside torch."""


case(
    "fit-val-check-interval-too-large",
    "`Trainer(val_check_interval=10, limit_train_batches=4).fit(model)`",
    lambda ctx: _trainer(val_check_interval=10).fit(ctx.model()),
    MCE,
    _has("`val_check_interval=10`", "4 training batches", "check_val_every_n_epoch=None"),
)
case(
    "data-empty-train-loader",
    "`fit(model, DataLoader(empty_dataset))`",
    lambda ctx: _trainer().fit(ctx.model(), _loader(0)),
    MCE,
    _has("train_dataloaders=", "no batches", "at least one batch"),
)
case(
    "data-empty-iterable-without-len",
    "`fit(model, iterable_that_yields_nothing)` (no `__len__`)",
    lambda ctx: _trainer(limit_train_batches=None).fit(ctx.model(), EmptyIterable()),
    MCE,
    _has("train_dataloaders=", "no batches", "at least one batch"),
)
case(
    "data-fraction-rounds-to-zero",
    "`Trainer(limit_train_batches=0.01)` with 32 training batches",
    lambda ctx: _trainer(limit_train_batches=0.01).fit(ctx.model()),
    MCE,
    _has("`limit_train_batches=0.01`", "rounds down to none"),
)
case(
    "data-no-training-data",
    "`fit(model)` where the model has no `train_dataloader`",
    lambda ctx: _trainer().fit(ctx.model(NoData)),
    MCE,
    _has("`train_dataloaders=None`", "DataLoader", "DataModule"),
)
case(
    "data-several-train-loaders",
    "`fit(model, [loader, loader])`",
    lambda ctx: _trainer().fit(ctx.model(), [_loader(), _loader()]),
    FTE,
    _has("`train_dataloaders='list'`", "one iterable"),
)
case(
    "data-train-not-iterable",
    "`fit(model, 42)`",
    lambda ctx: _trainer().fit(ctx.model(), 42),
    FTE,
    _has("`train_dataloaders=42`", "not iterable", "DataLoader"),
)
case(
    "data-val-not-iterable",
    "`fit(model, val_dataloaders=42)`",
    lambda ctx: _trainer().fit(ctx.model(), val_dataloaders=42),
    FTE,
    _has("`val_dataloaders=42`", "not iterable"),
)
case(
    "data-test-not-iterable",
    "`test(model, 42)`",
    lambda ctx: _trainer().test(ctx.model(), 42, verbose=False),
    FTE,
    _has("`dataloaders=42`", "not iterable"),
)
case(
    "data-endless-train-loader",
    "`fit(model, itertools.cycle(batches))` with no `max_steps`",
    lambda ctx: _trainer(limit_train_batches=None).fit(ctx.model(), itertools.cycle([torch.randn(2, 32)])),
    MCE,
    _has("`train_dataloaders='cycle'`", "never ends", "max_steps="),
)
case(
    "data-endless-test-loader",
    "`test(model, itertools.repeat(batch))` with no int `limit_test_batches`",
    lambda ctx: _trainer().test(ctx.model(), itertools.repeat(torch.randn(2, 32)), verbose=False),
    MCE,
    _has("`dataloaders='repeat'`", "never ends", "limit_test_batches"),
)
case(
    "data-batch-of-strings",
    "`fit(model, DataLoader(['a', 'b', 'c', 'd'], batch_size=2))`, a model that feeds batches to `nn.Linear`",
    lambda ctx: _trainer().fit(ctx.model(StringSteps), DataLoader(["a", "b", "c", "d"], batch_size=2)),
    TypeError,
    _has("must be Tensor", "fitkit: the batch given to training_step holds no tensor", "a list of 2 str"),
    steps=1,
    house=False,
)
case(
    "fit-plain-nn-module",
    "`fit(nn.Linear(2, 2))`",
    lambda ctx: _trainer().fit(nn.Linear(2, 2)),  # type: ignore[arg-type]
    FTE,
    _has("`model='Linear'`", "fitkit.Module"),
)
case(
    "fit-not-a-datamodule",
    "`fit(model, datamodule=object())`",
    lambda ctx: _trainer().fit(ctx.model(), datamodule=object()),  # type: ignore[arg-type]
    FTE,
    _has("`datamodule='object'`", "fitkit.DataModule"),
)
for _method in ("validate", "test", "predict"):
    case(
        f"{_method}-without-a-model",
        f"`Trainer().{_method}()` before any `fit`",
        lambda ctx, m=_method: getattr(_trainer(), m)(),
        MCE,
        _has("`model=None`", "fitkit.Module", f"`{_method}`"),
    )
case(
    "validate-without-validation-data",
    "`validate(model)` where the model has no `val_dataloader`",
    lambda ctx: _trainer().validate(ctx.model(NoValData)),
    MCE,
    _has("`dataloaders=None`", "validate() found no data", "val_dataloader()"),
)
case(
    "validate-without-validation-step",
    "`validate(model)` where the model has no `validation_step`",
    lambda ctx: _trainer().validate(ctx.model(NoValidationStep), verbose=False),
    MCE,
    _has("`model='NoValidationStep'`", "does not define `validation_step`", "nothing to run"),
)
case(
    "test-without-test-step",
    "`test(model)` where the model has no `test_step`",
    lambda ctx: _trainer().test(ctx.model(NoValidationStep), verbose=False),
    MCE,
    _has("`model='NoValidationStep'`", "does not define `test_step`"),
)
case(
    "validate-several-loaders-without-dataloader-idx",
    "`validate(model, [loader, loader])` with `validation_step(self, batch, batch_idx)`",
    lambda ctx: _trainer().validate(ctx.model(OneLoaderStep), [_loader(4), _loader(4)], verbose=False),
    MCE,
    _has("`validation_step()='2 loaders'`", "dataloader_idx=0"),
)


# -- configure_optimizers ---------------------------------------------------------------------------------
def _module_returning(result: Any) -> type[Recorder]:
    class Configured(Recorder):
        def configure_optimizers(self) -> Any:
            return result(self) if callable(result) else result

    return Configured


def _sgd(module: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(module.parameters(), lr=0.1)


def _with_scheduler(scheduler: Any) -> Any:
    def build(m: nn.Module) -> Any:
        opt = _sgd(m)
        return {"optimizer": opt, "lr_scheduler": scheduler(opt)}

    return build


def _step_lr(**config: Any) -> Any:
    return _with_scheduler(lambda o: {"scheduler": torch.optim.lr_scheduler.StepLR(o, 1), **config})


def _plateau(monitor: str) -> Any:
    return _with_scheduler(lambda o: {"scheduler": torch.optim.lr_scheduler.ReduceLROnPlateau(o), "monitor": monitor})


class NoOptimizer(Recorder):
    configure_optimizers = fk.Module.configure_optimizers


_OPTIMIZER_RESULTS: list[tuple[str, str, Any, list[str], type[BaseException]]] = [
    ("none", "returns `None`", None, ["`configure_optimizers()=None`", "an optimizer", "'lr_scheduler'"], MCE),
    ("string", "returns `'adam'`", "adam", ["`configure_optimizers()='adam'`", "an optimizer"], MCE),
    ("empty-list", "returns `[]`", [], ["`configure_optimizers()=[]`", "an optimizer"], MCE),
    ("list-of-int", "returns `[1]`", [1], ["`configure_optimizers()=1`", "torch.optim.Optimizer"], FTE),
    (
        "dict-without-optimizer",
        "returns `{'lr_scheduler': StepLR(...)}`",
        lambda m: {"lr_scheduler": torch.optim.lr_scheduler.StepLR(_sgd(m), 1)},
        ["configure_optimizers()=", "no 'optimizer' key"],
        MCE,
    ),
    (
        "dict-key-typo",
        "returns `{'optimizer': opt, 'lr_schedular': None}`",
        lambda m: {"optimizer": _sgd(m), "lr_schedular": None},
        ["`configure_optimizers()=['lr_schedular']`", "'optimizer', 'lr_scheduler' and 'monitor'"],
        MCE,
    ),
    (
        "optimizer-string",
        "returns `{'optimizer': 'sgd'}`",
        lambda m: {"optimizer": "sgd"},
        ["`configure_optimizers()='sgd'`", "torch.optim.Optimizer"],
        FTE,
    ),
    (
        "scheduler-interval",
        "returns a scheduler config with `'interval': 'fortnight'`",
        _step_lr(interval="fortnight"),
        ["`lr_scheduler['interval']='fortnight'`", "'epoch' or 'step'"],
        MCE,
    ),
    (
        "scheduler-frequency",
        "returns a scheduler config with `'frequency': 0`",
        _step_lr(frequency=0),
        ["`lr_scheduler['frequency']=0`", "int >= 1"],
        MCE,
    ),
    (
        "scheduler-key-typo",
        "returns a scheduler config with `'intervall': 'step'`",
        _step_lr(intervall="step"),
        ["`lr_scheduler=['intervall']`", "'interval'"],
        MCE,
    ),
    (
        "scheduler-missing",
        "returns a scheduler config without `'scheduler'`",
        _with_scheduler(lambda o: {"interval": "step"}),
        ["lr_scheduler=", "no 'scheduler' key"],
        MCE,
    ),
    (
        "scheduler-string",
        "returns `{'optimizer': opt, 'lr_scheduler': 'cosine'}`",
        _with_scheduler(lambda o: "cosine"),
        ["`lr_scheduler='cosine'`", "step() method"],
        FTE,
    ),
    (
        "plateau-without-monitor",
        "returns a `ReduceLROnPlateau` without `'monitor'`",
        _with_scheduler(lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o)),
        ["`lr_scheduler['monitor']=None`", "ReduceLROnPlateau", "'monitor': 'val_loss'"],
        MCE,
    ),
    (
        "two-optimizers-automatic",
        "returns two optimizers with automatic optimization",
        lambda m: [_sgd(m), torch.optim.Adam(m.parameters())],
        ["`configure_optimizers()='2 optimizers'`", "automatic_optimization = False"],
        MCE,
    ),
]
for _id, _what, _result, _fragments, _error in _OPTIMIZER_RESULTS:
    case(
        f"optim-{_id}",
        f"`configure_optimizers` {_what}",
        lambda ctx, r=_result: _trainer().fit(ctx.model(_module_returning(r))),
        _error,
        _has(*_fragments),
    )


def _foreign_scheduler(m: nn.Module) -> Any:
    other = torch.optim.Adam(m.parameters())
    return {"optimizer": _sgd(m), "lr_scheduler": torch.optim.lr_scheduler.StepLR(other, 1)}


class Manual(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False


case(
    "optim-missing",
    "a Module without `configure_optimizers`",
    lambda ctx: _trainer().fit(ctx.model(NoOptimizer)),
    MCE,
    _has("NoOptimizer", "configure_optimizers", "Expected"),
    house=False,
)
case(
    "optim-scheduler-of-another-optimizer",
    "a scheduler built on an optimizer `configure_optimizers` did not return",
    lambda ctx: _trainer().fit(ctx.model(_module_returning(_foreign_scheduler))),
    MCE,
    _has("Adam", "did not return"),
    house=False,
)
case(
    "optim-plateau-monitor-never-logged",
    "`ReduceLROnPlateau` with `'monitor': 'val_los'` (never logged)",
    lambda ctx: _trainer().fit(ctx.model(_module_returning(_plateau("val_los")))),
    MCE,
    _has("`lr_scheduler['monitor']='val_los'`", "['val_loss']", "'strict': False"),
    steps=None,
)
case(
    "optim-closure-optimizer-accumulating",
    "`LBFGS` with `Trainer(accumulate_grad_batches=2)`",
    lambda ctx: _trainer(accumulate_grad_batches=2).fit(
        ctx.model(_module_returning(lambda m: torch.optim.LBFGS(m.parameters())))
    ),
    MCE,
    _has("`accumulate_grad_batches=2`", "LBFGS.step needs a closure", "Expected 1"),
)
case(
    "optim-manual-with-accumulation",
    "manual optimization with `Trainer(accumulate_grad_batches=2)`",
    lambda ctx: _trainer(accumulate_grad_batches=2).fit(ctx.model(Manual)),
    MCE,
    _has("`accumulate_grad_batches=2`", "automatic_optimization=False"),
)
case(
    "optim-manual-with-clipping",
    "manual optimization with `Trainer(gradient_clip_val=1.0)`",
    lambda ctx: _trainer(gradient_clip_val=1.0).fit(ctx.model(Manual)),
    MCE,
    _has("`gradient_clip_val=1.0`", "self.clip_gradients"),
)


# -- what training_step returns ---------------------------------------------------------------------------
def _returning(output: Callable[[Recorder, Any], Any]) -> type[Recorder]:
    class Bad(Recorder):
        def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
            self.train_calls += 1
            return output(self, batch)

    return Bad


_STEP_OUTPUTS: list[tuple[str, str, Callable[[Recorder, Any], Any], list[str], type[BaseException]]] = [
    ("non-scalar", "the `(2, 2)` output tensor", lambda m, b: m(b), ["`training_step() loss=(2, 2)`", "scalar"], FTE),
    ("string", "`'hello'`", lambda m, b: "hello", ["`training_step() result='hello'`", "'loss'"], FTE),
    ("int", "`3`", lambda m, b: 3, ["`training_step() result=3`", "'loss'"], FTE),
    (
        "dict-key-typo",
        "`{'los': loss}`",
        lambda m, b: {"los": m(b).sum()},
        ["training_step() result=", "'los'", "'loss' tensor"],
        FTE,
    ),
    ("float-loss", "`{'loss': 1.0}`", lambda m, b: {"loss": 1.0}, ["`training_step() loss='float'`", "scalar"], FTE),
    (
        "dict-non-scalar",
        "`{'loss': output}` with a `(2, 2)` tensor",
        lambda m, b: {"loss": m(b)},
        ["`training_step() loss=(2, 2)`", "scalar tensor"],
        FTE,
    ),
]
for _id, _what, _output, _fragments, _error in _STEP_OUTPUTS:
    case(
        f"step-returns-{_id}",
        f"`training_step` returns {_what}",
        lambda ctx, o=_output: _trainer().fit(ctx.model(_returning(o))),
        _error,
        _has(*_fragments),
        steps=1,  # refused at the first batch, before any optimizer step
    )


class NoStep(fk.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(32, 2)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


case(
    "step-not-overridden",
    "a Module without `training_step`",
    lambda ctx: _trainer().fit(NoStep(), _loader(4)),
    FRE,
    _has("NoStep", "training_step"),
    house=False,
)


# -- self.log ---------------------------------------------------------------------------------------------
def _logging(*log_calls: tuple[tuple[Any, ...], dict[str, Any]]) -> type[Recorder]:
    class Logs(Recorder):
        def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
            for a, kw in log_calls:
                self.log(*a, **kw)
            return super().training_step(batch, batch_idx)

    return Logs


_LOG_CALLS: list[tuple[str, str, list[Any], list[str], type[BaseException]]] = [
    (
        "vector",
        "`self.log('x', torch.ones(3))`",
        [(("x", torch.ones(3)), {})],
        ["`self.log('x', value)='tensor of shape (3,)'`", "scalar tensor"],
        MCE,
    ),
    ("matrix", "`self.log('x', torch.ones(2, 2))`", [(("x", torch.ones(2, 2)), {})], ["shape (2, 2)", "number"], MCE),
    (
        "string",
        "`self.log('x', 'abc')`",
        [(("x", "abc"), {})],
        ["`self.log('x', value)='abc'`", "not numeric", "update/compute/reset"],
        FTE,
    ),
    ("none", "`self.log('x', None)`", [(("x", None), {})], ["`self.log('x', value)=None`", "not numeric"], FTE),
    (
        "complex",
        "`self.log('x', torch.tensor(1 + 1j))`",
        [(("x", torch.tensor(1 + 1j)), {})],
        ["self.log('x', value)", "complex", "real number"],
        FTE,
    ),
    (
        "reduce-fx-changed",
        "`self.log('x', v, reduce_fx='mean')` then `reduce_fx='max'`",
        [(("x", 1.0), {"reduce_fx": "mean"}), (("x", 1.0), {"reduce_fx": "max"})],
        ["`self.log('x', reduce_fx=...)='max'`", "already logged with reduce_fx='mean'", "one reduce_fx per name"],
        MCE,
    ),
    (
        "reduce-fx-unknown",
        "`self.log('x', v, reduce_fx='median')`",
        [(("x", 1.0), {"reduce_fx": "median"})],
        ["`self.log('x', reduce_fx=...)='median'`", "'mean', 'sum', 'max' or 'min'"],
        MCE,
    ),
    (
        "nowhere",
        "`self.log('x', v, on_step=False, on_epoch=False)`",
        [(("x", 1.0), {"on_step": False, "on_epoch": False})],
        ["on_step=False, on_epoch=False", "go nowhere"],
        MCE,
    ),
    ("empty-name", "`self.log('', v)`", [(("", 1.0), {})], ["`self.log(name)=''`", "a str"], FTE),
    ("int-name", "`self.log(3, v)`", [((3, 1.0), {})], ["`self.log(name)=3`", "a str"], FTE),
]
for _id, _what, _calls, _fragments, _error in _LOG_CALLS:
    case(
        f"log-{_id}",
        f"{_what} in `training_step`",
        lambda ctx, c=_calls: _trainer().fit(ctx.model(_logging(*c))),
        _error,
        _has(*_fragments),
    )


class TwoHooks(Recorder):
    def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        self.log("x", 1.0, on_epoch=True, reduce_fx="sum")
        return super().training_step(batch, batch_idx)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.log("x", 1.0, on_epoch=True, reduce_fx="min")


def _logs_in(hook: str) -> type[Recorder]:
    def logs(self: Any, *args: Any) -> Any:
        self.log("x", 1.0)
        if hook == "configure_optimizers":
            return _sgd(self)
        if hook == "predict_step":
            return self(args[0])
        return None

    return type(f"LogsIn_{hook}", (Recorder,), {hook: logs})


class LogsOnSanity(fk.Callback):
    def on_sanity_check_start(self, trainer: Any, module: Any) -> None:
        module.log("x", 1.0)


case(
    "log-reduce-fx-changed-across-hooks",
    "`self.log('x', ..., reduce_fx='sum')` in `training_step`, `reduce_fx='min'` in `on_train_batch_end`",
    lambda ctx: _trainer().fit(ctx.model(TwoHooks)),
    MCE,
    _has("`self.log('x', reduce_fx=...)='min'`", "already logged with reduce_fx='sum'"),
    steps=None,
)
for _hook, _steps in [
    ("on_fit_start", 0),
    ("setup", 0),
    ("configure_optimizers", 0),
    ("on_train_end", None),
    ("on_validation_end", None),
    ("on_fit_end", None),
]:
    case(
        f"log-in-{_hook.replace('_', '-')}",
        f"`self.log` in `{_hook}`",
        lambda ctx, h=_hook: _trainer().fit(ctx.model(_logs_in(h))),
        FRE,
        _has("self.log('x', ...)", f"`{_hook}`", "not supported", "training_step"),
        steps=_steps,
        house=False,
    )
case(
    "log-in-predict-step",
    "`self.log` in `predict_step`",
    lambda ctx: _trainer().predict(ctx.model(_logs_in("predict_step"))),
    FRE,
    _has("`predict_step`", "not supported", "validation_step"),
    house=False,
)
case(
    "log-in-callback-on-sanity-check-start",
    "`module.log` in a callback's `on_sanity_check_start`",
    lambda ctx: _trainer(callbacks=[LogsOnSanity()], num_sanity_val_steps=1).fit(ctx.model()),
    FRE,
    _has("`on_sanity_check_start`", "not supported"),
    house=False,
)
case(
    "log-without-trainer",
    "`module.log('x', 1.0)` outside any run",
    lambda ctx: BoringModule().log("x", 1.0),
    FRE,
    _has("self.log('x', ...)", "Trainer"),
    house=False,
)


# -- Module calls made at the wrong time ------------------------------------------------------------------
def _manual_backward_detached(ctx: Ctx) -> None:
    model = BoringModule()
    model.manual_backward(model(torch.randn(2, 32)).sum())


case(
    "module-optimizers-before-fit",
    "`module.optimizers()` before `fit`",
    lambda ctx: BoringModule().optimizers(),
    FRE,
    _has("self.optimizers()", "trainer.fit()"),
    house=False,
)
case(
    "module-lr-schedulers-before-fit",
    "`module.lr_schedulers()` before `fit`",
    lambda ctx: BoringModule().lr_schedulers(),
    FRE,
    _has("self.lr_schedulers()", "trainer.fit()"),
    house=False,
)
case(
    "module-trainer-when-detached",
    "`module.trainer` before `fit`",
    lambda ctx: BoringModule().trainer,
    FRE,
    _has("BoringModule", "not attached to a Trainer"),
    house=False,
)
case(
    "module-manual-backward-detached",
    "`module.manual_backward(loss)` outside any run",
    _manual_backward_detached,
    FRE,
    _has("not attached to a Trainer"),
    house=False,
)


# -- callbacks ------------------------------------------------------------------------------------------
case(
    "callback-checkpoint-monitor-never-logged",
    "`ModelCheckpoint(monitor='x')`, `x` never logged",
    lambda ctx: _trainer(
        enable_checkpointing=True, callbacks=[ModelCheckpoint(dirpath=ctx.tmp / "ck", monitor="x")]
    ).fit(ctx.model()),
    MCE,
    _has("ModelCheckpoint(monitor='x')", "found no metric 'x'", "['epoch', 'step', 'val_loss']"),
    steps=None,
    house=False,
)
case(
    "callback-checkpoint-two-triggers",
    "`ModelCheckpoint(every_n_train_steps=2, every_n_epochs=1)`",
    lambda ctx: ModelCheckpoint(every_n_train_steps=2, every_n_epochs=1),
    MCE,
    _has("`every_n_epochs=1`", "cannot be combined with every_n_train_steps=2"),
)
case(
    "callback-checkpoint-top-k-below-minus-one",
    "`ModelCheckpoint(save_top_k=-2)`",
    lambda ctx: ModelCheckpoint(save_top_k=-2),
    MCE,
    _has("`save_top_k=-2`", "-1 (keep all)"),
)
case(
    "callback-checkpoint-top-k-without-monitor",
    "`ModelCheckpoint(save_top_k=3)` without `monitor`",
    lambda ctx: ModelCheckpoint(save_top_k=3),
    MCE,
    _has("`save_top_k=3`", "monitor=None"),
)
case(
    "callback-checkpoint-mode",
    "`ModelCheckpoint(monitor='val_loss', mode='best')`",
    lambda ctx: ModelCheckpoint(monitor="val_loss", mode="best"),
    MCE,
    _has("`mode='best'`", "'min' or 'max'"),
)
case(
    "callback-early-stopping-mode",
    "`EarlyStopping(monitor='val_loss', mode='maximum')`",
    lambda ctx: EarlyStopping(monitor="val_loss", mode="maximum"),
    MCE,
    _has("`mode='maximum'`", "'min' or 'max'"),
)
case(
    "callback-early-stopping-patience",
    "`EarlyStopping(monitor='val_loss', patience=-1)`",
    lambda ctx: EarlyStopping(monitor="val_loss", patience=-1),
    MCE,
    _has("`patience=-1`", "an int >= 0"),
)
case(
    "callback-early-stopping-monitor-never-logged",
    "`EarlyStopping(monitor='x')`, `x` never logged",
    lambda ctx: _trainer(callbacks=[EarlyStopping(monitor="x")]).fit(ctx.model()),
    MCE,
    _has("EarlyStopping", "`x`", "['val_loss']", "strict=False"),
    steps=None,
    house=False,
)


# -- checkpoints ----------------------------------------------------------------------------------------
class Wider(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.extra = nn.Linear(2, 2)


class Narrower(Recorder):
    """The layer of a Recorder under another name, with another output size."""

    def __init__(self) -> None:
        super().__init__()
        del self.layer
        self.head = nn.Linear(32, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


class Reshaped(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(32, 3)
        self.initial = [p.detach().clone() for p in self.parameters()]


def _truncated(ctx: Ctx) -> Path:
    path = ctx.checkpoint()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _empty(ctx: Ctx) -> Path:
    path = ctx.tmp / "empty.ckpt"
    path.write_bytes(b"")
    return path


def _foreign(ctx: Ctx) -> Path:
    path = ctx.tmp / "plain.pt"
    torch.save({"weights": torch.zeros(1)}, path)
    return path


for _method in ("fit", "validate", "test", "predict"):
    case(
        f"ckpt-missing-file-{_method}",
        f"`{_method}(model, ckpt_path='missing.ckpt')`",
        lambda ctx, m=_method: getattr(_trainer(), m)(ctx.model(), ckpt_path="missing.ckpt"),
        MCE,
        _has("`ckpt_path='missing.ckpt'`", "no such file"),
    )
for _which in ("best", "last"):
    case(
        f"ckpt-{_which}-without-model-checkpoint",
        f"`fit(model, ckpt_path='{_which}')` with no ModelCheckpoint",
        lambda ctx, w=_which: _trainer().fit(ctx.model(), ckpt_path=w),
        MCE,
        _has(f"`ckpt_path='{_which}'`", "no ModelCheckpoint callback"),
    )
case(
    "ckpt-best-before-any-save",
    "`test(model, ckpt_path='best')` with a ModelCheckpoint that saved nothing yet",
    lambda ctx: _trainer(enable_checkpointing=True).test(ctx.model(), ckpt_path="best", verbose=False),
    MCE,
    _has("`ckpt_path='best'`", "no checkpoint callback has a best_model_path yet"),
)
case(
    "ckpt-path-not-a-path",
    "`fit(model, ckpt_path=3)`",
    lambda ctx: _trainer().fit(ctx.model(), ckpt_path=3),  # type: ignore[arg-type]
    FTE,
    _has("`ckpt_path=3`", "not a path"),
)
case(
    "ckpt-truncated-file",
    "`fitkit.checkpoint.load(path)` of a file cut in half",
    lambda ctx: fk.checkpoint.load(_truncated(ctx)),
    FRE,
    _has("Refusing to load", "not a complete torch.save file", "truncated"),
    house=False,
)
case(
    "ckpt-empty-file",
    "`fit(model, ckpt_path=path)` of an empty file",
    lambda ctx: _trainer().fit(ctx.model(), ckpt_path=_empty(ctx)),
    FRE,
    _has("Refusing to load", "empty.ckpt", "not a complete torch.save file"),
    house=False,
)
case(
    "ckpt-not-a-fitkit-checkpoint",
    "`fitkit.checkpoint.load(path)` of a `torch.save({'weights': ...})` file",
    lambda ctx: fk.checkpoint.load(_foreign(ctx)),
    FRE,
    _has("plain.pt", "not a fitkit checkpoint", "'format_version'"),
    house=False,
)
case(
    "ckpt-newer-format",
    "`fitkit.checkpoint.load(path)` of a file with a newer `format_version`",
    lambda ctx: fk.checkpoint.load(ctx.checkpoint("future.ckpt", format_version=99, fitkit_version="99.0")),
    FRE,
    _has("checkpoint format 99", "written by fitkit 99.0", "Upgrade fitkit"),
    house=False,
)
case(
    "ckpt-pickle-payload-load",
    "`fitkit.checkpoint.load(path)` of a pickle whose `__reduce__` runs code",
    lambda ctx: fk.checkpoint.load(ctx.payload()),
    FRE,
    _has("Refusing to load", "pickled object", "Nothing from the file was run"),  # torch < 2.4 does not name `exec`
    house=False,
)
case(
    "ckpt-pickle-payload-fit",
    "`fit(model, ckpt_path=path)` of a pickle whose `__reduce__` runs code",
    lambda ctx: _trainer().fit(ctx.model(), ckpt_path=ctx.payload()),
    FRE,
    _has("Refusing to load", "pickled object", "Nothing from the file was run"),  # torch < 2.4 does not name `exec`
    house=False,
)
case(
    "ckpt-pickle-payload-load-from-checkpoint",
    "`Model.load_from_checkpoint(path)` of a pickle whose `__reduce__` runs code",
    lambda ctx: Recorder.load_from_checkpoint(ctx.payload()),
    FRE,
    _has("Refusing to load", "pickled object", "Nothing from the file was run"),  # torch < 2.4 does not name `exec`
    house=False,
)
case(
    "ckpt-missing-keys",
    "`test(model, ckpt_path=path)` where the model has an extra layer",
    lambda ctx: _trainer().test(ctx.model(Wider), ckpt_path=ctx.checkpoint(), verbose=False),
    FRE,
    _has("good.ckpt", "do not fit Wider", "missing keys ['extra.weight', 'extra.bias']", "strict=False"),
    steps=None,  # torch copies the keys that match before it raises
)
case(
    "ckpt-missing-and-unexpected-keys",
    "`Model.load_from_checkpoint(path)` where a layer was renamed",
    lambda ctx: Narrower.load_from_checkpoint(ctx.checkpoint()),
    FRE,
    _has(
        "do not fit Narrower",
        "missing keys ['head.weight', 'head.bias']",
        "unexpected keys ['layer.weight', 'layer.bias']",
    ),
)
case(
    "ckpt-shape-mismatch",
    "`fit(model, ckpt_path=path)` where a layer changed size",
    lambda ctx: _trainer().fit(ctx.model(Reshaped), ckpt_path=ctx.checkpoint()),
    FRE,
    _has("do not fit Reshaped", "layer.weight: (2, 32) in the file, (3, 32) in the model"),
    steps=None,
)
case(
    "ckpt-weights-only-resume",
    "`fit(model, ckpt_path=path)` of a `save_weights_only` file",
    lambda ctx: _trainer().fit(ctx.model(), ckpt_path=_weights_only(ctx)),
    MCE,
    _has("`ckpt_path='a weights-only checkpoint'`", "save_weights_only=False"),
    steps=None,  # the weights load before the missing loop state is found
)
case(
    "ckpt-hparams-instantiator",
    "`Model.load_from_checkpoint(path)` whose `hyper_parameters` hold `_instantiator: 'os.system'`",
    lambda ctx: Recorder.load_from_checkpoint(ctx.checkpoint(hyper_parameters={"_instantiator": "os.system"})),
    MCE,
    _has("`checkpoint['hyper_parameters']['_instantiator']='os.system'`", "never imports or calls"),
)
case(
    "ckpt-hparams-not-a-dict",
    "`Model.load_from_checkpoint(path)` whose `hyper_parameters` is a list",
    lambda ctx: Recorder.load_from_checkpoint(ctx.checkpoint(hyper_parameters=[1, 2])),
    FTE,
    _has("`checkpoint['hyper_parameters']='list'`", "not a mapping"),
)


def _weights_only(ctx: Ctx) -> Path:
    path = ctx.tmp / "weights_only.ckpt"
    trainer = _trainer(max_steps=1)
    trainer.fit(Recorder())
    trainer.save_checkpoint(path, weights_only=True)
    return path


# -- the machine ------------------------------------------------------------------------------------------
_CUDA = "this machine has CUDA" if torch.cuda.is_available() else None
case(
    "env-cuda-without-gpu",
    "`Trainer(accelerator='cuda')` on a machine without a GPU",
    lambda ctx: fk.Trainer(accelerator="cuda"),
    MCE,
    _has("`accelerator='cuda'`", "sees no CUDA device", "'cpu' or 'auto'"),
    skip=_CUDA,
)
case(
    "env-gpu-without-gpu",
    "`Trainer(accelerator='gpu')` on a machine without a GPU",
    lambda ctx: fk.Trainer(accelerator="gpu"),
    MCE,
    _has("`accelerator='gpu'`", "no CUDA or MPS GPU"),
    skip=_CUDA,
)
case(
    "env-more-cuda-devices-than-exist",
    "`Trainer(accelerator='cuda', devices=8)` on a 2-GPU machine (the parser it calls, given 2 devices)",
    lambda ctx: parse_device_indices(8, device_count=2),
    MCE,
    _has("`devices=8`", "asks for 8 cuda device(s) and this process sees 2"),
)
case(
    "env-num-nodes-without-cluster",
    "`Trainer(num_nodes=2).fit(model)` with no MASTER_ADDR/NODE_RANK and no `torchrun`",
    lambda ctx: _trainer(num_nodes=2).fit(ctx.model()),
    MCE,
    _has("`num_nodes=2`", "MASTER_ADDR", "NODE_RANK"),
)


# -- running a case -------------------------------------------------------------------------------------
def full_message(err: BaseException) -> str:
    """The message and any notes fitkit added to it."""
    return "\n".join([str(err), *getattr(err, "__notes__", [])])


def run_case(c: Case, ctx: Ctx) -> BaseException:
    """Trigger ``c`` and return what it raised (an AssertionError if it raised nothing)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "no seed"; the catalogue is about errors
        try:
            c.trigger(ctx)
        except Exception as err:
            return err
    raise AssertionError(f"{c.id}: {c.input} raised nothing")


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input(c: Case, tmp_path: Path) -> None:
    if c.skip:
        pytest.skip(c.skip)
    os.environ.pop("MASTER_ADDR", None)  # the conftest fixture restores the environment
    ctx = Ctx(tmp_path)
    err = run_case(c, ctx)
    assert type(err) is c.error, f"{type(err).__mro__}: {full_message(err)}"
    if issubclass(c.error, fk.FitkitError):
        assert isinstance(err, BUILTIN_ERRORS), type(err).__mro__
    message = full_message(err)
    assert re.search(c.message, message), f"{c.message!r} does not match {message!r}"
    if c.house:
        assert "is not valid" in message and "Expected" in message, message
    assert not (tmp_path / "pwned").exists(), "a checkpoint payload ran"
    if c.steps is not None:
        for m in ctx.models:
            assert m.train_calls == c.steps, (m.train_calls, c.steps)
            assert not m.weights_moved()


def test_catalogue_is_large_and_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]
    assert len(CASES) >= 40


def test_the_docs_table_is_the_catalogue() -> None:
    from _errors_table import DOC, expected_rows, parse

    documented = parse(DOC.read_text())
    hint = "docs/errors.md's catalogue is out of date: run `python tests/_errors_table.py`"
    assert [r[:3] for r in documented] == expected_rows(), hint
    for c, (_, _, _, message) in zip(CASES, documented, strict=True):
        assert re.search(c.message, message), f"{c.id}: the documented message no longer matches. {hint}"


# -- errors that are not about a single value ---------------------------------------------------------------
def test_argument_errors_are_catchable_as_builtin_types() -> None:
    with pytest.raises(ValueError, match="precision"):
        fk.Trainer(precision="17")
    with pytest.raises(TypeError, match="logger"):
        fk.Trainer(logger="csv")


def test_plateau_monitor_not_strict_skips_the_step() -> None:
    _trainer().fit(_module_returning(_plateau_not_strict)())


def _plateau_not_strict(m: nn.Module) -> Any:
    opt = _sgd(m)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": plateau, "monitor": "nope", "strict": False}}


def test_an_endless_loader_with_max_steps_trains() -> None:
    model = Recorder()
    _trainer(limit_train_batches=None, max_steps=3).fit(model, itertools.cycle([torch.randn(2, 32)]))
    assert model.train_calls == 3 and model.global_step == 3


def test_a_batch_of_strings_is_fine_for_a_step_that_expects_them() -> None:
    class Tokenizes(Recorder):
        def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
            assert all(isinstance(s, str) for s in batch)
            self.train_calls += 1
            return self(torch.randn(len(batch), 32)).sum()

    model = Tokenizes()
    _trainer().fit(model, DataLoader(["a", "b", "c", "d"], batch_size=2))
    assert model.train_calls == 2


def test_distributed_arguments_that_are_fine() -> None:
    trainer = fk.Trainer(num_nodes=1, use_distributed_sampler=False, sync_batchnorm=False)
    assert (trainer.num_nodes, trainer.use_distributed_sampler, trainer.sync_batchnorm) == (1, False, False)
