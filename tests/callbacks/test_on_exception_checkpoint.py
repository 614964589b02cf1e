"""OnExceptionCheckpoint: a run that dies leaves a checkpoint to resume from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

import fitkit as fk
from fitkit import checkpoint as ckpt_io
from fitkit.callbacks import OnExceptionCheckpoint
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
