"""OnExceptionCheckpoint: a run that dies leaves a checkpoint to resume from."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

import fitkit as fk
from fitkit import checkpoint as ckpt_io
from fitkit.callbacks import ModelCheckpoint, OnExceptionCheckpoint
from fitkit.callbacks.on_exception_checkpoint import newest_last_checkpoint
from fitkit.testing import BoringModule, RandomDataset


class Boom(RuntimeError):
    pass


class DiesAtStep(BoringModule):
    def __init__(self, step: int) -> None:
        super().__init__()
        self.step = step

    def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        if self.global_step == self.step:
            raise Boom("training_step failed")
        return super().training_step(batch, batch_idx)


def run(tmp_path: Path, callback: OnExceptionCheckpoint, model: fk.Module, **kwargs: Any) -> None:
    trainer = fk.Trainer(
        max_epochs=3,
        callbacks=[callback],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **kwargs,
    )
    trainer.fit(model, DataLoader(RandomDataset(32, 8), batch_size=2))


def test_saves_when_training_step_raises(tmp_path: Path) -> None:
    callback = OnExceptionCheckpoint(tmp_path / "crash")
    model = DiesAtStep(6)
    with pytest.raises(Boom):
        run(tmp_path, callback, model)
    assert callback.ckpt_path == str(tmp_path / "crash" / "on_exception.ckpt")
    checkpoint = ckpt_io.load(callback.ckpt_path)
    assert checkpoint["global_step"] == 6
    for key, value in model.state_dict().items():
        assert torch.equal(checkpoint["state_dict"][key], value)


def test_custom_filename_and_resume(tmp_path: Path) -> None:
    callback = OnExceptionCheckpoint(tmp_path, filename="crashed")
    with pytest.raises(Boom):
        run(tmp_path, callback, DiesAtStep(5))
    assert (tmp_path / "crashed.ckpt").is_file()
    model = BoringModule()
    trainer = fk.Trainer(max_epochs=3, logger=False, enable_progress_bar=False, enable_checkpointing=False)
    trainer.fit(model, DataLoader(RandomDataset(32, 8), batch_size=2), ckpt_path=callback.ckpt_path)
    assert trainer.global_step == 12


def test_a_failed_save_does_not_hide_the_original_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError("read-only file system")

    monkeypatch.setattr(fk.Trainer, "save_checkpoint", broken)
    with pytest.warns(UserWarning, match="read-only file system"), pytest.raises(Boom):
        run(tmp_path, OnExceptionCheckpoint(tmp_path), DiesAtStep(1))


def test_bad_arguments() -> None:
    with pytest.raises(fk.MisconfigurationError, match="filename"):
        OnExceptionCheckpoint(".", filename="")
    with pytest.raises(fk.FitkitTypeError, match="dirpath"):
        OnExceptionCheckpoint(None)  # type: ignore[arg-type]


def test_last_picks_the_newer_of_model_checkpoint_and_exception_checkpoint(tmp_path: Path) -> None:
    def trainer() -> fk.Trainer:
        callbacks = [ModelCheckpoint(tmp_path / "mc", save_last=True), OnExceptionCheckpoint(tmp_path / "crash")]
        return fk.Trainer(
            max_epochs=3, callbacks=callbacks, logger=False, enable_progress_bar=False, enable_model_summary=False
        )

    loader = DataLoader(RandomDataset(32, 8), batch_size=2)  # 4 steps per epoch
    with pytest.raises(Boom):
        trainer().fit(DiesAtStep(6), loader)  # last.ckpt at step 4, then the crash at step 6
    resumed = trainer()
    resumed.fit(BoringModule(), loader, ckpt_path="last")
    assert resumed.ckpt_path == str(tmp_path / "crash" / "on_exception.ckpt")
    # That fit wrote a newer last.ckpt; the exception checkpoint is now the older file.
    again = trainer()
    again.fit(BoringModule(), loader, ckpt_path="last")
    assert again.ckpt_path is not None and os.path.dirname(again.ckpt_path) == str(tmp_path / "mc")
    assert ckpt_io.load(again.ckpt_path)["global_step"] == 12


def test_last_without_an_exception_file_resolves_as_before(tmp_path: Path) -> None:
    callbacks = [ModelCheckpoint(tmp_path / "mc", save_last=True), OnExceptionCheckpoint(tmp_path / "crash")]
    trainer = fk.Trainer(max_epochs=1, callbacks=callbacks, logger=False, enable_progress_bar=False)
    trainer.fit(BoringModule(), DataLoader(RandomDataset(32, 8), batch_size=2))
    assert newest_last_checkpoint(trainer) is None
    trainer.fit(BoringModule(), DataLoader(RandomDataset(32, 8), batch_size=2), ckpt_path="last")
    assert trainer.ckpt_path == str(tmp_path / "mc" / "last.ckpt")
