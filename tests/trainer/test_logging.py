"""``self.log`` semantics: per-hook defaults, keys, epoch reductions, metric dicts.

The modules here are cheap on purpose: one scalar parameter, batches built by
hand (``Batches``), so that each test pins one rule of ``self.log`` and runs in
milliseconds.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import fitkit as fk
from fitkit.trainer import logging as fk_logging


class Batches:
    """A loader that yields the given batches, in order, with a ``__len__``."""

    def __init__(self, batches: list[Any]) -> None:
        self.batches = batches

    def __iter__(self) -> Iterator[Any]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def values_loader(values: list[float], batch_size: int = 1) -> Batches:
    """Batches ``(x,)`` holding ``values`` in chunks of ``batch_size`` (the last may be short)."""
    x = torch.tensor(values, dtype=torch.float32)
    return Batches([(x[i : i + batch_size],) for i in range(0, len(values), batch_size)])


Hook = Callable[..., Any]


class Probe(fk.Module):
    """One scalar parameter; each step runs the function the test hands it, then returns a loss."""

    def __init__(self, train: Hook | None = None, val: Hook | None = None, test: Hook | None = None) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.train_fn, self.val_fn, self.test_fn = train, val, test

    def training_step(self, batch: Any, batch_idx: int) -> Any:
        if self.train_fn is not None:
            self.train_fn(self, batch, batch_idx)
        return (self.w * batch[0]).mean()

    def validation_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.val_fn is not None:
            self.val_fn(self, batch, batch_idx, dataloader_idx)

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.test_fn is not None:
            self.test_fn(self, batch, batch_idx, dataloader_idx)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.0)


def trainer(**kwargs: Any) -> fk.Trainer:
    defaults: dict[str, Any] = dict(
        max_epochs=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
    )
    defaults.update(kwargs)
    return fk.Trainer(**defaults)


class Snapshot(fk.Callback):
    """Copies ``trainer.callback_metrics`` at the hooks named in ``at``."""

    def __init__(self, *at: str) -> None:
        self.seen: dict[str, list[dict[str, Any]]] = {name: [] for name in at}

    def _record(self, name: str, trainer: fk.Trainer) -> None:
        if name in self.seen:
            self.seen[name].append(dict(trainer.callback_metrics))

    def on_train_batch_end(self, trainer: Any, module: Any, *args: Any) -> None:
        self._record("on_train_batch_end", trainer)

    def on_validation_batch_end(self, trainer: Any, module: Any, *args: Any) -> None:
        self._record("on_validation_batch_end", trainer)

    def on_validation_end(self, trainer: Any, module: Any) -> None:
        self._record("on_validation_end", trainer)

    def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
        self._record("on_train_epoch_end", trainer)


snapshot = Snapshot


def as_float(value: Any) -> float:
    return float(value)


# -- defaults by hook -------------------------------------------------------------------------------------
def test_default_on_step_on_epoch_by_hook() -> None:
    class Defaults(Probe):
        def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
            self.log("batch_end", float(batch_idx))

        def on_train_epoch_end(self) -> None:
            self.log("epoch_end", 7.0)

        def on_validation_epoch_end(self) -> None:
            self.log("val_epoch_end", 8.0)

    model = Defaults(
        train=lambda m, b, i: m.log("train_step", torch.tensor(float(i))),
        val=lambda m, b, i, d: m.log("val_step", torch.tensor(float(i))),
    )
    spy = snapshot("on_train_batch_end", "on_validation_batch_end")
    t = trainer(callbacks=[spy])
    t.fit(model, values_loader([1.0] * 4), values_loader([1.0] * 4))

    cb = t.callback_metrics
    # training_step and on_train_batch_end: per step only -> the last step's value, no _step/_epoch keys
    assert as_float(cb["train_step"]) == 3.0
    assert as_float(cb["batch_end"]) == 3.0
    # validation_step: per epoch only -> the mean over the epoch
    assert as_float(cb["val_step"]) == 1.5
    # epoch-level hooks: per epoch
    assert as_float(cb["epoch_end"]) == 7.0
    assert as_float(cb["val_epoch_end"]) == 8.0
    for key in ("train_step", "val_step", "epoch_end", "batch_end"):
        assert f"{key}_step" not in cb and f"{key}_epoch" not in cb

    # per-step values are visible during the epoch; epoch values are not
    during_train = spy.seen["on_train_batch_end"]
    assert [as_float(s["train_step"]) for s in during_train] == [0.0, 1.0, 2.0, 3.0]
    assert all("epoch_end" not in s for s in during_train)
    assert all("val_step" not in s for s in spy.seen["on_validation_batch_end"])

    logged = t.logged_metrics
    assert as_float(logged["train_step"]) == 3.0
    assert as_float(logged["val_step"]) == 1.5
    assert as_float(logged["epoch_end"]) == 7.0


def test_logging_in_train_start_and_epoch_start_counts() -> None:
    class EarlyLogs(Probe):
        def on_train_start(self) -> None:
            self.log("at_train_start", 3.0)

        def on_train_epoch_start(self) -> None:
            self.log("at_epoch_start", float(self.current_epoch + 5))

    t = trainer(max_epochs=2)
    t.fit(EarlyLogs(), values_loader([1.0] * 2))
    assert as_float(t.callback_metrics["at_train_start"]) == 3.0
    assert as_float(t.callback_metrics["at_epoch_start"]) == 6.0  # epoch 1's value, not carried over


def test_both_on_step_and_on_epoch_give_step_and_epoch_keys() -> None:
    model = Probe(
        train=lambda m, b, i: m.log("x", torch.tensor(float(i)), on_step=True, on_epoch=True),
        val=lambda m, b, i, d: m.log("v", torch.tensor(float(i)), on_step=True, on_epoch=True),
    )
    spy = snapshot("on_train_batch_end", "on_validation_batch_end")
    t = trainer(callbacks=[spy])
    t.fit(model, values_loader([1.0] * 4), values_loader([1.0] * 2))

    cb = t.callback_metrics
    assert as_float(cb["x_step"]) == 3.0
    assert as_float(cb["x_epoch"]) == 1.5
    assert as_float(cb["x"]) == 1.5  # after the epoch the plain name holds the epoch value
    assert as_float(cb["v_step"]) == 1.0
    assert as_float(cb["v_epoch"]) == 0.5
    # during the epoch the plain name follows the step value
    assert [as_float(s["x"]) for s in spy.seen["on_train_batch_end"]] == [0.0, 1.0, 2.0, 3.0]
    assert [as_float(s["x_step"]) for s in spy.seen["on_train_batch_end"]] == [0.0, 1.0, 2.0, 3.0]
    assert [as_float(s["v_step"]) for s in spy.seen["on_validation_batch_end"]] == [0.0, 1.0]

    logged = t.logged_metrics
    assert {"x_step", "x_epoch", "v_epoch"} <= set(logged)
    assert "x" not in logged


def test_overriding_the_defaults() -> None:
    model = Probe(
        train=lambda m, b, i: m.log("train_epoch_only", float(i), on_step=False, on_epoch=True),
        val=lambda m, b, i, d: m.log("val_step_only", float(i), on_step=True, on_epoch=False),
    )
    t = trainer()
    t.fit(model, values_loader([1.0] * 4), values_loader([1.0] * 3))
    assert as_float(t.callback_metrics["train_epoch_only"]) == 1.5
    assert as_float(t.callback_metrics["val_step_only"]) == 2.0  # the last step, no mean


# -- epoch means are weighted by batch size ---------------------------------------------------------------
def test_epoch_mean_is_weighted_by_batch_size() -> None:
    def log_mean(m: Probe, batch: Any, *_: Any) -> None:
        m.log("m", batch[0].mean(), on_step=False, on_epoch=True)

    data = [float(v) for v in range(10)]  # batches of 4, 4, 2: means 1.5, 5.5, 8.5
    t = trainer()
    t.fit(Probe(train=log_mean, val=log_mean), values_loader(data, 4), values_loader(data, 4))
    # the mean of the data (4.5), not the mean of the batch means (5.1667)
    assert as_float(t.callback_metrics["m"]) == pytest.approx(4.5)
    assert t.validate(Probe(val=log_mean), values_loader(data, 4), verbose=False) == [{"m": pytest.approx(4.5)}]


def test_explicit_batch_size_weights_the_mean() -> None:
    def log(m: Probe, batch: Any, i: int, *_: Any) -> None:
        m.log("w", torch.tensor(float(i)), batch_size=i + 1)

    t = trainer()
    (result,) = t.validate(Probe(val=log), values_loader([0.0] * 3), verbose=False)
    assert result["w"] == pytest.approx((0 * 1 + 1 * 2 + 2 * 3) / (1 + 2 + 3))


def test_batch_size_is_found_inside_nested_batches() -> None:
    batches = Batches([{"x": torch.full((3, 2), 1.0)}, {"x": torch.full((1, 2), 5.0)}])

    def log(m: Probe, batch: Any, *_: Any) -> None:
        m.log("nested", batch["x"].mean())

    (result,) = trainer().validate(Probe(val=log), batches, verbose=False)
    assert result["nested"] == pytest.approx((3 * 1.0 + 1 * 5.0) / 4)


@pytest.mark.parametrize(
    ("reduce_fx", "expected"),
    [
        ("mean", 2.8),
        ("avg", 2.8),
        (torch.mean, 2.8),
        ("sum", 14.0),
        (torch.sum, 14.0),
        ("max", 5.0),
        (torch.max, 5.0),
        ("min", 1.0),
        (torch.min, 1.0),
    ],
)
def test_reduce_fx(reduce_fx: Any, expected: float) -> None:
    def log(m: Probe, batch: Any, *_: Any) -> None:
        m.log("r", batch[0].sum(), reduce_fx=reduce_fx)

    (result,) = trainer().validate(Probe(val=log), values_loader([3.0, 1.0, 4.0, 1.0, 5.0]), verbose=False)
    assert result["r"] == pytest.approx(expected)


def test_reduce_fx_in_training_epochs() -> None:
    def log(m: Probe, batch: Any, i: int) -> None:
        value = batch[0].sum()
        m.log("tsum", value, on_step=False, on_epoch=True, reduce_fx="sum")
        m.log("tmax", value, on_step=False, on_epoch=True, reduce_fx="max")
        m.log("tmin", value, on_step=False, on_epoch=True, reduce_fx="min")

    t = trainer(max_epochs=2)
    t.fit(Probe(train=log), values_loader([2.0, -1.0, 7.0]))
    cb = t.callback_metrics
    # the second epoch's aggregates only: nothing carried over from the first
    assert (as_float(cb["tsum"]), as_float(cb["tmax"]), as_float(cb["tmin"])) == (8.0, 7.0, -1.0)


# -- values stay tensors ------------------------------------------------------------------------------------
def test_logged_values_stay_detached_tensors() -> None:
    logged: list[torch.Tensor] = []

    def log(m: Probe, batch: Any, i: int) -> None:
        loss = (m.w * batch[0]).mean() + 1.0
        assert loss.requires_grad
        logged.append(loss)
        m.log("loss", loss, on_step=True, on_epoch=True, prog_bar=True)

    class Check(fk.Callback):
        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            value = trainer.callback_metrics["loss_step"]
            assert isinstance(value, torch.Tensor)
            assert not value.requires_grad
            # the logged value itself, on its own device: no conversion to a Python float
            assert value.device == logged[-1].device
            assert torch.equal(value, logged[-1].detach())

    t = trainer(callbacks=[Check()])
    t.fit(Probe(train=log), values_loader([1.0, 2.0, 3.0]))
    for metrics in (t.callback_metrics, t.logged_metrics):
        assert metrics, metrics
        for key, value in metrics.items():
            assert isinstance(value, torch.Tensor), (key, value)
            assert not value.requires_grad
    assert all(isinstance(v, float) for v in t.progress_bar_metrics.values())


def test_in_place_update_after_logging_does_not_change_the_logged_value() -> None:
    accumulator = torch.zeros(())

    def log(m: Probe, batch: Any, i: int) -> None:
        accumulator.add_(1.0)
        m.log("acc", accumulator, on_step=False, on_epoch=True)

    t = trainer()
    t.fit(Probe(train=log), values_loader([1.0] * 4))
    assert as_float(t.callback_metrics["acc"]) == 2.5  # the mean of 1, 2, 3, 4


class SlowReadCPU(fk.accelerators.CPUAccelerator):
    """The CPU, declared as a device where a host read waits for a queue (as on CUDA): the public seam."""

    host_reads_are_free = False


def _count_host_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    for name in ("item", "tolist", "__float__", "__int__", "__bool__"):
        original = getattr(torch.Tensor, name)

        def counting(self: torch.Tensor, *args: Any, _name: str = name, _orig: Any = original) -> Any:
            calls.append(_name)
            return _orig(self, *args)

        monkeypatch.setattr(torch.Tensor, name, counting)
    return calls


def test_no_host_sync_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a device whose host reads are not free, a fit reads no tensor per step.

    Logging a tensor every step never calls ``item()``/``float()`` on it; the default
    non-finite loss check (``nonfinite_loss="raise"``) reads the deferred losses once per
    ``log_every_n_steps`` flush (one ``tolist``), not once per step.
    """
    calls = _count_host_reads(monkeypatch)

    def log(m: Probe, batch: Any, i: int) -> None:
        m.log("a", batch[0].sum())
        m.log("b", batch[0].sum(), on_step=True, on_epoch=True, prog_bar=True)
        m.log("c", batch[0].max(), on_epoch=True, reduce_fx="max")

    t = trainer(log_every_n_steps=4, accelerator=SlowReadCPU())
    model = Probe(train=log, val=lambda m, b, i, d: m.log("v", b[0].sum()))
    t.fit(model, values_loader([1.0] * 12), values_loader([1.0] * 2))  # 12 steps: 3 flushes
    monkeypatch.undo()
    assert calls == ["tolist"] * 3, calls
    assert as_float(t.callback_metrics["b_epoch"]) == 1.0


