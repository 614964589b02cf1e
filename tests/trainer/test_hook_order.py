"""The exact order of every hook call in ``fit``, ``validate``, ``test`` and ``predict``.

A recording Callback overrides every hook in :data:`fitkit.callbacks.callback.HOOKS`
and a recording Module overrides every lifecycle hook plus the step methods,
``configure_optimizers`` and ``configure_gradient_clipping``. Each call appends
``"Callback.<hook>"`` or ``"Module.<hook>"`` to one shared list, and each test
compares that list with a literal expected list.

If a change to the loops makes one of these tests fail, the change altered the
contract users write hooks against: update the expected list *and* the tables in
``docs/architecture.md`` (print them with ``python tests/trainer/test_hook_order.py``;
``test_architecture_doc_matches`` keeps the two in step).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import fitkit
from fitkit.callbacks.callback import HOOKS
from fitkit.testing import BoringModule, RandomDataset

# Every lifecycle hook a Module has: the on_* methods plus prepare_data/setup/teardown.
MODULE_HOOKS = tuple(
    name for name in vars(fitkit.Module) if name.startswith("on_") or name in ("prepare_data", "setup", "teardown")
)
# Module methods the Trainer calls directly (not through its hook table); recorded too.
MODULE_METHODS = (
    "training_step",
    "validation_step",
    "test_step",
    "predict_step",
    "configure_optimizers",
    "configure_gradient_clipping",
)

# Small runs: 4 training batches in 2 optimizer steps, one validation batch.
FIT_KWARGS: dict[str, Any] = {
    "max_epochs": 1,
    "limit_train_batches": 4,
    "limit_val_batches": 1,
    "num_sanity_val_steps": 1,
    "accumulate_grad_batches": 2,
    "gradient_clip_val": 1.0,
}
# Nothing the Trainer adds by default may fire hooks of its own into the record.
QUIET: dict[str, Any] = {
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "enable_checkpointing": False,
    "logger": False,
}


def _callback_hook(name: str) -> Callable[..., None]:
    def hook(self: RecordingCallback, trainer: Any, module: Any, *args: Any) -> None:
        self.calls.append(f"{self.prefix}.{name}")

    hook.__name__ = hook.__qualname__ = name
    return hook


class RecordingCallback(fitkit.Callback):
    """Overrides every hook of HOOKS; appends ``"<prefix>.<hook>"`` to ``calls``."""

    def __init__(self, calls: list[str], prefix: str = "Callback") -> None:
        self.calls = calls
        self.prefix = prefix


for _name in sorted(HOOKS):
    setattr(RecordingCallback, _name, _callback_hook(_name))


def _module_hook(name: str) -> Callable[..., Any]:
    inherited = getattr(BoringModule, name)

    def hook(self: RecordingModule, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(f"Module.{name}")
        return inherited(self, *args, **kwargs)  # keep the real behaviour: steps return losses, clipping clips

    hook.__name__ = hook.__qualname__ = name
    return hook


class RecordingModule(BoringModule):
    """BoringModule overriding every lifecycle hook and step method; records each call."""

    def __init__(self, calls: list[str]) -> None:
        super().__init__()
        self.calls = calls


for _name in MODULE_HOOKS + MODULE_METHODS:
    setattr(RecordingModule, _name, _module_hook(_name))


@pytest.fixture
def calls() -> list[str]:
    return []


def _trainer(calls: list[str], **kwargs: Any) -> fitkit.Trainer:
    return fitkit.Trainer(callbacks=[RecordingCallback(calls)], **QUIET, **kwargs)


# -- the expected sequences -------------------------------------------------------------

EXPECTED_FIT = [
    "Module.prepare_data",
    "Callback.setup",
    "Module.setup",
    "Module.configure_optimizers",
    "Callback.on_fit_start",
    "Module.on_fit_start",
    # sanity check: one validation batch, metrics discarded
    "Callback.on_sanity_check_start",
    "Callback.on_validation_start",
    "Module.on_validation_start",
    "Callback.on_validation_epoch_start",
    "Module.on_validation_epoch_start",
    "Callback.on_validation_batch_start",
    "Module.on_validation_batch_start",
    "Module.validation_step",
    "Callback.on_validation_batch_end",
    "Module.on_validation_batch_end",
    "Callback.on_validation_epoch_end",
    "Module.on_validation_epoch_end",
    "Callback.on_validation_end",
    "Module.on_validation_end",
    "Callback.on_sanity_check_end",
    # training
    "Callback.on_train_start",
    "Module.on_train_start",
    "Callback.on_train_epoch_start",
    "Module.on_train_epoch_start",
    # batch 0: first micro-batch of the window, backward only
    "Callback.on_train_batch_start",
    "Module.on_train_batch_start",
    "Module.training_step",
    "Callback.on_before_backward",
    "Module.on_before_backward",
    "Callback.on_after_backward",
    "Module.on_after_backward",
    "Callback.on_train_batch_end",
    "Module.on_train_batch_end",
    # batch 1: last micro-batch, so clip, step, then zero the gradients
    "Callback.on_train_batch_start",
    "Module.on_train_batch_start",
    "Module.training_step",
    "Callback.on_before_backward",
    "Module.on_before_backward",
    "Callback.on_after_backward",
    "Module.on_after_backward",
    "Callback.on_before_optimizer_step",
    "Module.on_before_optimizer_step",
    "Module.configure_gradient_clipping",
    "Callback.on_before_zero_grad",
    "Module.on_before_zero_grad",
    "Callback.on_train_batch_end",
    "Module.on_train_batch_end",
    # batch 2
    "Callback.on_train_batch_start",
    "Module.on_train_batch_start",
    "Module.training_step",
    "Callback.on_before_backward",
    "Module.on_before_backward",
    "Callback.on_after_backward",
    "Module.on_after_backward",
    "Callback.on_train_batch_end",
    "Module.on_train_batch_end",
    # batch 3
    "Callback.on_train_batch_start",
    "Module.on_train_batch_start",
    "Module.training_step",
    "Callback.on_before_backward",
    "Module.on_before_backward",
    "Callback.on_after_backward",
    "Module.on_after_backward",
    "Callback.on_before_optimizer_step",
    "Module.on_before_optimizer_step",
    "Module.configure_gradient_clipping",
    "Callback.on_before_zero_grad",
    "Module.on_before_zero_grad",
    "Callback.on_train_batch_end",
    "Module.on_train_batch_end",
    # validation at the end of the epoch, before on_train_epoch_end
    "Callback.on_validation_start",
    "Module.on_validation_start",
    "Callback.on_validation_epoch_start",
    "Module.on_validation_epoch_start",
    "Callback.on_validation_batch_start",
    "Module.on_validation_batch_start",
    "Module.validation_step",
    "Callback.on_validation_batch_end",
    "Module.on_validation_batch_end",
    "Callback.on_validation_epoch_end",
    "Module.on_validation_epoch_end",
    "Callback.on_validation_end",
    "Module.on_validation_end",
    "Callback.on_train_epoch_end",
    "Module.on_train_epoch_end",
    "Callback.on_train_end",
    "Module.on_train_end",
    "Callback.on_fit_end",
    "Module.on_fit_end",
    "Callback.teardown",
    "Module.teardown",
]

EXPECTED_VALIDATE = [
    "Module.prepare_data",
    "Callback.setup",
    "Module.setup",
    "Callback.on_validation_start",
    "Module.on_validation_start",
    "Callback.on_validation_epoch_start",
    "Module.on_validation_epoch_start",
    "Callback.on_validation_batch_start",
    "Module.on_validation_batch_start",
    "Module.validation_step",
    "Callback.on_validation_batch_end",
    "Module.on_validation_batch_end",
    "Callback.on_validation_epoch_end",
    "Module.on_validation_epoch_end",
    "Callback.on_validation_end",
    "Module.on_validation_end",
    "Callback.teardown",
    "Module.teardown",
]

EXPECTED_TEST = [
    "Module.prepare_data",
    "Callback.setup",
    "Module.setup",
    "Callback.on_test_start",
    "Module.on_test_start",
    "Callback.on_test_epoch_start",
    "Module.on_test_epoch_start",
    # batch 0
    "Callback.on_test_batch_start",
    "Module.on_test_batch_start",
    "Module.test_step",
    "Callback.on_test_batch_end",
    "Module.on_test_batch_end",
    # batch 1
    "Callback.on_test_batch_start",
    "Module.on_test_batch_start",
    "Module.test_step",
    "Callback.on_test_batch_end",
    "Module.on_test_batch_end",
    "Callback.on_test_epoch_end",
    "Module.on_test_epoch_end",
    "Callback.on_test_end",
    "Module.on_test_end",
    "Callback.teardown",
    "Module.teardown",
]

EXPECTED_PREDICT = [
    "Module.prepare_data",
    "Callback.setup",
    "Module.setup",
    "Callback.on_predict_start",
    "Module.on_predict_start",
    "Callback.on_predict_epoch_start",
    "Module.on_predict_epoch_start",
    # batch 0
    "Callback.on_predict_batch_start",
    "Module.on_predict_batch_start",
    "Module.predict_step",
    "Callback.on_predict_batch_end",
    "Module.on_predict_batch_end",
    # batch 1
    "Callback.on_predict_batch_start",
    "Module.on_predict_batch_start",
    "Module.predict_step",
    "Callback.on_predict_batch_end",
    "Module.on_predict_batch_end",
    "Callback.on_predict_epoch_end",
    "Module.on_predict_epoch_end",
    "Callback.on_predict_end",
    "Module.on_predict_end",
    "Callback.teardown",
    "Module.teardown",
]


# -- the four entry points -----------------------------------------------------------------


def test_recorders_override_every_hook() -> None:
    overridden = {name for name in vars(RecordingCallback) if name in HOOKS}
    assert overridden == set(HOOKS)
    assert set(MODULE_HOOKS) >= {"prepare_data", "setup", "teardown", "on_fit_start", "on_before_zero_grad"}
    for name in MODULE_HOOKS + MODULE_METHODS:
        assert name in vars(RecordingModule), name


def test_fit_hook_order(calls: list[str]) -> None:
    trainer = _trainer(calls, **FIT_KWARGS)
    trainer.fit(RecordingModule(calls))
    assert calls == EXPECTED_FIT
    assert trainer.global_step == 2  # 4 batches, 2 per optimizer step


def test_validate_hook_order(calls: list[str]) -> None:
    trainer = _trainer(calls, limit_val_batches=1)
    trainer.validate(RecordingModule(calls), verbose=False)
    assert calls == EXPECTED_VALIDATE


def test_test_hook_order(calls: list[str]) -> None:
    trainer = _trainer(calls, limit_test_batches=2)
    trainer.test(RecordingModule(calls), verbose=False)
    assert calls == EXPECTED_TEST


def test_predict_hook_order(calls: list[str]) -> None:
    trainer = _trainer(calls, limit_predict_batches=2)
    predictions = trainer.predict(RecordingModule(calls))
    assert calls == EXPECTED_PREDICT
    assert predictions is not None and len(predictions) == 2


def test_hooks_receive_stage_and_batch_idx() -> None:
    seen: list[tuple[str, Any]] = []

    class Args(fitkit.Callback):
        def setup(self, trainer: Any, module: Any, stage: str) -> None:
            seen.append(("setup", stage))

        def teardown(self, trainer: Any, module: Any, stage: str) -> None:
            seen.append(("teardown", stage))

        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
            seen.append(("train_batch", batch_idx))

        def on_before_optimizer_step(self, trainer: Any, module: Any, optimizer: Any) -> None:
            # gradients of the whole window are there, and this is the optimizer that steps
            assert optimizer is trainer.optimizers[0]
            assert all(p.grad is not None for p in module.parameters())
            seen.append(("optimizer_step", trainer.global_step))

    trainer = fitkit.Trainer(callbacks=[Args()], **QUIET, **FIT_KWARGS)
    model = BoringModule()
    trainer.fit(model)
    trainer.test(model, verbose=False)
    assert seen == [
        ("setup", "fit"),
        ("train_batch", 0),
        ("train_batch", 1),
        ("optimizer_step", 0),
        ("train_batch", 2),
        ("train_batch", 3),
        ("optimizer_step", 1),
        ("teardown", "fit"),
        ("setup", "test"),
        ("teardown", "test"),
    ]


# -- the other step paths ---------------------------------------------------------------------


class ClosureModule(RecordingModule):
    def configure_optimizers(self) -> Any:
        self.calls.append("Module.configure_optimizers")
        return torch.optim.LBFGS(self.parameters(), lr=0.1, max_iter=2)


def test_closure_optimizer_hook_order(calls: list[str]) -> None:
    """LBFGS needs a closure: training_step runs inside optimizer.step, once per evaluation.

    ``on_before_optimizer_step`` fires once per step, after the first backward, so it sees gradients.
    """
    torch.manual_seed(0)
    trainer = _trainer(calls, max_epochs=1, limit_train_batches=1, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(ClosureModule(calls))
    start = calls.index("Callback.on_train_batch_start")
    end = calls.index("Callback.on_train_batch_end")
    assert calls[start:end] == [
        "Callback.on_train_batch_start",
        "Module.on_train_batch_start",
        # first evaluation of the closure
        "Module.training_step",
        "Callback.on_before_backward",
        "Module.on_before_backward",
        "Callback.on_after_backward",
        "Module.on_after_backward",
        "Callback.on_before_optimizer_step",
        "Module.on_before_optimizer_step",
        "Module.configure_gradient_clipping",
        # LBFGS evaluates again (max_iter=2)
        "Module.training_step",
        "Callback.on_before_backward",
        "Module.on_before_backward",
        "Callback.on_after_backward",
        "Module.on_after_backward",
        "Module.configure_gradient_clipping",
        # after optimizer.step returns
        "Callback.on_before_zero_grad",
        "Module.on_before_zero_grad",
    ]
    assert trainer.global_step == 1


class ManualModule(RecordingModule):
    def __init__(self, calls: list[str]) -> None:
        super().__init__(calls)
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        self.calls.append("Module.training_step")
        opt = self.optimizers()
        opt.zero_grad()
        loss = self.loss(self(batch))
        self.manual_backward(loss)
        opt.step()
        return loss


def test_manual_optimization_hook_order(calls: list[str]) -> None:
    """Backward and step hooks fire from manual_backward / opt.step; global_step counts batches."""
    trainer = _trainer(calls, max_epochs=1, limit_train_batches=2, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(ManualModule(calls))
    one_batch = [
        "Callback.on_train_batch_start",
        "Module.on_train_batch_start",
        "Module.training_step",
        "Callback.on_before_backward",
        "Module.on_before_backward",
        "Callback.on_after_backward",
        "Module.on_after_backward",
        "Callback.on_before_optimizer_step",
        "Module.on_before_optimizer_step",
        "Callback.on_train_batch_end",
        "Module.on_train_batch_end",
    ]
    start = calls.index("Module.on_train_epoch_start") + 1
    end = calls.index("Callback.on_train_epoch_end")
    assert calls[start:end] == one_batch + one_batch
    assert trainer.global_step == 2


def test_train_batch_start_minus_one_ends_the_epoch(calls: list[str]) -> None:
    """Returning -1 skips the rest of the epoch; a half-accumulated window is dropped, not carried over."""
    first_step_grads: list[torch.Tensor] = []

    class SkipsRest(RecordingModule):
        def on_train_batch_start(self, batch: Any, batch_idx: int) -> Any:
            self.calls.append("Module.on_train_batch_start")
            return -1 if self.current_epoch == 0 and batch_idx == 1 else None

        def on_before_optimizer_step(self, optimizer: Any) -> None:
            self.calls.append("Module.on_before_optimizer_step")
            first_step_grads.append(self.layer.weight.grad.clone())

    torch.manual_seed(0)
    model = SkipsRest(calls)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    loader = torch.utils.data.DataLoader(RandomDataset(32, 4), batch_size=2)
    kwargs = {"accumulate_grad_batches": 2, "limit_val_batches": 0, "num_sanity_val_steps": 0}
    _trainer(calls, max_epochs=2, **kwargs).fit(model, loader)
    start = calls.index("Module.on_train_epoch_start") + 1
    assert calls[start : calls.index("Callback.on_train_epoch_end")] == [
        "Callback.on_train_batch_start",
        "Module.on_train_batch_start",
        "Module.training_step",
        "Callback.on_before_backward",
        "Module.on_before_backward",
        "Callback.on_after_backward",
        "Module.on_after_backward",
        "Callback.on_train_batch_end",
        "Module.on_train_batch_end",
        # batch 1: the hook returns -1, so no training_step and no on_train_batch_end
        "Callback.on_train_batch_start",
        "Module.on_train_batch_start",
    ]
    # The only step (epoch 1) must see the gradients of epoch 1's two batches alone.
    reference = BoringModule()
    reference.load_state_dict(initial)
    for batch in loader:
        (reference.loss(reference(batch)) / 2).backward()
    assert len(first_step_grads) == 1
    torch.testing.assert_close(first_step_grads[0], reference.layer.weight.grad)


def test_epoch_end_hooks_see_this_epochs_metrics() -> None:
    """Callbacks monitoring an epoch metric in on_*_epoch_end read this epoch's value, not the last one's."""
    seen: list[tuple[str, int, float]] = []

    class Logs(BoringModule):
        def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
            self.log("train_value", float(10 * self.current_epoch + batch_idx), on_step=False, on_epoch=True)
            return super().training_step(batch, batch_idx)

        def validation_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
            self.log("val_value", float(10 * self.current_epoch + batch_idx))

        def on_train_epoch_end(self) -> None:
            self.log("logged_in_hook", float(self.current_epoch))  # reduced after the hook

    class Monitor(fitkit.Callback):
        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            seen.append(("train", trainer.current_epoch, float(trainer.callback_metrics["train_value"])))

        def on_validation_epoch_end(self, trainer: Any, module: Any) -> None:
            if not trainer.sanity_checking:
                seen.append(("val", trainer.current_epoch, float(trainer.callback_metrics["val_value"])))

    trainer = fitkit.Trainer(
        callbacks=[Monitor()], max_epochs=2, limit_train_batches=2, limit_val_batches=2, num_sanity_val_steps=0, **QUIET
    )
    trainer.fit(Logs())
    assert seen == [("val", 0, 0.5), ("train", 0, 0.5), ("val", 1, 10.5), ("train", 1, 10.5)]
    assert float(trainer.callback_metrics["logged_in_hook"]) == 1.0


def test_exception_hook_order(calls: list[str]) -> None:
    class Failing(RecordingModule):
        def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
            self.calls.append("Module.training_step")
            raise RuntimeError("boom")

    trainer = _trainer(calls, max_epochs=1, limit_train_batches=1, limit_val_batches=0, num_sanity_val_steps=0)
    with pytest.raises(RuntimeError, match="boom"):
        trainer.fit(Failing(calls))
    assert calls[-6:] == [
        "Callback.on_train_batch_start",
        "Module.on_train_batch_start",
        "Module.training_step",
        "Callback.on_exception",
        "Callback.teardown",
        "Module.teardown",
    ]
    assert trainer.state.status == "interrupted"


# -- who gets called -------------------------------------------------------------------------


class EpochCounter(fitkit.Callback):
    """Overrides two hooks only."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
        self.calls.append("EpochCounter.on_train_epoch_start")

    def on_validation_end(self, trainer: Any, module: Any) -> None:
        self.calls.append("EpochCounter.on_validation_end")


