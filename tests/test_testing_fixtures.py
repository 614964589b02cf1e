"""fitkit.testing: the fixtures users build bug reports from."""

from __future__ import annotations

from pathlib import Path

from fitkit.callbacks import ModelCheckpoint, ProgressBar
from fitkit.testing import BoringModule, quiet_trainer


def test_quiet_trainer_draws_and_writes_nothing_yet_trains(tmp_path: Path) -> None:
    t = quiet_trainer(max_epochs=1, limit_train_batches=2, limit_val_batches=1, default_root_dir=tmp_path)
    assert t.loggers == [] and not any(isinstance(c, (ProgressBar, ModelCheckpoint)) for c in t.callbacks)
    t.fit(BoringModule())
    assert t.global_step == 2 and list(tmp_path.iterdir()) == []


def test_quiet_trainer_arguments_turn_defaults_back_on(tmp_path: Path) -> None:
    t = quiet_trainer(enable_checkpointing=True, default_root_dir=tmp_path)
    assert any(isinstance(c, ModelCheckpoint) for c in t.callbacks)