def test_no_host_read_at_all_with_nonfinite_loss_ignore(monkeypatch: pytest.MonkeyPatch) -> None:
    """Logging alone (the non-finite check off) reads nothing on the host during a fit."""
    calls = _count_host_reads(monkeypatch)
    t = trainer(log_every_n_steps=2, accelerator=SlowReadCPU(), nonfinite_loss="ignore")
    t.fit(Probe(train=lambda m, b, i: m.log("b", b[0].sum(), on_epoch=True)), values_loader([1.0] * 6))
    monkeypatch.undo()
    assert calls == [], calls


def test_deferred_nonfinite_check_catches_nan_at_the_next_flush() -> None:
    """Where reads are not free, a NaN loss is caught at the next flush, naming the step it came from."""
    seen: list[int] = []

    class Nan(Probe):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            seen.append(batch_idx)
            self.log("x", batch[0].sum())
            loss = super().training_step(batch, batch_idx)
            return loss * float("nan") if batch_idx == 5 else loss

    t = trainer(log_every_n_steps=4, accelerator=SlowReadCPU(), max_epochs=1)
    model = Nan()
    with pytest.raises(fk.FitkitRuntimeError) as info:
        t.fit(model, values_loader([float(i) for i in range(12)]))
    message = str(info.value)
    assert seen == list(range(8)), seen  # flushed after batch 7 (steps 4..7), not at batch 5
    assert message.startswith("`training_step() loss=nan` is not valid"), message
    assert "epoch 0, batch 5 (global step 5)" in message, message
    assert "3 of the 4 losses checked at this flush were not finite" in message, message  # NaN weights after
    assert "Detected at global step 8, 3 optimizer step(s) later" in message, message
    assert "the weights took those 3 step(s)" in message and "before global step 5" in message, message
    assert "Logged at detection: x=7" in message, message
    assert not torch.isfinite(model.w).item()  # deferred: the weights did take the NaN step


