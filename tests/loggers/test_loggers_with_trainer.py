"""Loggers driven by the Trainer: the default logger, several loggers, ranks, hparams and graph."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

import fitkit as fk
from fitkit import loggers as loggers_pkg
from fitkit.loggers import CSVLogger, Logger, TensorBoardLogger
from fitkit.testing import BoringModule, RandomDataset

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData


class LoggingModule(BoringModule):
    def __init__(self, lr: float = 0.1, width: int = 2) -> None:
        super().__init__(4, width)
        self.save_hyperparameters()

    def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        loss = self.loss(self(batch))
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        return loss

    def train_dataloader(self) -> DataLoader[torch.Tensor]:
        return DataLoader(RandomDataset(4, 8), batch_size=2)

    def val_dataloader(self) -> DataLoader[torch.Tensor]:
        return DataLoader(RandomDataset(4, 4), batch_size=2)


def fit(tmp_path: Path, model: fk.Module | None = None, **kwargs: Any) -> fk.Trainer:
    kwargs.setdefault("enable_progress_bar", False)
    kwargs.setdefault("enable_model_summary", False)
    kwargs.setdefault("enable_checkpointing", False)
    trainer = fk.Trainer(max_epochs=2, default_root_dir=tmp_path, log_every_n_steps=2, **kwargs)
    trainer.fit(model or LoggingModule())
    return trainer


def read_tb(log_dir: str) -> EventAccumulator:
    acc = EventAccumulator(log_dir, size_guidance={"scalars": 0})
    acc.Reload()
    return acc


def steps(acc: EventAccumulator, tag: str) -> list[int]:
    return [e.step for e in acc.Scalars(tag)]


def read_csv(log_dir: str) -> list[dict[str, str]]:
    with open(os.path.join(log_dir, "metrics.csv"), newline="") as f:
        return list(csv.DictReader(f))


def test_default_logger_writes_tensorboard_under_fitkit_logs(tmp_path: Path) -> None:
    trainer = fit(tmp_path)
    assert isinstance(trainer.logger, TensorBoardLogger)
    assert trainer.log_dir == str(tmp_path / "fitkit_logs" / "version_0")
    acc = read_tb(trainer.log_dir)
    # 4 batches per epoch, flushed every 2 steps; epoch values at each epoch's last step.
    assert steps(acc, "train_loss_step") == [2, 4, 6, 8]
    assert steps(acc, "train_loss_epoch") == [4, 8]
    assert steps(acc, "val_loss") == [4, 8]
    assert [e.value for e in acc.Scalars("epoch")][-1] == 1.0
    last = acc.Scalars("val_loss")[-1].value
    assert last == pytest.approx(float(trainer.logged_metrics["val_loss"]))
    content = acc.PluginTagToContent("hparams")
    start = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert {k: v.number_value for k, v in start.hparams.items()} == {"lr": 0.1, "width": 2.0}
    # A second run takes the next version.
    assert fit(tmp_path).log_dir == str(tmp_path / "fitkit_logs" / "version_1")


def test_default_logger_is_csv_without_tensorboard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loggers_pkg, "_tensorboard_available", lambda: False)
    trainer = fit(tmp_path)
    assert isinstance(trainer.logger, CSVLogger)
    assert trainer.log_dir == str(tmp_path / "fitkit_logs" / "version_0")
    assert sorted(os.listdir(trainer.log_dir)) == ["hparams.yaml", "metrics.csv"]
    assert Path(trainer.log_dir, "hparams.yaml").read_text() == "lr: 0.1\nwidth: 2\n"


def test_several_loggers_share_one_version_and_match_logged_metrics(tmp_path: Path) -> None:
    tb, csv_logger = TensorBoardLogger(tmp_path / "logs"), CSVLogger(tmp_path / "logs")
    trainer = fit(tmp_path, logger=[tb, csv_logger])
    assert trainer.loggers == [tb, csv_logger] and trainer.logger is tb
    assert tb.log_dir == csv_logger.log_dir == trainer.log_dir == str(tmp_path / "logs" / "fitkit_logs" / "version_0")
    assert steps(read_tb(tb.log_dir), "train_loss_step") == [2, 4, 6, 8]
    rows = read_csv(csv_logger.log_dir)
    assert [r["step"] for r in rows] == ["2", "4", "6", "8"]  # epoch-end values join their step's row
    last = rows[-1]
    for name, value in trainer.logged_metrics.items():
        assert float(last[name]) == float(value), name
    assert last["epoch"] == "1"
    assert rows[1]["epoch"] == "0" and rows[1]["val_loss"] != ""


def test_logger_false_writes_nothing(tmp_path: Path) -> None:
    trainer = fit(tmp_path, logger=False)
    assert trainer.loggers == [] and trainer.logger is None
    assert trainer.log_dir == str(tmp_path)
    assert os.listdir(tmp_path) == []


def test_other_ranks_write_nothing(tmp_path: Path) -> None:
    os.environ["RANK"] = "1"  # the conftest restores the environment
    fit(tmp_path, logger=[TensorBoardLogger(tmp_path, log_graph=True), CSVLogger(tmp_path)])
    assert not (tmp_path / "fitkit_logs").exists()


class GraphModule(LoggingModule):
    def __init__(self) -> None:
        super().__init__()
        self.example_input_array = torch.randn(3, 4)


def test_log_graph_from_the_trainer(tmp_path: Path) -> None:
    trainer = fit(tmp_path, GraphModule(), logger=TensorBoardLogger(tmp_path, log_graph=True))
    assert read_tb(trainer.log_dir).Tags()["graph"]


def test_log_graph_does_not_change_training(tmp_path: Path) -> None:
    weights = []
    for log_graph in (False, True):
        torch.manual_seed(0)
        model = GraphModule()
        fit(tmp_path, model, logger=TensorBoardLogger(tmp_path, log_graph=log_graph))
        weights.append(model.layer.weight.detach().clone())
    assert torch.equal(weights[0], weights[1])


class Recorder(Logger):
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def log_metrics(self, metrics: Any, step: int | None = None) -> None:
        self.calls.append(("metrics", step))

    def log_hyperparams(self, params: Any, metrics: Any = None) -> None:
        self.calls.append(("hparams", dict(params)))

    def save(self) -> None:
        self.calls.append(("save", None))

    def finalize(self, status: str) -> None:
        self.calls.append(("finalize", status))


def test_a_custom_logger_sees_the_run(tmp_path: Path) -> None:
    rec = Recorder()
    trainer = fit(tmp_path, logger=rec, num_sanity_val_steps=0)
    assert trainer.log_dir == str(tmp_path)  # a logger without files: default_root_dir
    assert rec.calls[0] == ("hparams", {"lr": 0.1, "width": 2})
    assert rec.calls[-1] == ("finalize", "success")
    assert rec.calls.count(("save", None)) == 2

    class Boom(LoggingModule):
        def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
            raise ValueError("boom")

    rec.calls.clear()
    with pytest.raises(ValueError, match="boom"):
        fit(tmp_path, Boom(), logger=rec)
    assert rec.calls[-1] == ("finalize", "failed")
