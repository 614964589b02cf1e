"""ModelCheckpoint on real (tiny) training runs: which files it leaves, what they are
called, when it saves, what its bookkeeping says, and that it never loses a file."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import types
import warnings
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

import fitkit as fk
from fitkit import checkpoint as ckpt_io
from fitkit.callbacks import Callback, ModelCheckpoint, OnExceptionCheckpoint
from fitkit.callbacks import model_checkpoint as mc_module
from fitkit.loggers import Logger
from fitkit.testing import BoringModule, RandomDataset


def loader(batches: int, size: int = 32) -> DataLoader[torch.Tensor]:
    return DataLoader(RandomDataset(size, 2 * batches), batch_size=2)


class Scored(BoringModule):
    """Logs ``scores[epoch]`` as ``key`` in validation (the same value each batch, so the epoch mean is exact)."""

    def __init__(self, scores: list[float] | None = None, key: str = "val_loss") -> None:
        super().__init__()
        self.scores, self.key = scores or [], key

    def validation_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        self.log(self.key, torch.tensor(self.scores[self.current_epoch]))


def fit(
    tmp_path: Path,
    callbacks: list[Callback],
    model: fk.Module | None = None,
    val: int = 1,
    ckpt_path: str | None = None,
    **kwargs: Any,
) -> fk.Trainer:
    """Train 4 batches an epoch (32 features), validating on ``val`` batches."""
    options: dict[str, Any] = dict(
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    options.update(kwargs)
    trainer = fk.Trainer(callbacks=callbacks, **options)
    trainer.fit(model or BoringModule(), loader(4), loader(val) if val else None, ckpt_path=ckpt_path)
    return trainer


def names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


SCORES = [0.5, 0.3, 0.4, 0.1, 0.6]


@pytest.mark.parametrize(
    ("save_top_k", "mode", "epochs"),
    [
        (-1, "min", {0, 1, 2, 3, 4}),
        (0, "min", set()),
        (1, "min", {3}),
        (2, "min", {1, 3}),
        (1, "max", {4}),
        (2, "max", {0, 4}),
        (-1, "max", {0, 1, 2, 3, 4}),
    ],
)
def test_save_top_k_leaves_exactly_the_best_files(tmp_path: Path, save_top_k: int, mode: str, epochs: set[int]) -> None:
    ck = ModelCheckpoint(tmp_path / "ck", filename="{epoch}", monitor="val_loss", mode=mode, save_top_k=save_top_k)
    fit(tmp_path, [ck], Scored(SCORES), max_epochs=5)
    assert names(tmp_path / "ck") == {f"epoch={e}.ckpt" for e in epochs}
    assert set(ck.best_k_models) == {str(tmp_path / "ck" / f"epoch={e}.ckpt") for e in epochs}
    if not epochs:
        assert ck.best_model_path == "" and ck.best_model_score is None
        return
    best = min(epochs, key=lambda e: SCORES[e]) if mode == "min" else max(epochs, key=lambda e: SCORES[e])
    assert ck.best_model_path == str(tmp_path / "ck" / f"epoch={best}.ckpt")
    assert ck.best_model_score == pytest.approx(SCORES[best])
    for path, score in ck.best_k_models.items():
        assert isinstance(score, torch.Tensor)
        assert score.item() == pytest.approx(SCORES[int(Path(path).stem.split("=")[1])])
    worst = max(epochs, key=lambda e: SCORES[e]) if mode == "min" else min(epochs, key=lambda e: SCORES[e])
    assert ck.kth_best_model_path == str(tmp_path / "ck" / f"epoch={worst}.ckpt")
    saved = ckpt_io.load(ck.best_model_path)
    assert saved["epoch"] == best and saved["global_step"] == 4 * (best + 1)


@pytest.mark.parametrize("save_top_k", [-1, 1])
def test_without_monitor_the_newest_is_the_best(tmp_path: Path, save_top_k: int) -> None:
    ck = ModelCheckpoint(tmp_path, save_top_k=save_top_k)
    fit(tmp_path, [ck], max_epochs=3, val=0)
    expected = {"epoch=0-step=4.ckpt", "epoch=1-step=8.ckpt", "epoch=2-step=12.ckpt"}
    assert names(tmp_path) == (expected if save_top_k == -1 else {"epoch=2-step=12.ckpt"})
    assert ck.best_model_path == str(tmp_path / "epoch=2-step=12.ckpt")
    assert ck.best_model_score is None


class FolderCheckpoints(fk.strategies.SingleDeviceStrategy):
    """Writes each checkpoint as a folder, as a sharded (FSDP) checkpoint is."""

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: Any) -> None:
        os.makedirs(filepath)
        ckpt_io.atomic_save(checkpoint, os.path.join(filepath, "meta.ckpt"))


def test_replaced_folder_checkpoints_are_removed(tmp_path: Path) -> None:
    ck = ModelCheckpoint(tmp_path / "ckpts", save_top_k=1)
    fit(tmp_path, [ck], max_epochs=3, val=0, strategy=FolderCheckpoints())
    assert names(tmp_path / "ckpts") == {"epoch=2-step=12.ckpt"}
    assert names(tmp_path / "ckpts" / "epoch=2-step=12.ckpt") == {"meta.ckpt"}


def test_nan_scores_rank_worst(tmp_path: Path) -> None:
    ck = ModelCheckpoint(tmp_path, filename="{epoch}", monitor="val_loss", save_top_k=2)
    fit(tmp_path, [ck], Scored([math.nan, 0.3, math.nan, 0.2]), max_epochs=4)
    assert names(tmp_path) == {"epoch=1.ckpt", "epoch=3.ckpt"}
    assert ck.best_model_score == pytest.approx(0.2)


def test_missing_monitor_is_an_error_listing_the_logged_keys(tmp_path: Path) -> None:
    ck = ModelCheckpoint(tmp_path, monitor="val_acc")
    with pytest.raises(fk.MisconfigurationError, match=r"val_acc.*'epoch'.*'val_loss'"):
        fit(tmp_path, [ck], Scored([0.5]))


# -- file names ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("filename", "auto", "expected"),
    [
        (None, True, "epoch=3-step=40.ckpt"),
        ("{epoch}-{val_loss:.3f}", True, "epoch=3-val_loss=0.123.ckpt"),
        ("{epoch:02d}_{step}", False, "03_40.ckpt"),
        ("best-{val/acc:.2f}", True, "best-val_acc=0.90.ckpt"),
        ("{val/acc:.1f}", False, "0.9.ckpt"),
        ("{epoch}-{epoch_time:.0f}", True, "epoch=3-epoch_time=7.ckpt"),
    ],
)
def test_filename_templates(filename: str | None, auto: bool, expected: str) -> None:
    ck = ModelCheckpoint("/ckpts", filename=filename, auto_insert_metric_name=auto)
    metrics = {
        "epoch": torch.tensor(3),
        "step": torch.tensor(40),
        "val_loss": torch.tensor(0.12345),
        "val/acc": torch.tensor(0.9),
        "epoch_time": 7.2,
    }
    assert ck.format_checkpoint_name(metrics) == os.path.join(os.path.abspath("/ckpts"), expected)
    assert ck.format_checkpoint_name(metrics, ver=2).endswith(expected[: -len(".ckpt")] + "-v2.ckpt")


def test_filename_with_metrics_in_a_run(tmp_path: Path) -> None:
    ck = ModelCheckpoint(tmp_path, filename="{epoch}-{step}-{val_loss:.2f}", monitor="val_loss", save_top_k=-1)
    fit(tmp_path, [ck], Scored([0.5, 0.25]), max_epochs=2)
    assert names(tmp_path) == {"epoch=0-step=4-val_loss=0.50.ckpt", "epoch=1-step=8-val_loss=0.25.ckpt"}


def test_version_counter_never_overwrites_or_deletes_a_foreign_file(tmp_path: Path) -> None:
    foreign = tmp_path / "epoch=0.ckpt"
    foreign.write_bytes(b"not ours")
    ck = ModelCheckpoint(tmp_path, filename="{epoch}", monitor="val_loss", save_top_k=1)
    with pytest.warns(UserWarning, match="exists and is not empty"):
        fit(tmp_path, [ck], Scored([0.5, 0.3]), max_epochs=2)
    assert names(tmp_path) == {"epoch=0.ckpt", "epoch=1.ckpt"}  # epoch=0-v1.ckpt came and went
    assert foreign.read_bytes() == b"not ours"


def test_keeping_all_files_never_overwrites_a_name_twice(tmp_path: Path) -> None:
    ck = ModelCheckpoint(tmp_path, filename="{epoch}", every_n_train_steps=2, save_top_k=-1)
    fit(tmp_path, [ck], max_epochs=1, val=0)
    assert names(tmp_path) == {"epoch=0.ckpt", "epoch=0-v1.ckpt"}
    ck = ModelCheckpoint(tmp_path / "one", filename="{epoch}", every_n_train_steps=2, save_top_k=1)
    fit(tmp_path, [ck], max_epochs=1, val=0)
    assert names(tmp_path / "one") == {"epoch=0.ckpt"}  # replaced in place, atomically
    assert ckpt_io.load(ck.best_model_path)["global_step"] == 4


def test_without_version_counter_a_file_is_overwritten(tmp_path: Path) -> None:
    ck = ModelCheckpoint(tmp_path, filename="fixed", save_top_k=1, enable_version_counter=False)
    fit(tmp_path, [ck], max_epochs=2, val=0)
    assert names(tmp_path) == {"fixed.ckpt"}
    assert ckpt_io.load(tmp_path / "fixed.ckpt")["global_step"] == 8


# -- save_last ---------------------------------------------------------------------------------
def test_save_last_writes_a_copy_of_the_latest_state(tmp_path: Path) -> None:
    ck = ModelCheckpoint(tmp_path, filename="{epoch}", monitor="val_loss", save_last=True)
    fit(tmp_path, [ck], Scored([0.3, 0.5, 0.4]), max_epochs=3)
    assert names(tmp_path) == {"epoch=0.ckpt", "last.ckpt"}
    last = tmp_path / "last.ckpt"
    assert ck.last_model_path == str(last) and not last.is_symlink()
    assert ckpt_io.load(last)["global_step"] == 12


def test_save_last_link_points_at_the_newest_file_or_is_a_copy(tmp_path: Path) -> None:
    ck = ModelCheckpoint(tmp_path, filename="{epoch}", monitor="val_loss", save_last="link")
    fit(tmp_path, [ck], Scored([0.5, 0.4, 0.3]), max_epochs=3)
    last = tmp_path / "last.ckpt"
    assert names(tmp_path) == {"epoch=2.ckpt", "last.ckpt"}
    assert last.is_symlink() and os.readlink(last) == "epoch=2.ckpt"  # relative: the folder can move
    assert ckpt_io.load(ck.last_model_path)["global_step"] == 12

    # The newest state is not in the top k: last.ckpt must still hold it, so it becomes a copy.
    ck = ModelCheckpoint(tmp_path / "b", filename="{epoch}", monitor="val_loss", save_last="link")
    fit(tmp_path, [ck], Scored([0.3, 0.5]), max_epochs=2)
    last = tmp_path / "b" / "last.ckpt"
    assert not last.is_symlink() and ckpt_io.load(last)["global_step"] == 8


def test_save_last_link_falls_back_to_a_copy_without_symlinks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_symlinks(*args: Any, **kwargs: Any) -> None:
        raise OSError("symlinks not permitted")

    monkeypatch.setattr(os, "symlink", no_symlinks)
    ck = ModelCheckpoint(tmp_path, filename="{epoch}", save_last="link")
    fit(tmp_path, [ck], max_epochs=2, val=0)
    last = tmp_path / "last.ckpt"
    assert not last.is_symlink() and last.read_bytes() == (tmp_path / "epoch=1.ckpt").read_bytes()
    assert names(tmp_path) == {"epoch=1.ckpt", "last.ckpt"}


# -- when it saves ------------------------------------------------------------------------------
def saved_steps(folder: Path) -> list[int]:
    return sorted(ckpt_io.load(p)["global_step"] for p in folder.glob("*.ckpt"))


def test_every_n_train_steps_saves_at_optimizer_steps(tmp_path: Path) -> None:
    ck = ModelCheckpoint(tmp_path, every_n_train_steps=3, save_top_k=-1)
    fit(tmp_path, [ck], max_epochs=2, val=0)
    assert names(tmp_path) == {"epoch=0-step=3.ckpt", "epoch=1-step=6.ckpt"}
    # Accumulating 2 batches per step: 2 steps an epoch; one save per step, never mid-window.
    ck = ModelCheckpoint(tmp_path / "acc", every_n_train_steps=1, save_top_k=-1)
    fit(tmp_path, [ck], max_epochs=2, val=0, accumulate_grad_batches=2)
    assert saved_steps(tmp_path / "acc") == [1, 2, 3, 4]


def test_every_n_epochs(tmp_path: Path) -> None:
    ck = ModelCheckpoint(tmp_path, every_n_epochs=2, save_top_k=-1, filename="{epoch}")
    fit(tmp_path, [ck], max_epochs=5, val=0)
    assert names(tmp_path) == {"epoch=1.ckpt", "epoch=3.ckpt"}


def test_train_time_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]

    class Tick(Callback):  # every batch "takes" 1 s
        def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, batch_idx: int) -> None:
            clock[0] += 1.0

    monkeypatch.setattr(mc_module, "time", types.SimpleNamespace(monotonic=lambda: clock[0]))
    ck = ModelCheckpoint(tmp_path, train_time_interval=timedelta(seconds=2.5), save_top_k=-1)
    fit(tmp_path, [Tick(), ck], max_epochs=2, val=0)
    assert saved_steps(tmp_path) == [3, 6]


def test_no_save_during_the_sanity_check(tmp_path: Path) -> None:
    class Watch(Callback):
        def on_sanity_check_end(self, trainer: Any, module: Any) -> None:
            assert names(tmp_path / "ck") == set()

    ck = ModelCheckpoint(tmp_path / "ck", every_n_train_steps=1, save_top_k=-1)
    fit(tmp_path, [Watch(), ck], Scored([0.5]), num_sanity_val_steps=1)
    assert saved_steps(tmp_path / "ck") == [1, 2, 3, 4]


def test_step_saves_before_the_first_validation_skip_top_k_with_a_warning(tmp_path: Path) -> None:
    ck = ModelCheckpoint(tmp_path, every_n_train_steps=1, monitor="val_loss", save_top_k=-1, save_last=True)
    with pytest.warns(UserWarning, match=r"found no metric 'val_loss'.*Skipping"):
        fit(tmp_path, [ck], Scored([0.5]), val_check_interval=3)
    # Steps 1 and 2 come before any validation: only last.ckpt; from step 3 on val_loss exists.
    assert saved_steps(tmp_path) == [3, 4, 4]


class LossOnFixedData(BoringModule):
    """val_loss is a function of the weights only, so a checkpoint's weights say what its score must be."""

    def __init__(self) -> None:
        super().__init__()
        self.val_batch = torch.randn(8, 32, generator=torch.Generator().manual_seed(0))

    def validation_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        self.log("val_loss", self.loss(self(self.val_batch)))


