"""LambdaCallback: the given functions run at their hooks with the hook's arguments,
only those hooks are wired, and names that are not hooks are refused."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from _train_cb_helpers import Model, loader, trainer

import fitkit as fk
from fitkit.callbacks import LambdaCallback
from fitkit.callbacks.callback import HOOKS


def test_functions_run_at_their_hooks() -> None:
    calls: list[Any] = []
    cb = LambdaCallback(
        setup=lambda trainer, module, stage: calls.append(("setup", stage)),
        on_fit_start=lambda trainer, module: calls.append(("fit_start", type(module).__name__)),
        on_train_batch_end=lambda trainer, module, outputs, batch, batch_idx: calls.append(
            ("batch_end", trainer.current_epoch, batch_idx, sorted(outputs))
        ),
        on_train_epoch_end=lambda trainer, module: calls.append(("epoch_end", trainer.current_epoch)),
        teardown=lambda trainer, module, stage: calls.append(("teardown", stage)),
    )
    t = trainer(max_epochs=2, callbacks=[cb])
    t.fit(Model(), loader(2))
    assert calls == [
        ("setup", "fit"),
        ("fit_start", "Model"),
        ("batch_end", 0, 0, ["loss"]),
        ("batch_end", 0, 1, ["loss"]),
        ("epoch_end", 0),
        ("batch_end", 1, 0, ["loss"]),
        ("batch_end", 1, 1, ["loss"]),
        ("epoch_end", 1),
        ("teardown", "fit"),
    ]


def test_on_exception_and_return_values() -> None:
    seen: list[BaseException] = []

    def stop_at_start(trainer: fk.Trainer, module: Any, batch: Any, batch_idx: int) -> int:
        return -1  # the return value reaches the Trainer: the epoch is skipped

    def fail(trainer: fk.Trainer, module: Any) -> None:
        raise KeyError("boom")

    t = trainer(max_epochs=1, callbacks=[LambdaCallback(on_train_batch_start=stop_at_start)])
    t.fit(Model(), loader(2))
    assert t.global_step == 0

    cb = LambdaCallback(on_train_start=fail, on_exception=lambda trainer, module, exc: seen.append(exc))
    with pytest.raises(KeyError, match="boom"):
        trainer(max_epochs=1, callbacks=[cb]).fit(Model(), loader(2))
    assert len(seen) == 1 and isinstance(seen[0], KeyError)


def test_only_given_hooks_are_wired() -> None:
    a = LambdaCallback(on_train_epoch_end=lambda trainer, module: None)
    b = LambdaCallback(on_fit_start=lambda trainer, module: None)
    assert isinstance(a, LambdaCallback) and type(a).__name__ == "LambdaCallback"
    assert "on_train_epoch_end" in vars(type(a)) and "on_fit_start" not in vars(type(a))
    assert "on_fit_start" in vars(type(b)) and "on_train_epoch_end" not in vars(type(b))
    text = trainer(callbacks=[a, b]).print_loop(Model())
    assert "LambdaCallback.on_train_epoch_end" in text and "LambdaCallback.on_fit_start" in text
    assert "LambdaCallback.on_train_batch_end" not in text


def test_every_hook_name_is_accepted() -> None:
    cb = LambdaCallback(**dict.fromkeys(HOOKS, lambda *args: None))
    assert set(cb.hooks) == set(HOOKS)


def test_unknown_names_are_refused_with_suggestions() -> None:
    with pytest.raises(fk.MisconfigurationError, match=r"on_train_epoch_ned.*on_train_epoch_end"):
        LambdaCallback(on_train_epoch_ned=lambda trainer, module: None)
    with pytest.raises(fk.MisconfigurationError, match="state_dict"):
        LambdaCallback(state_dict=lambda: {})  # not a hook


def test_non_callables_are_refused() -> None:
    with pytest.raises(fk.FitkitTypeError, match="on_fit_start"):
        LambdaCallback(on_fit_start="print")  # type: ignore[arg-type]


def test_copies_keep_their_hooks() -> None:
    calls: list[int] = []
    cb = LambdaCallback(on_train_epoch_end=lambda trainer, module: calls.append(1))
    clone = copy.deepcopy(cb)
    assert "on_train_epoch_end" in vars(type(clone))
    trainer(max_epochs=1, callbacks=[clone]).fit(Model(), loader(1))
    assert calls == [1]
