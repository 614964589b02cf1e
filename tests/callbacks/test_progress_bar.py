"""TQDMProgressBar: what it draws, when it redraws, and how the Trainer adds it."""

from __future__ import annotations

import types
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset

import fitkit as fk
from fitkit.callbacks import ModelSummary, ProgressBar, TQDMProgressBar
from fitkit.loggers import Logger
from fitkit.testing import BoringModule, RandomDataset


def loader(batches: int, batch_size: int = 2) -> DataLoader[torch.Tensor]:
    return DataLoader(RandomDataset(32, batches * batch_size), batch_size=batch_size)


class Model(BoringModule):
    """Logs a training and a validation metric to the bar; each test passes its own loaders."""

    train_dataloader = val_dataloader = test_dataloader = None  # type: ignore[assignment]

    def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        loss = super().training_step(batch, batch_idx)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        loss = self.loss(self(batch))
        self.log("val_metric", loss, prog_bar=True)
        return loss


def trainer(**kwargs: Any) -> fk.Trainer:
    kwargs.setdefault("logger", False)
    kwargs.setdefault("enable_checkpointing", False)
    kwargs.setdefault("enable_model_summary", False)
    kwargs.setdefault("max_epochs", 1)
    return fk.Trainer(**kwargs)


class RecordingBar(TQDMProgressBar):
    """Records the count at every redraw of the training bar."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.train_draws: list[int] = []
        self.metric_reads = 0

    def _draw(self, trainer: fk.Trainer, bar: Any, now: float | None = None) -> None:
        if bar is self._train:
            self.train_draws.append(bar.n)
        super()._draw(trainer, bar, now)

    def get_metrics(self, trainer: fk.Trainer, module: fk.Module) -> dict[str, Any]:
        self.metric_reads += 1
        return super().get_metrics(trainer, module)


def fake_clock(step: float = 1.0) -> Any:
    t = [0.0]

    def now() -> float:
        t[0] += step
        return t[0]

    return now


def test_bars_render_counts_and_metrics(capsys: pytest.CaptureFixture[str]) -> None:
    t = trainer(max_epochs=2, log_every_n_steps=1)
    model = Model()
    t.fit(model, loader(6), loader(3))
    err = capsys.readouterr().err
    assert "Sanity Checking" in err
    assert "Epoch 0" in err and "Epoch 1" in err
    assert "6/6" in err and "Validation" in err and "3/3" in err
    assert "train_loss=" in err and "val_metric=" in err
    t.test(model, loader(4))
    t.predict(model, loader(5))
    captured = capsys.readouterr()
    assert "Testing" in captured.err and "4/4" in captured.err
    assert "Predicting" in captured.err and "5/5" in captured.err
    assert "Epoch" not in captured.out  # bars go to stderr only


def test_final_count_is_exact_without_intermediate_redraws(capsys: pytest.CaptureFixture[str]) -> None:
    bar = RecordingBar(refresh_interval_s=1e9)
    trainer(callbacks=[bar], num_sanity_val_steps=0).fit(Model(), loader(10))
    # Opening the bar draws it at 0/10; then only the epoch end.
    assert bar.train_draws == [10]
    err = capsys.readouterr().err
    assert "10/10" in err and "5/10" not in err


def test_refresh_needs_both_the_count_and_the_interval() -> None:
    # The fake clock advances 1 s per reading, the first when the bar opens (t=1); with
    # refresh_interval_s=3.5 every 4th reading after a draw draws again.
    bar = RecordingBar(refresh_rate=1, refresh_interval_s=3.5)
    bar._now = fake_clock()
    trainer(callbacks=[bar]).fit(Model(), loader(12))
    assert bar.train_draws == [4, 8, 12, 12]  # by time (batch 4 reads t=5); then the epoch end

    bar = RecordingBar(refresh_rate=2, refresh_interval_s=3.5)
    bar._now = fake_clock()  # read only every 2nd batch now: batch 2 (t=2), ..., batch 8 (t=5)
    trainer(callbacks=[bar]).fit(Model(), loader(12))
    assert bar.train_draws == [8, 12]

    bar = RecordingBar(refresh_rate=3, refresh_interval_s=0)
    trainer(callbacks=[bar]).fit(Model(), loader(12))
    assert bar.train_draws == [3, 6, 9, 12, 12]


def test_metrics_are_read_only_on_redraws() -> None:
    # Reading progress_bar_metrics is a host sync: never per batch.
    bar = RecordingBar(refresh_interval_s=1e9)
    trainer(callbacks=[bar], max_epochs=2, num_sanity_val_steps=0).fit(Model(), loader(20), loader(2))
    # per epoch: after validation and at epoch end
    assert bar.metric_reads == 4


def test_refresh_rate_zero_disables(capsys: pytest.CaptureFixture[str]) -> None:
    bar = TQDMProgressBar(refresh_rate=0)
    assert bar.is_disabled
    t = trainer(callbacks=[bar])
    t.fit(Model(), loader(4), loader(2))
    t.test(Model(), loader(2))
    assert capsys.readouterr().err == ""
    assert bar.train_progress_bar is None


def test_disable_and_enable(capsys: pytest.CaptureFixture[str]) -> None:
    bar = TQDMProgressBar()
    bar.disable()
    t = trainer(callbacks=[bar])
    t.fit(Model(), loader(4))
    assert capsys.readouterr().err == ""
    bar.enable()
    assert bar.is_enabled
    t.test(Model(), loader(3))
    assert "3/3" in capsys.readouterr().err


def test_disabled_off_global_rank_zero() -> None:
    bar = TQDMProgressBar()
    bar.setup(types.SimpleNamespace(is_global_zero=False), BoringModule(), "fit")  # type: ignore[arg-type]
    assert bar.is_disabled


class Stream(IterableDataset[torch.Tensor]):
    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter(torch.randn(5, 32))


def test_loader_without_length(capsys: pytest.CaptureFixture[str]) -> None:
    t = trainer()
    t.fit(Model(), DataLoader(Stream(), batch_size=None), DataLoader(Stream(), batch_size=None))
    err = capsys.readouterr().err
    assert "Epoch 0: 5it" in err  # no total: a count, not a fraction
    assert "Validation: 5it" in err


def test_several_validation_loaders(capsys: pytest.CaptureFixture[str]) -> None:
    trainer(num_sanity_val_steps=0).fit(Model(), loader(2), [loader(2), loader(3)])
    err = capsys.readouterr().err
    assert "Validation DataLoader 0" in err and "Validation DataLoader 1" in err and "3/3" in err


def test_leave_keeps_one_bar_per_epoch(capsys: pytest.CaptureFixture[str]) -> None:
    trainer(callbacks=[TQDMProgressBar(leave=True)], max_epochs=3).fit(Model(), loader(2))
    err = capsys.readouterr().err
    assert all(f"Epoch {e}: 100%" in err for e in range(3))


def test_v_num_from_the_logger(capsys: pytest.CaptureFixture[str]) -> None:
    class Versioned(Logger):
        version = 7  # type: ignore[assignment]

        def log_metrics(self, metrics: Any, step: int | None = None) -> None: ...

        def log_hyperparams(self, params: Any, metrics: Any = None) -> None: ...

    trainer(logger=Versioned()).fit(Model(), loader(2))
    assert "v_num=7" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("kwargs", "text"),
    [
        ({"refresh_rate": -1}, "`refresh_rate=-1`"),
        ({"refresh_rate": 1.5}, "`refresh_rate=1.5`"),
        ({"process_position": -2}, "`process_position=-2`"),
        ({"leave": "yes"}, "`leave='yes'`"),
        ({"refresh_interval_s": -0.1}, "`refresh_interval_s=-0.1`"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], text: str) -> None:
    with pytest.raises(fk.MisconfigurationError, match=text.replace("(", r"\(")):
        TQDMProgressBar(**kwargs)


# -- the Trainer's defaults ---------------------------------------------------------------------
def kinds(t: fk.Trainer) -> list[type]:
    return [type(c) for c in t.callbacks]


def test_defaults_added_when_enabled() -> None:
    t = fk.Trainer(logger=False, enable_checkpointing=False)
    assert kinds(t).count(TQDMProgressBar) == 1 and kinds(t).count(ModelSummary) == 1
    t = fk.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    assert TQDMProgressBar not in kinds(t) and ModelSummary not in kinds(t)


def test_user_bar_and_summary_are_not_duplicated() -> None:
    bar, summary = TQDMProgressBar(refresh_rate=5), ModelSummary(max_depth=2)
    t = fk.Trainer(logger=False, enable_checkpointing=False, callbacks=[summary, bar])
    assert [c for c in t.callbacks if isinstance(c, (ProgressBar, ModelSummary))] == [summary, bar]

    class MyBar(ProgressBar):
        pass

    t = fk.Trainer(logger=False, enable_checkpointing=False, callbacks=[MyBar()])
    assert TQDMProgressBar not in kinds(t) and kinds(t).count(MyBar) == 1


def test_bar_with_progress_bar_disabled_is_an_error() -> None:
    with pytest.raises(fk.MisconfigurationError, match=r"`enable_progress_bar=False`.*TQDMProgressBar"):
        fk.Trainer(logger=False, enable_progress_bar=False, callbacks=[TQDMProgressBar()])


def test_two_bars_are_an_error() -> None:
    with pytest.raises(fk.MisconfigurationError, match="only one progress bar"):
        fk.Trainer(logger=False, callbacks=[TQDMProgressBar(), TQDMProgressBar()])


def test_print_goes_above_the_bars(capsys: pytest.CaptureFixture[str]) -> None:
    class Printing(Model):
        def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
            if batch_idx == 1:
                bar.print("hello", "world")
            return super().training_step(batch, batch_idx)

    bar = TQDMProgressBar()
    trainer(callbacks=[bar]).fit(Printing(), DataLoader(Stream(), batch_size=None))  # a bar without a total
    assert "hello world" in capsys.readouterr().out  # tqdm.write: clears the bars, prints to stdout, redraws
    bar.print("no bar")
    assert capsys.readouterr().out == "no bar\n"
