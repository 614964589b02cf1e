"""Non-finite values: ``Trainer(nonfinite_loss=...)`` ("raise", "skip", "ignore") in automatic,
accumulated, closure and manual optimization, compared bitwise with hand-written loops;
``16-mixed`` scaler skips; ``Trainer(detect_anomaly=...)``; ``EarlyStopping`` on a NaN metric."""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

import fitkit as fk
from fitkit.callbacks import EarlyStopping, OnExceptionCheckpoint
from fitkit.checkpoint import load
from fitkit.precision import MixedPrecision
from fitkit.strategies.single_device import SingleDeviceStrategy
from fitkit.strategies.strategy import Strategy
from fitkit.testing import BoringModule, RandomDataset, quiet_trainer

FEATURES = 4
Where = set[tuple[int, int]]  # (epoch, batch_idx)


def make_loader(num_batches: int, batch_size: int = 2) -> DataLoader[torch.Tensor]:
    torch.manual_seed(7)  # the data, drawn once; no shuffling
    return DataLoader(RandomDataset(FEATURES, num_batches * batch_size), batch_size=batch_size)


class NanAt(BoringModule):
    """Multiplies the loss by ``bad_value`` at the given (epoch, batch_idx), then logs it."""

    train_dataloader = val_dataloader = test_dataloader = predict_dataloader = None  # type: ignore[assignment]

    def __init__(self, bad: Where = frozenset(), bad_value: float = math.nan, opt: str = "sgd") -> None:
        super().__init__(FEATURES, 2)
        self.bad, self.bad_value, self.opt = set(bad), bad_value, opt

    def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        loss = self.loss(self(batch))
        if (self.current_epoch, batch_idx) in self.bad:
            loss = loss * self.bad_value
        self.log("train_loss", loss)
        self.log("batch_mean", batch.mean())
        return loss

    def configure_optimizers(self) -> Any:
        if self.opt == "lbfgs":
            return torch.optim.LBFGS(self.layer.parameters(), lr=0.5, max_iter=3)
        return torch.optim.SGD(self.layer.parameters(), lr=0.1, momentum=0.9)


def fresh(**kwargs: Any) -> tuple[NanAt, NanAt]:
    """A model and an untouched copy of it (the raw loop's starting point)."""
    torch.manual_seed(3)
    model = NanAt(**kwargs)
    return model, copy.deepcopy(model)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def raw_loop(model: NanAt, epochs: int, num_batches: int, skip: Where, accumulate: int = 1) -> NanAt:
    """The hand-written loop that drops the losses at ``skip``: what ``nonfinite_loss="skip"`` must equal."""
    opt = model.configure_optimizers()
    loader = make_loader(num_batches)
    for epoch in range(epochs):
        has_grads = False
        for i, batch in enumerate(loader):
            if (epoch, i) not in skip:
                loss = model.loss(model(batch))
                (loss / accumulate if accumulate > 1 else loss).backward()
                has_grads = True
            if ((i + 1) % accumulate == 0 or i + 1 == num_batches) and has_grads:
                opt.step()
                opt.zero_grad(set_to_none=True)
                has_grads = False
    return model


class Snapshots(fk.Callback):
    """The weights after every training batch."""

    def __init__(self) -> None:
        self.after: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer: fk.Trainer, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.after.append(copy.deepcopy(module.state_dict()))


# -- "raise" (the default) ---------------------------------------------------------------------
@pytest.mark.parametrize(("bad_value", "shown"), [(math.nan, "nan"), (math.inf, "inf")])
def test_raise_names_where_and_what_was_logged_and_keeps_weights_finite(
    tmp_path: Path, bad_value: float, shown: str
) -> None:
    model, _ = fresh(bad={(1, 2)}, bad_value=bad_value)
    snaps = Snapshots()
    on_exc = OnExceptionCheckpoint(tmp_path)
    trainer = quiet_trainer(max_epochs=3, callbacks=[snaps, on_exc], enable_checkpointing=True)
    with pytest.raises(fk.FitkitRuntimeError) as info:
        trainer.fit(model, make_loader(4))
    message = str(info.value)
    assert f"`training_step() loss={shown}` is not valid" in message
    assert "at epoch 1, batch 2 (global step 6)" in message
    assert f"train_loss={shown}" in message and "batch_mean=" in message
    assert "nonfinite_loss='skip'" in message and "detect_anomaly=True" in message
    # Raised before backward: the weights are those after the previous batch, bitwise.
    assert trainer.global_step == 6 and len(snaps.after) == 6
    assert all(torch.equal(v, snaps.after[-1][k]) for k, v in model.state_dict().items())
    saved = load(on_exc.ckpt_path)["state_dict"]
    assert all(torch.isfinite(v).all() for v in saved.values())
    assert all(torch.equal(v, snaps.after[-1][k]) for k, v in saved.items())
    assert all(p.grad is None for p in model.parameters())