class RecordValidation(Callback):
    def __init__(self) -> None:
        self.val_loss_at_step: dict[int, float] = {}

    def on_validation_end(self, trainer: Any, module: Any) -> None:
        if not trainer.sanity_checking:
            self.val_loss_at_step[trainer.global_step] = float(trainer.callback_metrics["val_loss"])


@pytest.mark.filterwarnings("ignore:ModelCheckpoint.*found no metric")  # step 2 comes before the first validation
@pytest.mark.parametrize("val_check_interval", [2, 0.5, 1.0])
def test_step_checkpoints_hold_the_fresh_validation_score(tmp_path: Path, val_check_interval: float) -> None:
    """Lightning #20185: a step checkpoint saved before the validation of the same step ranks stale scores."""
    record = RecordValidation()
    ck = ModelCheckpoint(tmp_path, monitor="val_loss", every_n_train_steps=2, save_top_k=-1, filename="{step}")
    model = LossOnFixedData()
    fit(tmp_path, [record, ck], model, max_epochs=2, val_check_interval=val_check_interval)
    validated = sorted(record.val_loss_at_step)
    assert validated == ([2, 4, 6, 8] if val_check_interval != 1.0 else [4, 8])
    checked = 0
    for path, score in ck.best_k_models.items():
        checkpoint = ckpt_io.load(path)
        step = checkpoint["global_step"]
        if step not in record.val_loss_at_step:
            continue  # no validation at this step: nothing to be stale about
        checked += 1
        assert score.item() == pytest.approx(record.val_loss_at_step[step], abs=0)
        model.load_state_dict(checkpoint["state_dict"])
        with torch.no_grad():
            assert model.loss(model(model.val_batch)).item() == pytest.approx(score.item(), rel=1e-6)
        state = checkpoint["callbacks"][ck.state_key]
        assert float(state["current_score"]) == score.item()
    assert checked == len(validated)