def test_deferred_nonfinite_check_flushes_at_epoch_end() -> None:
    """A NaN after the last log flush of an epoch is caught at that epoch's end, before the next epoch."""
    seen: list[tuple[int, int]] = []

    class Nan(Probe):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            seen.append((self.current_epoch, batch_idx))
            loss = super().training_step(batch, batch_idx)
            return loss * float("inf") if batch_idx == 4 else loss

    t = trainer(log_every_n_steps=50, accelerator=SlowReadCPU(), max_epochs=2)
    with pytest.raises(fk.FitkitRuntimeError, match=r"epoch 0, batch 4 \(global step 4\).*1 optimizer step"):
        t.fit(Nan(), values_loader([1.0] * 5))
    assert seen == [(0, i) for i in range(5)]


# -- metric objects (update / compute / reset) ----------------------------------------------------------------
class SumMetric:
    """The torchmetrics protocol in a dozen lines: a running sum."""

    def __init__(self) -> None:
        self.total = torch.tensor(0.0)
        self.updates = self.computes = self.resets = 0

    def update(self, x: torch.Tensor) -> None:
        self.total = self.total + x.sum()
        self.updates += 1

    def compute(self) -> torch.Tensor:
        self.computes += 1
        return self.total

    def reset(self) -> None:
        self.total = torch.tensor(0.0)
        self.resets += 1