class ManualNanAt(NanAt):
    """``NanAt`` in manual optimization: the loss goes through ``manual_backward``."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        opt = self.optimizers()
        self.manual_backward(super().training_step(batch, batch_idx))
        opt.step()
        opt.zero_grad()


def test_raise_in_manual_optimization_names_manual_backward() -> None:
    torch.manual_seed(3)
    model = ManualNanAt(bad={(0, 2)})
    with pytest.raises(
        fk.FitkitRuntimeError, match=r"`manual_backward\(\) loss=nan`.*epoch 0, batch 2 \(global step 2\)"
    ):
        quiet_trainer(max_epochs=1).fit(model, make_loader(4))


class SlowReadCPU(fk.accelerators.CPUAccelerator):
    """The CPU, declared as a device whose host reads wait for a queue (as CUDA's do)."""

    host_reads_are_free = False


def test_raise_is_deferred_to_epoch_end_where_host_reads_are_not_free() -> None:
    torch.manual_seed(3)
    model = ManualNanAt(bad={(0, 2)})
    trainer = quiet_trainer(max_epochs=2, accelerator=SlowReadCPU())  # log_every_n_steps=50: epoch end
    with pytest.raises(fk.FitkitRuntimeError) as info:
        trainer.fit(model, make_loader(4))
    message = str(info.value)
    assert message.startswith(
        "`manual_backward() loss=nan` is not valid: it is not finite at epoch 0, batch 2 (global step 2)"
    )
    assert "Detected at global step 4, 2 optimizer step(s) later" in message, message
    assert "Logged at detection: train_loss=nan" in message, message
    assert trainer.current_epoch == 0  # caught before the next epoch began
    assert not all(torch.isfinite(p).all() for p in model.parameters())  # the weights took the NaN


def test_skip_checks_every_step_even_where_host_reads_are_not_free() -> None:
    # "skip" must know before backward: it keeps the exact per-step check (a host read per step).
    bad = {(0, 1), (1, 3)}
    model, init = fresh(bad=bad)
    trainer = quiet_trainer(max_epochs=2, nonfinite_loss="skip", accelerator=SlowReadCPU())
    with pytest.warns(RuntimeWarning, match="Skipped the training_step"):
        trainer.fit(model, make_loader(4))
    assert trainer.skipped_nonfinite_steps == 2
    assert same_weights(model, raw_loop(init, 2, 4, bad))


# -- "skip" -------------------------------------------------------------------------------------
def test_skip_continues_and_equals_a_raw_loop_that_skips_the_same_batches() -> None:
    bad = {(0, 1), (1, 3)}
    model, init = fresh(bad=bad)
    trainer = quiet_trainer(max_epochs=2, nonfinite_loss="skip")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(model, make_loader(4))
    ours = [w for w in caught if "Skipped the training_step() loss" in str(w.message)]
    assert len(ours) == 1 and issubclass(ours[0].category, RuntimeWarning)  # once, with the location
    assert "at epoch 0, batch 1 (global step 1)" in str(ours[0].message)
    assert trainer.skipped_nonfinite_steps == 2 and trainer.global_step == 6
    assert same_weights(model, raw_loop(init, 2, 4, bad))
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_skip_inside_accumulation_windows_steps_the_rest_of_the_window() -> None:
    # Windows of 3: [0 1 2] loses batch 1 and still steps; [3 4 5] loses everything and does not
    # step; the last window [6] of epoch 0 is whole. Epoch 1 is clean.
    bad = {(0, 1), (0, 3), (0, 4), (0, 5)}
    model, init = fresh(bad=bad)
    trainer = quiet_trainer(max_epochs=2, nonfinite_loss="skip", accumulate_grad_batches=3)
    with pytest.warns(RuntimeWarning, match=r"Skipped the training_step\(\) loss \(nan\)"):
        trainer.fit(model, make_loader(7))
    assert trainer.skipped_nonfinite_steps == 4
    assert trainer.global_step == 2 + 3  # epoch 0: windows 1 and 3; epoch 1: all three
    assert same_weights(model, raw_loop(init, 2, 7, bad, accumulate=3))


def test_skip_with_a_closure_optimizer_abandons_that_step() -> None:
    bad = {(0, 1)}
    model, init = fresh(bad=bad, opt="lbfgs")
    trainer = quiet_trainer(max_epochs=1, nonfinite_loss="skip")
    with pytest.warns(RuntimeWarning, match=r"Skipped the training_step\(\) loss \(nan\)"):
        trainer.fit(model, make_loader(3))
    assert trainer.skipped_nonfinite_steps == 1 and trainer.global_step == 2

    opt = init.configure_optimizers()
    for i, batch in enumerate(make_loader(3)):
        if (0, i) in bad:
            continue

        def closure(batch: torch.Tensor = batch) -> torch.Tensor:
            opt.zero_grad(set_to_none=True)
            loss = init.loss(init(batch))
            loss.backward()
            return loss.detach()

        opt.step(closure)
        opt.zero_grad(set_to_none=True)
    assert same_weights(model, init)


def test_raise_with_a_closure_optimizer_leaves_the_weights_alone() -> None:
    model, _ = fresh(bad={(0, 1)}, opt="lbfgs")
    snaps = Snapshots()
    with pytest.raises(fk.FitkitRuntimeError, match=r"epoch 0, batch 1 \(global step 1\)"):
        quiet_trainer(max_epochs=1, callbacks=[snaps]).fit(model, make_loader(3))
    assert all(torch.equal(v, snaps.after[-1][k]) for k, v in model.state_dict().items())


def test_skip_in_manual_optimization_makes_manual_backward_a_no_op() -> None:
    class Manual(NanAt):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.automatic_optimization = False
            self.backwards = 0

        def on_after_backward(self) -> None:
            self.backwards += 1

        def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
            opt = self.optimizers()
            self.manual_backward(super().training_step(batch, batch_idx))
            opt.step()  # after a skipped backward the gradients are None: SGD changes nothing
            opt.zero_grad(set_to_none=True)

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.layer.parameters(), lr=0.1)  # no momentum: a None grad is no step

    bad = {(0, 1), (0, 2)}
    torch.manual_seed(3)
    model = Manual(bad=bad)
    init = copy.deepcopy(model)
    trainer = quiet_trainer(max_epochs=1, nonfinite_loss="skip")
    with pytest.warns(
        RuntimeWarning, match=r"Skipped the manual_backward\(\) loss \(nan\) at epoch 0, batch 1 .*: it is not finite"
    ):
        trainer.fit(model, make_loader(4))
    assert trainer.skipped_nonfinite_steps == 2 and model.backwards == 2
    assert same_weights(model, raw_loop(init, 1, 4, bad))