def test_mid_epoch_validation_saves_after_each_validation(tmp_path: Path) -> None:
    ck = ModelCheckpoint(tmp_path, monitor="val_loss", save_top_k=-1, filename="{step}")
    fit(tmp_path, [ck], LossOnFixedData(), max_epochs=2, val_check_interval=0.5)
    assert names(tmp_path) == {"step=2.ckpt", "step=4.ckpt", "step=6.ckpt", "step=8.ckpt"}


@pytest.mark.parametrize(
    ("kwargs", "steps"),
    [
        ({"val_check_interval": 0.5}, [2, 4, 6, 8]),  # after each mid-epoch validation
        ({"val_check_interval": 0.5, "save_on_train_epoch_end": True}, [4, 8]),
        ({"check_val_every_n_epoch": 2}, [8, 16]),  # only epochs that validated: no stale score
        # Every epoch end; epoch 0 comes before any val_loss (a warning), later ones rank the latest one.
        ({"check_val_every_n_epoch": 2, "save_on_train_epoch_end": True}, [8, 12, 16]),
    ],
)
@pytest.mark.filterwarnings("ignore:ModelCheckpoint.*found no metric")
def test_where_epoch_saves_happen(tmp_path: Path, kwargs: dict[str, Any], steps: list[int]) -> None:
    on_end = kwargs.pop("save_on_train_epoch_end", None)
    ck = ModelCheckpoint(tmp_path, monitor="val_loss", save_top_k=-1, filename="{step}", save_on_train_epoch_end=on_end)
    fit(tmp_path, [ck], LossOnFixedData(), max_epochs=4 if "check_val_every_n_epoch" in kwargs else 2, **kwargs)
    assert saved_steps(tmp_path) == steps