def test_partial_callback_gets_only_its_hooks() -> None:
    calls: list[str] = []
    trainer = fitkit.Trainer(callbacks=[EpochCounter(calls)], **QUIET, **FIT_KWARGS)
    trainer.fit(BoringModule())
    trainer.validate(verbose=False)
    assert calls == [
        "EpochCounter.on_validation_end",  # sanity check
        "EpochCounter.on_train_epoch_start",
        "EpochCounter.on_validation_end",  # end of epoch
        "EpochCounter.on_validation_end",  # trainer.validate()
    ]


def test_callbacks_run_in_order_then_module(calls: list[str]) -> None:
    first, second = RecordingCallback(calls, "First"), RecordingCallback(calls, "Second")
    trainer = fitkit.Trainer(callbacks=[first, second], **QUIET, limit_test_batches=1)
    trainer.test(RecordingModule(calls), verbose=False)
    assert calls[calls.index("First.on_test_start") :][:3] == [
        "First.on_test_start",
        "Second.on_test_start",
        "Module.on_test_start",
    ]


def test_print_loop_names_the_overriding_callback(capsys: pytest.CaptureFixture[str]) -> None:
    trainer = fitkit.Trainer(callbacks=[EpochCounter([])], **QUIET)
    text = trainer.print_loop(BoringModule())
    assert capsys.readouterr().out.strip() == text.strip()
    lines = {line.split()[0]: line for line in text.splitlines()}
    assert "EpochCounter.on_train_epoch_start" in lines["on_train_epoch_start"]
    assert "EpochCounter.on_validation_end" in lines["on_validation_end"]
    # hooks it leaves alone do not mention it
    assert "EpochCounter" not in lines["on_train_epoch_end"]
    assert "EpochCounter" not in lines["on_fit_start"]


