"""Exact resume: a run stopped and resumed from a checkpoint ends bitwise equal to an
uninterrupted run (weights, optimizer and scheduler state, logged metrics), whether it
stopped at an epoch boundary or in the middle of an epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fitkit as fk
from fitkit.testing import quiet_trainer


class Net(fk.Module):
    def __init__(self, scheduler: str = "step", lr: float = 0.02) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))
        self.steps_run = 0

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.steps_run += 1
        x, y = batch
        loss = nn.functional.mse_loss(self.net(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self.net(x), y))

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        if self.hparams.scheduler == "step":
            return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.7)}
        total = 7 * 4  # the full run's steps, also when the first half is fitted alone
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class Crash(Exception):
    pass


class SaveThenCrash(fk.Callback):
    """Saves a checkpoint after training batch ``at`` (global count), then 'crashes'."""

    def __init__(self, path: Path, at: int) -> None:
        self.path, self.at = path, at

    def on_train_batch_end(self, trainer: fk.Trainer, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.progress.total_batches == self.at:
            trainer.save_checkpoint(self.path)
            raise Crash


def data(own_generator: bool, num_workers: int = 0) -> tuple[DataLoader[Any], DataLoader[Any]]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 4, generator=g)
    y = x.sum(1, keepdim=True) + 0.1 * torch.randn(40, 1, generator=g)
    train_gen = torch.Generator().manual_seed(123) if own_generator else None
    train = DataLoader(TensorDataset(x, y), batch_size=6, shuffle=True, generator=train_gen, num_workers=num_workers)
    val = DataLoader(TensorDataset(x[:12], y[:12]), batch_size=4)
    return train, val


def trainer(**kwargs: Any) -> fk.Trainer:
    return quiet_trainer(**{"max_epochs": 4, "log_every_n_steps": 3, **kwargs})


def straight(scheduler: str, own_generator: bool, **kwargs: Any) -> tuple[Net, fk.Trainer]:
    fk.seed_everything(7)
    model = Net(scheduler)
    t = trainer(**kwargs)
    t.fit(model, *data(own_generator))
    return model, t


def assert_same_run(a: tuple[Net, fk.Trainer], b: tuple[Net, fk.Trainer]) -> None:
    (ma, ta), (mb, tb) = a, b
    for (name, pa), pb in zip(ma.state_dict().items(), mb.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), name
    oa, ob = ta.optimizers[0].state_dict(), tb.optimizers[0].state_dict()
    for key in oa["state"]:
        assert torch.equal(oa["state"][key]["momentum_buffer"], ob["state"][key]["momentum_buffer"])
    assert oa["param_groups"] == ob["param_groups"]
    assert ta.lr_scheduler_configs[0].scheduler.state_dict() == tb.lr_scheduler_configs[0].scheduler.state_dict()
    assert ta.global_step == tb.global_step and ta.current_epoch == tb.current_epoch
    assert set(ta.logged_metrics) == set(tb.logged_metrics)
    for key, value in ta.logged_metrics.items():
        assert torch.equal(torch.as_tensor(value), torch.as_tensor(tb.logged_metrics[key])), key
    for key, value in ta.callback_metrics.items():
        assert torch.equal(torch.as_tensor(value), torch.as_tensor(tb.callback_metrics[key])), key


@pytest.mark.parametrize("own_generator", [False, True], ids=["global-rng", "loader-generator"])
@pytest.mark.parametrize("scheduler", ["step", "onecycle"])
def test_resume_at_epoch_boundary_is_exact(tmp_path: Path, scheduler: str, own_generator: bool) -> None:
    reference = straight(scheduler, own_generator)

    fk.seed_everything(7)
    first = Net(scheduler)
    t1 = trainer(max_epochs=2)
    t1.fit(first, *data(own_generator))
    t1.save_checkpoint(tmp_path / "half.ckpt")

    torch.manual_seed(999)  # the caller's RNG state at resume time must not matter
    resumed = Net(scheduler)
    t2 = trainer()
    t2.fit(resumed, *data(own_generator), ckpt_path=tmp_path / "half.ckpt")
    assert resumed.steps_run == reference[0].steps_run // 2
    assert_same_run(reference, (resumed, t2))


@pytest.mark.parametrize("own_generator", [False, True], ids=["global-rng", "loader-generator"])
@pytest.mark.parametrize("at", [3, 9, 16])
def test_resume_mid_epoch_is_exact_and_skips_seen_batches(tmp_path: Path, at: int, own_generator: bool) -> None:
    reference = straight("onecycle", own_generator)
    path = tmp_path / "mid.ckpt"

    fk.seed_everything(7)
    with pytest.raises(Crash):
        trainer(callbacks=[SaveThenCrash(path, at)]).fit(Net("onecycle"), *data(own_generator))

    torch.manual_seed(999)
    resumed = Net("onecycle")
    t2 = trainer()
    t2.fit(resumed, *data(own_generator), ckpt_path=path)
    assert resumed.steps_run == reference[0].steps_run - at  # seen batches are not trained on again
    assert_same_run(reference, (resumed, t2))


def test_resume_with_accumulation_and_workers(tmp_path: Path) -> None:
    fk.seed_everything(7)
    ref_model, ref_trainer = Net("step"), trainer(accumulate_grad_batches=2)
    ref_trainer.fit(ref_model, *data(True, num_workers=1))
    path = tmp_path / "acc.ckpt"
    fk.seed_everything(7)
    with pytest.raises(Crash):
        trainer(accumulate_grad_batches=2, callbacks=[SaveThenCrash(path, 11)]).fit(Net("step"), *data(True, 1))
    resumed, t2 = Net("step"), trainer(accumulate_grad_batches=2)
    t2.fit(resumed, *data(True, num_workers=1), ckpt_path=path)
    assert_same_run((ref_model, ref_trainer), (resumed, t2))


def test_checkpoint_holds_plain_data_and_loads_weights_only(tmp_path: Path) -> None:
    model, t = straight("step", False, max_epochs=1)
    t.save_checkpoint(tmp_path / "a.ckpt")
    ckpt = torch.load(tmp_path / "a.ckpt", weights_only=True)
    for key in (
        "fitkit_version",
        "format_version",
        "epoch",
        "global_step",
        "state_dict",
        "optimizer_states",
        "lr_schedulers",
        "precision",
        "progress",
        "callbacks",
        "hyper_parameters",
        "loops",
        "metrics",
    ):
        assert key in ckpt, key
    assert ckpt["hyper_parameters"] == {"scheduler": "step", "lr": 0.02}
    t.save_checkpoint(tmp_path / "w.ckpt", weights_only=True)
    light = torch.load(tmp_path / "w.ckpt", weights_only=True)
    assert "optimizer_states" not in light and set(light["state_dict"]) == set(model.state_dict())

    loaded = Net.load_from_checkpoint(tmp_path / "a.ckpt", lr=0.5)
    assert loaded.hparams.lr == 0.5 and loaded.hparams.scheduler == "step"
    for a, b in zip(loaded.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_validate_and_test_load_a_checkpoint_path(tmp_path: Path) -> None:
    model, t = straight("step", False, max_epochs=1)
    t.save_checkpoint(tmp_path / "a.ckpt")
    expected = t.validate(model, data(False)[1], verbose=False)
    fresh = Net()
    got = trainer().validate(fresh, data(False)[1], ckpt_path=tmp_path / "a.ckpt", verbose=False)
    assert got == expected


def test_last_in_a_new_trainer_picks_the_newest_file_of_an_explicit_dirpath(tmp_path: Path) -> None:
    reference = straight("step", False)
    fk.seed_everything(7)
    ckpt_dir = tmp_path / "ckpts"
    first = fk.Trainer(
        max_epochs=2,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        log_every_n_steps=3,
        callbacks=[fk.callbacks.ModelCheckpoint(dirpath=ckpt_dir, save_last=True)],
    )
    first.fit(Net("step"), *data(False))
    resumed = Net("step")
    second = fk.Trainer(
        max_epochs=4,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        log_every_n_steps=3,
        callbacks=[fk.callbacks.ModelCheckpoint(dirpath=ckpt_dir, save_last=True)],
    )
    second.fit(resumed, *data(False), ckpt_path="last")
    assert second.ckpt_path is not None and second.ckpt_path.endswith("last.ckpt")
    for a, b in zip(reference[0].state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


# -- what was still due at the save point (issue 6) -----------------------------------------------


class Events(fk.Callback):
    """Records when batches, validations and epoch ends happen; may save at a hook, then 'crash'.

    With ``hook``, the ``n``-th call of that hook saves a checkpoint and raises
    :class:`Crash`. A save in ``on_train_batch_start`` is a save before that batch, so its
    event belongs to the resumed run; in every other hook the event is recorded before the
    save. Sanity-check validations are left out: every fit, a resumed one too, has its own.
    """

    def __init__(self, path: Path | None = None, hook: str = "", n: int = 0) -> None:
        self.path, self.hook, self.n = path, hook, n
        self.events: list[tuple[str, int, int]] = []
        self._calls = 0

    def _record(self, trainer: fk.Trainer, name: str) -> None:
        if trainer.sanity_checking:
            return
        event = (name, trainer.current_epoch, trainer.progress.total_batches)
        if name == self.hook:
            self._calls += 1
            if self._calls == self.n:
                if name != "on_train_batch_start":
                    self.events.append(event)
                assert self.path is not None
                trainer.save_checkpoint(self.path)
                raise Crash
        self.events.append(event)

    def on_train_epoch_start(self, trainer: fk.Trainer, module: Any) -> None:
        self._record(trainer, "on_train_epoch_start")

    def on_train_batch_start(self, trainer: fk.Trainer, module: Any, batch: Any, batch_idx: int) -> None:
        self._record(trainer, "on_train_batch_start")

    def on_train_batch_end(self, trainer: fk.Trainer, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self._record(trainer, "on_train_batch_end")

    def on_validation_start(self, trainer: fk.Trainer, module: Any) -> None:
        self._record(trainer, "on_validation_start")

    def on_validation_end(self, trainer: fk.Trainer, module: Any) -> None:
        self._record(trainer, "on_validation_end")

    def on_train_epoch_end(self, trainer: fk.Trainer, module: Any) -> None:
        self._record(trainer, "on_train_epoch_end")


def save_crash_resume(tmp_path: Path, hook: str, n: int, **kwargs: Any) -> None:
    """Uninterrupted run vs. saved at the ``n``-th ``hook``, crashed and resumed: the same run.

    40 samples in batches of 6: 7 batches an epoch, shuffled from torch's global RNG (a
    validation draws from it too, so a missing or extra one changes later epochs), with
    dropout, momentum and an epoch-interval StepLR.
    """
    fk.seed_everything(7)
    reference, whole = Net("step"), Events()
    ref_trainer = trainer(callbacks=[whole], **kwargs)
    ref_trainer.fit(reference, *data(False))

    path = tmp_path / "due.ckpt"
    fk.seed_everything(7)
    before = Events(path, hook, n)
    with pytest.raises(Crash):
        trainer(callbacks=[before], **kwargs).fit(Net("step"), *data(False))

    torch.manual_seed(999)  # the caller's RNG state at resume time must not matter
    resumed, after = Net("step"), Events()
    t2 = trainer(callbacks=[after], **kwargs)
    t2.fit(resumed, *data(False), ckpt_path=path)
    assert_same_run((reference, ref_trainer), (resumed, t2))
    events = after.events
    if events and events[0][0] == "on_train_epoch_start" and events[0][1] == before.events[-1][1]:
        events = events[1:]  # resumed inside an epoch: it starts again (as in Lightning)
    assert before.events + events == whole.events


@pytest.mark.parametrize(
    ("hook", "n", "kwargs"),
    [
        # 7 batches an epoch, validation after batches 3 and 6 of each: the 10th batch's end
        # (epoch 1, batch 3) comes just before a validation.
        ("on_train_batch_end", 10, {"val_check_interval": 3}),
        # Counted across epochs, every 4 batches: the 8th batch is epoch 1's first.
        ("on_train_batch_end", 8, {"val_check_interval": 4, "check_val_every_n_epoch": None}),
        # The same point seen from the validation (ModelCheckpoint saves there), and from
        # the next batch: that validation already ran and must not run again.
        ("on_validation_end", 3, {"val_check_interval": 3}),
        ("on_train_batch_start", 11, {"val_check_interval": 3}),
    ],
    ids=["before-validation", "before-validation-across-epochs", "in-validation", "after-validation"],
)
def test_resume_runs_a_mid_epoch_validation_due_at_the_save_exactly_once(
    tmp_path: Path, hook: str, n: int, kwargs: dict[str, Any]
) -> None:
    save_crash_resume(tmp_path, hook, n, **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # validates at each epoch's end
        {"val_check_interval": 3},  # no end-of-epoch validation: the hook itself must not fire twice
        {"max_steps": 14},  # epoch 1 ends exactly at max_steps: its end still finishes on resume
        {"max_steps": 10},  # max_steps cuts epoch 1 after 3 batches: it validates, its StepLR does not step
    ],
    ids=["end-validation", "mid-validation", "ends-at-max-steps", "cut-by-max-steps"],
)
def test_resume_from_a_save_in_on_train_epoch_end_continues_after_that_hook(
    tmp_path: Path, kwargs: dict[str, Any]
) -> None:
    save_crash_resume(tmp_path, "on_train_epoch_end", 2, **kwargs)


def test_a_checkpoint_without_the_due_flags_resumes_as_before(tmp_path: Path) -> None:
    # Checkpoints written before issue 6 have no "validation_due" / "epoch_end_hook_ran" /
    # "step_epoch_schedulers": they load, and a save point where nothing was due resumes exactly.
    reference = straight("onecycle", False)
    path = tmp_path / "old.ckpt"
    fk.seed_everything(7)
    with pytest.raises(Crash):
        trainer(callbacks=[SaveThenCrash(path, 9)]).fit(Net("onecycle"), *data(False))
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["loops"]["validation_due"] is False and ckpt["loops"]["epoch_end_hook_ran"] is False
    for key in ("validation_due", "epoch_end_hook_ran", "step_epoch_schedulers"):
        del ckpt["loops"][key]
    torch.save(ckpt, path)
    resumed, t2 = Net("onecycle"), trainer()
    t2.fit(resumed, *data(False), ckpt_path=path)
    assert_same_run(reference, (resumed, t2))


class CountingStrategy(fk.strategies.SingleDeviceStrategy):
    """A device with a random state of its own (as XLA's seed): a counter advanced per batch."""

    def __init__(self) -> None:
        super().__init__(torch.device("cpu"))
        self.counter, self.loaded = 0, None

    def batch_to_device(self, batch: Any) -> Any:
        self.counter += 1
        return super().batch_to_device(batch)

    def rng_state(self) -> dict[str, Any]:
        return {"counter": self.counter}

    def load_rng_state(self, state: dict[str, Any]) -> None:
        self.counter = self.loaded = state["counter"]


@pytest.mark.parametrize("at", [6, 7])  # mid-epoch, and the first epoch's last batch
@pytest.mark.filterwarnings("error:Detected call of")  # resuming at 7 steps StepLR first
def test_a_strategy_s_own_random_state_is_saved_and_restored(tmp_path: Path, at: int) -> None:
    path = tmp_path / "crash.ckpt"
    train, _ = data(own_generator=True)
    with pytest.raises(Crash):
        trainer(strategy=CountingStrategy(), callbacks=[SaveThenCrash(path, at)], max_epochs=2).fit(Net(), train)
    assert torch.load(path, weights_only=True)["loops"]["rng"]["device"] == {"counter": at}
    resumed = CountingStrategy()
    trainer(strategy=resumed, max_epochs=2).fit(Net(), data(own_generator=True)[0], ckpt_path=str(path))
    assert resumed.loaded == at
    assert resumed.counter == 2 * 7  # 7 batches per epoch: continued from the save, none counted twice