def test_fast_dev_run_accepts_a_model_checkpoint_and_saves_nothing(tmp_path: Path) -> None:
    ck = ModelCheckpoint(tmp_path / "ck", every_n_train_steps=1)
    fit(tmp_path, [ck], fast_dev_run=2)
    assert names(tmp_path / "ck") == set()


def test_each_step_is_saved_once(tmp_path: Path) -> None:
    """Step and epoch triggers at the same step, and save_last, write one set of files."""
    ck = ModelCheckpoint(tmp_path, every_n_train_steps=4, save_top_k=-1, save_last=True)
    fit(tmp_path, [ck], max_epochs=2, val=0)
    assert names(tmp_path) == {"epoch=0-step=4.ckpt", "epoch=1-step=8.ckpt", "last.ckpt"}


# -- state and safety ---------------------------------------------------------------------------
def test_state_round_trip_and_resume_continue_the_bookkeeping(tmp_path: Path) -> None:
    scores = [0.5, 0.3, 0.4, 0.1, 0.2]
    ck = ModelCheckpoint(tmp_path, filename="{epoch}", monitor="val_loss", save_top_k=2, save_last=True)
    fit(tmp_path, [ck], Scored(scores), max_epochs=3)
    assert names(tmp_path) == {"epoch=1.ckpt", "epoch=2.ckpt", "last.ckpt"}
    state = ck.state_dict()
    ckpt_io.check_plain(state)
    copy = ModelCheckpoint(tmp_path, filename="{epoch}", monitor="val_loss", save_top_k=2, save_last=True)
    copy.load_state_dict(state)
    for key in ("best_model_path", "best_k_models", "kth_best_model_path", "last_model_path", "best_model_score"):
        assert getattr(copy, key) == getattr(ck, key)
    saved = ckpt_io.load(ck.last_model_path)["callbacks"][ck.state_key]
    assert saved["best_k_models"].keys() == ck.best_k_models.keys()

    resumed = ModelCheckpoint(tmp_path, filename="{epoch}", monitor="val_loss", save_top_k=2, save_last=True)
    fit(tmp_path, [resumed], Scored(scores), max_epochs=5, ckpt_path=str(tmp_path / "last.ckpt"))
    # The files of epochs 1 and 2 (from before the resume) were evicted by better ones.
    assert names(tmp_path) == {"epoch=3.ckpt", "epoch=4.ckpt", "last.ckpt"}
    assert resumed.best_model_path == str(tmp_path / "epoch=3.ckpt")
    assert resumed.best_model_score == pytest.approx(0.1)