def test_model_checkpoint_leaves_the_batch_loop_unless_it_saves_by_step() -> None:
    from fitkit.callbacks import ModelCheckpoint

    def batch_end_line(ckpt: ModelCheckpoint) -> str:
        text = fitkit.Trainer(callbacks=[ckpt], **{**QUIET, "enable_checkpointing": True}).print_loop(BoringModule())
        return next(line for line in text.splitlines() if line.split()[0] == "on_train_batch_end")

    assert "ModelCheckpoint" not in batch_end_line(ModelCheckpoint())  # per epoch: no per-batch call
    assert "ModelCheckpoint.on_train_batch_end" in batch_end_line(ModelCheckpoint(every_n_train_steps=2))
    assert "ModelCheckpoint.on_train_batch_end" in batch_end_line(
        ModelCheckpoint(train_time_interval=datetime.timedelta(seconds=5))
    )


def test_typo_hook_is_refused_at_trainer_init() -> None:
    class Typo(fitkit.Callback):
        def on_train_epoch_ends(self, trainer: Any, module: Any) -> None: ...

    with pytest.raises(fitkit.MisconfigurationError, match="on_train_epoch_ends") as info:
        fitkit.Trainer(callbacks=[Typo()])
    assert isinstance(info.value, ValueError)
    assert "Typo" in str(info.value)
    assert "'on_train_epoch_end'" in str(info.value)  # the closest real hook is suggested