class _ValEnd(fk.Callback):
    def __init__(self, key: str) -> None:
        self.key, self.values = key, []

    def on_validation_end(self, trainer: Any, module: Any) -> None:
        if not trainer.sanity_checking:
            self.values.append(as_float(trainer.callback_metrics[self.key]))


def test_metric_object_is_computed_at_epoch_end_and_reset() -> None:
    metric = SumMetric()

    def log(m: Probe, batch: Any, *_: Any) -> None:
        metric.update(batch[0])
        m.log("vsum", metric)

    seen = _ValEnd("vsum")
    t = trainer(max_epochs=3, callbacks=[seen])
    t.fit(Probe(val=log), values_loader([1.0] * 2), values_loader([1.0, 2.0, 3.0]))
    assert seen.values == [6.0, 6.0, 6.0]  # each epoch on its own
    assert metric.computes == 3  # once per epoch, not per step
    assert metric.resets >= 3
    assert isinstance(t.callback_metrics["vsum"], torch.Tensor)


def test_metric_object_ignores_sanity_check_batches() -> None:
    metric = SumMetric()

    def log(m: Probe, batch: Any, *_: Any) -> None:
        metric.update(batch[0])
        m.log("vsum", metric)

    seen = _ValEnd("vsum")
    t = trainer(num_sanity_val_steps=2, callbacks=[seen])
    t.fit(Probe(val=log), values_loader([1.0] * 2), values_loader([1.0, 2.0, 3.0]))
    assert seen.values == [6.0]  # not 6 + the sanity batches' 1 + 2