def test_the_checkpoint_resumed_from_is_never_deleted(tmp_path: Path) -> None:
    ck = ModelCheckpoint(tmp_path, filename="{epoch}", monitor="val_loss")
    fit(tmp_path, [ck], Scored([0.5, 0.3, 0.1]), max_epochs=1)
    resumed = ModelCheckpoint(tmp_path, filename="{epoch}", monitor="val_loss")
    fit(tmp_path, [resumed], Scored([0.5, 0.3, 0.1]), max_epochs=3, ckpt_path=str(tmp_path / "epoch=0.ckpt"))
    assert names(tmp_path) == {"epoch=0.ckpt", "epoch=2.ckpt"}


def test_a_new_dirpath_on_resume_keeps_old_files(tmp_path: Path) -> None:
    ck = ModelCheckpoint(tmp_path / "a", filename="{epoch}", monitor="val_loss", save_last=True)
    fit(tmp_path, [ck], Scored([0.5, 0.3]), max_epochs=1)
    other = ModelCheckpoint(tmp_path / "b", filename="{epoch}", monitor="val_loss", save_last=True)
    with pytest.warns(UserWarning, match="dirpath changed"):
        fit(tmp_path, [other], Scored([0.5, 0.3]), max_epochs=2, ckpt_path=ck.last_model_path)
    assert names(tmp_path / "a") == {"epoch=0.ckpt", "last.ckpt"}
    assert names(tmp_path / "b") == {"epoch=1.ckpt", "last.ckpt"}