# -- the tables in docs/architecture.md ----------------------------------------------------------

SEQUENCES = {
    "fit": EXPECTED_FIT,
    "validate": EXPECTED_VALIDATE,
    "test": EXPECTED_TEST,
    "predict": EXPECTED_PREDICT,
}


def hook_table(sequence: list[str]) -> str:
    """A markdown table of ``sequence``; a callback call and the module call of the same hook share a row."""
    rows: list[tuple[str, list[str]]] = []
    for entry in sequence:
        owner, hook = entry.split(".", 1)
        if rows and rows[-1][0] == hook and owner not in rows[-1][1]:
            rows[-1][1].append(owner)
        else:
            rows.append((hook, [owner]))
    lines = ["| # | hook | called on |", "|---|---|---|"]
    lines += [f"| {i} | `{hook}` | {', '.join(owners)} |" for i, (hook, owners) in enumerate(rows, 1)]
    return "\n".join(lines)


def doc_tables() -> str:
    """Every table, each between the markers ``test_architecture_doc_matches`` looks for."""
    blocks = [
        f"<!-- hook-order:{name} -->\n{hook_table(seq)}\n<!-- /hook-order:{name} -->" for name, seq in SEQUENCES.items()
    ]
    return "\n\n".join(blocks)


def test_architecture_doc_matches() -> None:
    doc = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
    if not doc.exists():
        pytest.skip("docs/architecture.md is not in this checkout")
    text = doc.read_text()
    for name, sequence in SEQUENCES.items():
        found = re.search(rf"<!-- hook-order:{name} -->\n(.*?)\n<!-- /hook-order:{name} -->", text, re.S)
        assert found, f"docs/architecture.md has no hook-order:{name} table"
        assert found.group(1) == hook_table(sequence), (
            f"the {name} table in docs/architecture.md is stale: regenerate it with "
            "`python tests/trainer/test_hook_order.py`"
        )


if __name__ == "__main__":
    print(doc_tables())