def test_metric_object_in_training_epochs() -> None:
    epoch_metric, step_metric = SumMetric(), SumMetric()

    def log(m: Probe, batch: Any, i: int) -> None:
        epoch_metric.update(batch[0])
        m.log("train_sum", epoch_metric, on_step=False, on_epoch=True)
        step_metric.update(batch[0])
        m.log("running_sum", step_metric)  # training_step default: per step

    t = trainer(max_epochs=2)
    t.fit(Probe(train=log), values_loader([1.0, 2.0, 3.0]))
    assert as_float(t.callback_metrics["train_sum"]) == 6.0
    # the per-step metric starts each epoch afresh, as in Lightning
    assert as_float(t.callback_metrics["running_sum"]) == 6.0
    assert epoch_metric.computes == 2


# -- callback_metrics, logged_metrics, progress_bar_metrics --------------------------------------------------------
def test_the_three_metric_dicts() -> None:
    def train(m: Probe, batch: Any, i: int) -> None:
        m.log("shown", torch.tensor(float(i)), prog_bar=True)
        m.log("hidden", torch.tensor(1.0))
        m.log("not_logged", torch.tensor(2.0), logger=False)

    def val(m: Probe, batch: Any, i: int, d: int) -> None:
        m.log("val_acc", batch[0].mean(), prog_bar=True)
        m.log("val_quiet", batch[0].mean(), logger=False, prog_bar=True)

    t = trainer()
    t.fit(Probe(train=train, val=val), values_loader([1.0] * 3), values_loader([0.5] * 2))

    assert {"shown", "hidden", "not_logged", "val_acc", "val_quiet"} <= set(t.callback_metrics)
    assert {"shown", "hidden", "val_acc"} <= set(t.logged_metrics)
    assert not {"not_logged", "val_quiet"} & set(t.logged_metrics)
    pbar = t.progress_bar_metrics
    assert pbar == {"shown": 2.0, "val_acc": 0.5, "val_quiet": 0.5}
    assert all(type(v) is float for v in pbar.values())


def test_log_every_n_steps_decides_when_step_values_reach_logged_metrics() -> None:
    seen: list[float | None] = []

    class Watch(fk.Callback):
        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
            value = trainer.logged_metrics.get("s")
            seen.append(None if value is None else as_float(value))

    t = trainer(log_every_n_steps=2, callbacks=[Watch()])
    t.fit(Probe(train=lambda m, b, i: m.log("s", float(i))), values_loader([1.0] * 5))
    # read before each batch: the values of batches 1 and 3 arrive after those batches
    assert seen == [None, None, 1.0, 1.0, 3.0]
    assert as_float(t.logged_metrics["s"]) == 3.0  # batch 4 was never flushed
    assert as_float(t.callback_metrics["s"]) == 4.0  # but callbacks see every step