def test_state_key_tells_instances_apart() -> None:
    keys = {
        ModelCheckpoint(monitor="val_loss").state_key,
        ModelCheckpoint(monitor="val_loss", mode="max").state_key,
        ModelCheckpoint(monitor="val_acc").state_key,
        ModelCheckpoint(every_n_train_steps=10).state_key,
    }
    assert len(keys) == 4


def test_an_interrupted_save_keeps_the_previous_best(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_replace, calls = ckpt_io._replace, []

    def replace_then_crash(src: str, dst: Path) -> None:
        calls.append(dst)
        if len(calls) > 1:
            raise OSError("disk full")  # the crash lands between the write and the rename
        real_replace(src, dst)

    monkeypatch.setattr(ckpt_io, "_replace", replace_then_crash)
    ck = ModelCheckpoint(tmp_path, filename="{epoch}", monitor="val_loss", save_top_k=1)
    with pytest.raises(ckpt_io.CheckpointWriteError, match="disk full") as info:
        fit(tmp_path, [ck], Scored([0.5, 0.3]), max_epochs=2)
    assert str(info.value).startswith(f"Could not write checkpoint {str(tmp_path / 'epoch=1.ckpt')!r}")
    assert isinstance(info.value, OSError) and isinstance(info.value.__cause__, OSError)
    assert names(tmp_path) == {"epoch=0.ckpt"}  # no partial epoch=1 file, no temporary left behind
    assert ckpt_io.load(tmp_path / "epoch=0.ckpt")["global_step"] == 4
    assert ck.best_model_path == str(tmp_path / "epoch=0.ckpt")
    assert set(ck.best_k_models) == {ck.best_model_path} and ck.best_model_score == pytest.approx(0.5)


def test_a_failed_last_save_deletes_nothing_and_names_only_files_that_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The top-k file of the step is written, then ``last.ckpt`` fails: the top-k file it replaced stays."""
    real_replace = ckpt_io._replace
    lasts: list[Path] = []

    def third_last_fails(src: str, dst: Path) -> None:
        if dst.name == "last.ckpt":
            lasts.append(dst)
            if len(lasts) == 3:
                raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(ckpt_io, "_replace", third_last_fails)
    ck = ModelCheckpoint(tmp_path, filename="{step}", every_n_train_steps=1, save_last=True)
    with pytest.raises(fk.FitkitRuntimeError, match="No space left on device \\(ENOSPC\\)"):
        fit(tmp_path, [ck], val=0)
    assert names(tmp_path) == {"step=2.ckpt", "step=3.ckpt", "last.ckpt"}  # step=2 was not deleted
    assert ckpt_io.load(tmp_path / "last.ckpt")["global_step"] == 2
    assert ck.best_model_path == str(tmp_path / "step=3.ckpt") and ck.last_model_path == str(tmp_path / "last.ckpt")
    assert all(os.path.exists(p) for p in (*ck.best_k_models, ck.best_model_path, ck.last_model_path))


def test_temporary_files_of_killed_writes_are_removed_at_fit_setup_and_never_counted(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid now names no process: what a run killed mid-save leaves behind
    host = ckpt_io.temp_prefix("x").split(".")[2]
    stale = {f".last.ckpt.{host}.{dead.pid}.k2j1x9z0.tmp", f".epoch=0-step=2.ckpt.{host}.{dead.pid}.link.tmp"}
    kept = {
        ckpt_io.temp_prefix("last.ckpt") + "inflight.tmp",  # this process: a write may be in flight
        f".last.ckpt.another-host.{dead.pid}.k2j1x9z0.tmp",  # another machine's pid says nothing here
        f".metrics.csv.{host}.{dead.pid}.k2j1x9z0.tmp",  # not a checkpoint's
    }
    for name in stale | kept:
        (tmp_path / name).write_bytes(b"half a checkpoint")
    ck = ModelCheckpoint(tmp_path, save_last=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*exists and is not empty")  # temporary files do not count
        fit(tmp_path, [ck], val=0)
    assert names(tmp_path) == kept | {"epoch=0-step=4.ckpt", "last.ckpt"}
    assert ck.best_model_path == str(tmp_path / "epoch=0-step=4.ckpt")


def test_only_global_rank_zero_deletes(tmp_path: Path) -> None:
    victim = tmp_path / "old.ckpt"
    victim.write_bytes(b"x")
    ck = ModelCheckpoint(tmp_path)
    ck._remove(types.SimpleNamespace(is_global_zero=False), str(victim))  # type: ignore[arg-type]
    assert victim.exists()
    outside = tmp_path.parent / f"{tmp_path.name}-outside.ckpt"
    outside.write_bytes(b"x")
    ck._remove(types.SimpleNamespace(is_global_zero=True), str(outside))  # type: ignore[arg-type]
    assert outside.exists()  # not in this callback's folder: never deleted
    outside.unlink()
    ck._remove(types.SimpleNamespace(is_global_zero=True), str(victim))  # type: ignore[arg-type]
    assert not victim.exists()


# -- defaults and arguments -----------------------------------------------------------------------
class FolderLogger(Logger):
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @property
    def log_dir(self) -> str:
        return str(self.folder)

    def log_metrics(self, metrics: Any, step: int | None = None) -> None: ...
    def log_hyperparams(self, params: Any, metrics: Any = None) -> None: ...


def test_default_checkpointing(tmp_path: Path) -> None:
    trainer = fit(tmp_path, [], enable_checkpointing=None, val=0)
    (ck,) = [c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)]
    assert names(tmp_path / "checkpoints") == {"epoch=0-step=4.ckpt"}
    assert ck.dirpath == str(tmp_path / "checkpoints")
    trainer = fit(tmp_path, [], val=0, logger=FolderLogger(tmp_path / "logs" / "version_0"))
    assert names(tmp_path / "logs" / "version_0" / "checkpoints") == {"epoch=0-step=4.ckpt"}
    trainer = fit(tmp_path / "off", [], val=0, enable_checkpointing=False)
    assert not any(isinstance(c, ModelCheckpoint) for c in trainer.callbacks)
    assert not (tmp_path / "off" / "checkpoints").exists()


def test_a_given_checkpoint_callback_replaces_the_default(tmp_path: Path) -> None:
    trainer = fk.Trainer(callbacks=[OnExceptionCheckpoint(tmp_path)], logger=False)
    assert not any(isinstance(c, ModelCheckpoint) for c in trainer.callbacks)
    with pytest.raises(fk.MisconfigurationError, match="enable_checkpointing"):
        fk.Trainer(callbacks=[ModelCheckpoint()], enable_checkpointing=False, logger=False)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"save_top_k": -2}, "save_top_k"),
        ({"save_top_k": 2}, "monitor=None"),
        ({"mode": "mean"}, "mode"),
        ({"save_last": "yes"}, "save_last"),
        ({"every_n_train_steps": -1}, "every_n_train_steps"),
        ({"every_n_train_steps": 2, "every_n_epochs": 1}, "cannot be combined"),
        ({"train_time_interval": 5}, "timedelta"),
        ({"every_n_epochs": 2, "train_time_interval": timedelta(minutes=1)}, "cannot be combined"),
    ],
)
def test_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(fk.MisconfigurationError, match=match):
        ModelCheckpoint(**kwargs)


def test_bad_argument_types() -> None:
    with pytest.raises(fk.FitkitTypeError, match="dirpath"):
        ModelCheckpoint(dirpath=3)  # type: ignore[arg-type]
    with pytest.raises(fk.FitkitTypeError, match="monitor"):
        ModelCheckpoint(monitor=["val_loss"])  # type: ignore[arg-type]