# -- "ignore" -----------------------------------------------------------------------------------
class CountingStrategy(SingleDeviceStrategy):
    def __init__(self) -> None:
        super().__init__("cpu")
        self.checks = 0

    def loss_is_finite(self, loss: torch.Tensor, agree: bool = False) -> bool:
        self.checks += 1
        return super().loss_is_finite(loss, agree)


def test_ignore_lets_nan_through_and_never_calls_the_check() -> None:
    model, _ = fresh(bad={(0, 1)})
    strategy = CountingStrategy()
    trainer = quiet_trainer(max_epochs=1, nonfinite_loss="ignore", strategy=strategy)
    trainer.fit(model, make_loader(3))
    assert trainer.global_step == 3 and trainer.skipped_nonfinite_steps == 0
    assert all(torch.isnan(p).all() for p in model.parameters())  # the raw loop's behaviour
    assert strategy.checks == 0

    model, _ = fresh()
    strategy = CountingStrategy()
    quiet_trainer(max_epochs=1, strategy=strategy).fit(model, make_loader(3))
    assert strategy.checks == 3  # the default policy: one check per training step


def test_loss_is_finite_on_cpu_scalars() -> None:
    s = Strategy()
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        assert s.loss_is_finite(torch.tensor(1.5, dtype=dtype))
        for bad in (math.nan, math.inf, -math.inf):
            assert not s.loss_is_finite(torch.tensor(bad, dtype=dtype))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "converting a tensor that requires grad" warning
        assert s.loss_is_finite(torch.ones(1, requires_grad=True).sum())