def test_log_dict() -> None:
    def val(m: Probe, batch: Any, i: int, d: int) -> None:
        m.log_dict({"da": batch[0].mean(), "db": 2, "dc": 0.25}, prog_bar=True)

    t = trainer()
    (result,) = t.validate(Probe(val=val), values_loader([1.0, 3.0]), verbose=False)
    assert result == {"da": 2.0, "db": 2.0, "dc": 0.25}
    assert t.progress_bar_metrics == {"da": 2.0, "db": 2.0, "dc": 0.25}


def test_python_numbers_are_logged_as_tensors() -> None:
    def train(m: Probe, batch: Any, i: int) -> None:
        m.log("f", 0.5 * i, on_step=False, on_epoch=True)
        m.log("i", i)
        m.log("both", i, on_step=True, on_epoch=True, reduce_fx="sum")

    spy = snapshot("on_train_batch_end")
    t = trainer()
    t.fit(Probe(train=train), values_loader([1.0] * 4))
    cb = t.callback_metrics
    assert as_float(cb["f"]) == pytest.approx(0.75)
    assert as_float(cb["i"]) == 3.0
    assert as_float(cb["both_epoch"]) == 6.0
    for key in ("f", "i", "both_step", "both_epoch"):
        assert isinstance(cb[key], torch.Tensor), (key, cb[key])
        assert cb[key].is_floating_point()
    for step in spy.seen["on_train_batch_end"]:
        assert isinstance(step["i"], torch.Tensor)


def test_several_val_loaders_suffix_their_keys() -> None:
    def val(m: Probe, batch: Any, i: int, d: int) -> None:
        m.log("v", batch[0].mean())
        m.log("w", batch[0].mean(), on_step=True, on_epoch=True)

    loaders = [values_loader([1.0, 2.0]), values_loader([10.0, 20.0, 30.0])]
    t = trainer()
    t.fit(Probe(val=val), values_loader([1.0] * 2), loaders)
    cb = t.callback_metrics
    assert as_float(cb["v/dataloader_idx_0"]) == 1.5
    assert as_float(cb["v/dataloader_idx_1"]) == 20.0
    assert as_float(cb["w_epoch/dataloader_idx_0"]) == 1.5
    assert as_float(cb["w_step/dataloader_idx_1"]) == 30.0
    assert "v" not in cb

    results = t.validate(Probe(val=val), loaders, verbose=False)
    assert results == [
        {"v/dataloader_idx_0": 1.5, "w_epoch/dataloader_idx_0": 1.5},
        {"v/dataloader_idx_1": 20.0, "w_epoch/dataloader_idx_1": 20.0},
    ]


def test_test_stage_returns_its_metrics() -> None:
    results = trainer().test(
        Probe(test=lambda m, b, i, d: m.log("test_x", b[0].mean())), values_loader([1.0, 2.0, 6.0]), verbose=False
    )
    assert results == [{"test_x": 3.0}]


def test_evaluation_metrics_are_fresh_each_run() -> None:
    model = Probe(val=lambda m, b, i, d: m.log("v", b[0].mean()))
    t = trainer()
    assert t.validate(model, values_loader([1.0, 3.0]), verbose=False) == [{"v": 2.0}]
    assert t.validate(model, values_loader([10.0]), verbose=False) == [{"v": 10.0}]


def test_sanity_check_logs_are_discarded() -> None:
    seen = snapshot("on_validation_end")
    t = trainer(num_sanity_val_steps=1, callbacks=[seen], limit_val_batches=2)
    t.fit(Probe(val=lambda m, b, i, d: m.log("v", b[0].mean())), values_loader([1.0]), values_loader([100.0, 2.0, 3.0]))
    assert "v" not in seen.seen["on_validation_end"][0]  # the sanity run
    assert as_float(t.callback_metrics["v"]) == 51.0  # the real run: both batches, once each