# -- 16-mixed: the scaler's skipped steps are not errors ---------------------------------------
def test_16_mixed_scaler_skips_on_inf_gradients_are_not_errors() -> None:
    # A huge scale overflows the float16 gradients: the scaler skips steps and lowers the
    # scale. The loss itself stays finite, so nothing is raised or skipped by fitkit.
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40, growth_interval=1000)
    model, _ = fresh()
    trainer = quiet_trainer(max_epochs=1, precision=MixedPrecision("16-mixed", "cpu", scaler=scaler))
    trainer.fit(model, make_loader(6))
    assert scaler.get_scale() < 2.0**40  # the scaler did skip steps
    assert trainer.global_step == 6 and trainer.skipped_nonfinite_steps == 0
    assert all(torch.isfinite(p).all() for p in model.parameters())


# -- detect_anomaly -----------------------------------------------------------------------------
class NanGradient(NanAt):
    """A finite loss whose backward makes NaN: sqrt of negatives, masked out by where."""

    def __init__(self) -> None:
        super().__init__()
        self.anomaly_seen: list[bool] = []

    def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        self.anomaly_seen.append(torch.is_anomaly_enabled())
        out = self(batch)
        return torch.where(out > 0, torch.sqrt(out), torch.zeros_like(out)).sum()


def test_detect_anomaly_names_the_backward_op_and_restores_the_flag() -> None:
    before = torch.is_anomaly_enabled()
    assert not before
    torch.manual_seed(3)
    model = NanGradient()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # anomaly mode warns with the forward traceback
        with pytest.raises(RuntimeError, match=r"SqrtBackward0.*returned nan"):
            quiet_trainer(max_epochs=1, detect_anomaly=True).fit(model, make_loader(2))
    assert model.anomaly_seen == [True]
    assert torch.is_anomaly_enabled() is False  # restored after the error

    # Without it the NaN gradient goes unnoticed (only the loss is checked)...
    torch.manual_seed(3)
    model = NanGradient()
    quiet_trainer(max_epochs=1, max_steps=1).fit(model, make_loader(2))
    assert torch.isnan(model.layer.weight).any() and model.anomaly_seen == [False]


def test_detect_anomaly_false_leaves_a_global_anomaly_mode_on() -> None:
    torch.autograd.set_detect_anomaly(True)
    try:
        model, _ = fresh()
        seen: list[bool] = []
        record = fk.callbacks.LambdaCallback(on_train_batch_start=lambda *a: seen.append(torch.is_anomaly_enabled()))
        quiet_trainer(max_epochs=1, callbacks=[record]).fit(model, make_loader(2))
        assert seen == [True, True] and torch.is_anomaly_enabled()
        quiet_trainer(max_epochs=1, detect_anomaly=True).fit(model, make_loader(2))
        assert torch.is_anomaly_enabled()  # restored to the user's True
    finally:
        torch.autograd.set_detect_anomaly(False)


# -- arguments ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        ({"detect_anomaly": "yes"}, fk.FitkitTypeError, "`detect_anomaly='yes'` is not valid: it must be a bool"),
        ({"detect_anomaly": None}, fk.FitkitTypeError, "`detect_anomaly=None` is not valid"),
        ({"nonfinite_loss": "warn"}, fk.MisconfigurationError, "`nonfinite_loss='warn'` is not valid: unknown policy"),
        ({"nonfinite_loss": True}, fk.FitkitTypeError, "`nonfinite_loss=True` is not valid: it must be a str"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], error: type[Exception], text: str) -> None:
    with pytest.raises(error) as info:
        fk.Trainer(**kwargs)
    assert text in str(info.value)
    if "nonfinite_loss" in kwargs:
        assert "'raise'" in str(info.value) and "'skip'" in str(info.value) and "'ignore'" in str(info.value)