# -- long epochs: buffered step values are compacted ------------------------------------------------------------
def test_long_epoch_compaction_matches_a_direct_computation() -> None:
    n = 2 * fk_logging._COMPACT_AT + 123
    gen = torch.Generator().manual_seed(0)
    sizes = [1 + (i % 5) for i in range(n)]
    values = torch.randn(n, generator=gen) * 10 + 3
    batches = Batches([(torch.full((s,), float(v)),) for s, v in zip(sizes, values, strict=True)])
    buffered: list[int] = []

    class Compacting(fk.Module):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False

        def training_step(self, batch: Any, batch_idx: int) -> None:
            x = batch[0]
            value = x[0]
            self.log("mean", value, on_step=False, on_epoch=True)
            self.log("sum", value, on_step=False, on_epoch=True, reduce_fx="sum")
            self.log("max", value, on_step=False, on_epoch=True, reduce_fx="max")
            self.log("min", value, on_step=False, on_epoch=True, reduce_fx="min")
            self.log("py_mean", float(batch_idx % 7), on_step=False, on_epoch=True, batch_size=1)

        def on_train_epoch_end(self) -> None:
            buffered.append(len(self.trainer._results.stages["train"]["mean"].values))

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.0)

    t = trainer()
    t.fit(Compacting(), batches)
    v = values.double().numpy()
    w = np.array(sizes, dtype=np.float64)
    cb = t.callback_metrics
    assert as_float(cb["mean"]) == pytest.approx(float((v * w).sum() / w.sum()), rel=1e-5)
    assert as_float(cb["sum"]) == pytest.approx(float(v.astype(np.float32).sum()), rel=1e-5)
    assert as_float(cb["max"]) == pytest.approx(float(v.astype(np.float32).max()))
    assert as_float(cb["min"]) == pytest.approx(float(v.astype(np.float32).min()))
    assert as_float(cb["py_mean"]) == pytest.approx(float(np.mean([i % 7 for i in range(n)])), rel=1e-6)
    assert buffered and buffered[0] < fk_logging._COMPACT_AT  # the buffer stayed bounded


# -- logging from callbacks -----------------------------------------------------------------------------------
def test_logging_from_callback_hooks() -> None:
    class Logs(fk.Callback):
        def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            module.log("cb_step", float(batch_idx))

        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            module.log("cb_epoch", 5.0)

        def on_validation_batch_end(
            self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
        ) -> None:
            module.log("cb_val", batch[0].mean(), prog_bar=True)

    t = trainer(callbacks=[Logs()])
    t.fit(Probe(), values_loader([1.0] * 3), values_loader([2.0, 4.0]))
    cb = t.callback_metrics
    assert as_float(cb["cb_step"]) == 2.0
    assert as_float(cb["cb_epoch"]) == 5.0
    assert as_float(cb["cb_val"]) == 3.0
    assert {"cb_step", "cb_epoch", "cb_val"} <= set(t.logged_metrics)
    assert t.progress_bar_metrics["cb_val"] == 3.0


def test_callback_and_module_can_monitor_what_was_logged() -> None:
    """A metric logged in validation is in callback_metrics by on_validation_end and on_train_epoch_end."""
    seen: list[float] = []

    class Monitor(fk.Callback):
        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            seen.append(as_float(trainer.callback_metrics["val_loss"]))

    t = trainer(max_epochs=2, callbacks=[Monitor()])
    t.fit(
        Probe(val=lambda m, b, i, d: m.log("val_loss", b[0].mean() + m.current_epoch)),
        values_loader([1.0]),
        values_loader([1.0, 3.0]),
    )
    assert seen == [2.0, 3.0]


def test_progress_bar_metrics_show_the_latest_step_value_during_training() -> None:
    """The bar reads progress_bar_metrics when it redraws: step values must not lag log_every_n_steps."""
    seen: list[float] = []

    class Probe(fk.Callback):
        def on_train_batch_end(self, trainer: fk.Trainer, module: Any, outputs: Any, batch: Any, i: int) -> None:
            seen.append(trainer.progress_bar_metrics["loss"])

    class M(fk.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            self.log("loss", batch[0].sum(), prog_bar=True)
            return (self.w * batch[0]).sum()

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.0)

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(5.0)), batch_size=1)
    fk.Trainer(
        max_epochs=1,
        log_every_n_steps=50,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        logger=False,
        callbacks=[Probe()],
    ).fit(M(), loader)
    assert seen == [0.0, 1.0, 2.0, 3.0, 4.0]