def test_defaults() -> None:
    t = fk.Trainer(logger=False)
    assert t.detect_anomaly is False and t.nonfinite_loss == "raise" and t.skipped_nonfinite_steps == 0


# -- EarlyStopping ------------------------------------------------------------------------------
def test_early_stopping_stops_on_a_nan_metric_and_says_why() -> None:
    class NanValidation(NanAt):
        def validation_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
            self.log("val_loss", torch.tensor(math.nan if self.current_epoch == 1 else 1.0 / (1 + self.current_epoch)))

    stop = EarlyStopping(monitor="val_loss", patience=100)
    trainer = quiet_trainer(max_epochs=5, callbacks=[stop], num_sanity_val_steps=0)
    with pytest.warns(RuntimeWarning, match=r"EarlyStopping at epoch 1: Monitored metric val_loss = nan is not finite"):
        trainer.fit(NanValidation(), make_loader(2), make_loader(1))
    assert stop.stopped_epoch == 1 and trainer.current_epoch == 2 and trainer.should_stop
    assert stop.stopping_reason_message is not None and "is not finite" in stop.stopping_reason_message
    assert float(stop.best_score) == 1.0


# -- several processes: every rank agrees ------------------------------------------------------
DDP_SCRIPT = """
import json, sys
import torch
from torch.utils.data import DataLoader, TensorDataset
import fitkit as fk

cfg = json.loads(sys.argv[1])

class M(fk.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = ((self.layer(x) - y) ** 2).mean()
        if [self.global_rank, batch_idx] in cfg["bad"]:
            loss = loss * float("nan")
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)

g = torch.Generator().manual_seed(1)
x = torch.randn(48, 4, generator=g)
trainer = fk.Trainer(
    accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, nonfinite_loss=cfg["policy"],
    accumulate_grad_batches=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
    enable_model_summary=False, num_sanity_val_steps=0,
)
model = M()
trainer.fit(model, DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4))
torch.save(
    {"weights": model.state_dict(), "skipped": trainer.skipped_nonfinite_steps, "step": trainer.global_step},
    cfg["out"] + "." + str(trainer.global_rank),
)
"""


def _ddp_job(tmp_path: Path, policy: str, bad: list[list[int]]) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "nonfinite_ddp.py"
    script.write_text(DDP_SCRIPT)
    cfg = {"policy": policy, "bad": bad, "out": str(tmp_path / "out")}
    proc = subprocess.Popen(
        [sys.executable, str(script), json.dumps(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:  # a hang: kill the launcher and its ranks, then fail
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@pytest.mark.slow
def test_ddp_skip_on_one_rank_is_agreed_by_every_rank(tmp_path: Path) -> None:
    # Six batches per rank in windows of two. Rank 1's batch 1 ends a window: the window is
    # dropped on both ranks. Rank 0's batch 2 starts one: both ranks skip it, batch 3 steps.
    proc = _ddp_job(tmp_path, "skip", [[1, 1], [0, 2]])
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [torch.load(f"{tmp_path / 'out'}.{rank}", weights_only=True) for rank in (0, 1)]
    for r in results:
        assert r["skipped"] == 2 and r["step"] == 2
        assert all(torch.isfinite(v).all() for v in r["weights"].values())
    assert all(torch.equal(v, results[1]["weights"][k]) for k, v in results[0]["weights"].items())


@pytest.mark.slow
def test_ddp_raise_on_one_rank_ends_the_job_without_a_per_step_collective(tmp_path: Path) -> None:
    # "raise" needs no agreement: the rank that sees the NaN raises, and the launcher ends
    # the job (rank 0 is left in its gradient all-reduce). No per-step all-reduce.
    start = time.monotonic()
    proc = _ddp_job(tmp_path, "raise", [[1, 3]])
    elapsed = time.monotonic() - start
    assert proc.returncode != 0
    err = proc.stderr
    assert (
        "`training_step() loss=nan` is not valid: it is not finite at epoch 0, batch 3 (global step 1; rank 1 of 2)"
        in err
    ), err[-3000:]
    assert "another process's loss is not finite" not in err, err[-3000:]
    assert "rank 0 of 2" not in err, err[-3000:]  # rank 0 saw a finite loss and raised nothing of its own
    assert elapsed < 85, elapsed  # ended by the launcher, not by a collective's timeout
