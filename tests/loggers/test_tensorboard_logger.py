"""TensorBoardLogger on its own: event files read back with tensorboard's EventAccumulator."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from fitkit.loggers import TensorBoardLogger
from fitkit.loggers._common import DummyExperiment
from fitkit.utilities.exceptions import FitkitTypeError, MisconfigurationError


def read(log_dir: str) -> EventAccumulator:
    acc = EventAccumulator(log_dir, size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalars(acc: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def hparams_data(acc: EventAccumulator) -> tuple[dict[str, object], list[str]]:
    content = acc.PluginTagToContent("hparams")
    start = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    values = {k: getattr(v, v.WhichOneof("kind")) for k, v in start.hparams.items()}
    return values, [m.name.tag for m in experiment.metric_infos]


def test_scalars_are_written_at_their_steps(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path)
    logger.log_metrics({"loss": 0.5, "epoch": 0}, step=3)
    logger.log_metrics({"loss": torch.tensor(0.25), "acc": 0.75, "epoch": 1}, step=6)
    logger.finalize("success")
    acc = read(logger.log_dir)
    assert scalars(acc, "loss") == [(3, 0.5), (6, 0.25)]
    assert scalars(acc, "acc") == [(6, 0.75)]
    assert scalars(acc, "epoch") == [(3, 0.0), (6, 1.0)]


def test_queued_scalars_reach_the_file_at_save_with_their_own_wall_time(tmp_path: Path) -> None:
    import time

    logger = TensorBoardLogger(tmp_path)
    before = time.time()
    logger.log_metrics({"loss": 0.5}, step=1)
    logger.log_metrics({"loss": 0.25}, step=2)
    time.sleep(0.3)
    logger.save()  # the Trainer calls this at every epoch end
    events = read(logger.log_dir).Scalars("loss")
    assert [(e.step, e.value) for e in events] == [(1, 0.5), (2, 0.25)]
    assert all(before <= e.wall_time < before + 0.25 for e in events)  # when logged, not when written


def test_queue_is_handed_over_when_full_or_old(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fitkit.loggers import tensorboard

    logger = TensorBoardLogger(tmp_path)
    monkeypatch.setattr(tensorboard, "PENDING_LIMIT", 3)
    logger.log_metrics({"a": 1.0, "b": 2.0}, step=0)
    assert len(logger._pending) == 2
    logger.log_metrics({"a": 3.0}, step=1)
    assert logger._pending == []  # three waiting: handed to the writer
    monkeypatch.setattr(tensorboard, "PENDING_LIMIT", 10_000)
    monkeypatch.setattr(tensorboard, "PENDING_SECONDS", 0.0)
    logger.log_metrics({"a": 4.0}, step=2)
    assert logger._pending == []  # older than PENDING_SECONDS: handed over at once
    logger.finalize("success")
    assert scalars(read(logger.log_dir), "a") == [(0, 1.0), (1, 3.0), (2, 4.0)]


def test_prefix_is_joined_with_a_dash(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path, prefix="run")
    logger.log_metrics({"loss": 1.0}, step=1)
    logger.finalize("success")
    assert scalars(read(logger.log_dir), "run-loss") == [(1, 1.0)]


def test_hyperparams_reach_the_hparams_tab_with_hp_metric(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path)
    logger.log_hyperparams(
        {"lr": 0.1, "opt": {"name": "adam", "betas": (0.9, 0.99)}, "width": torch.tensor(8), "dropout": None}
    )
    logger.finalize("success")
    acc = read(logger.log_dir)
    values, metric_tags = hparams_data(acc)
    assert values == {
        "lr": 0.1,
        "opt/name": "adam",
        "opt/betas": "(0.9, 0.99)",
        "width": 8.0,
        "dropout": "None",
    }
    assert metric_tags == ["hp_metric"]
    assert scalars(acc, "hp_metric") == [(0, -1.0)]


def test_hyperparams_with_metrics_and_without_default_hp_metric(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path, default_hp_metric=False)
    logger.log_hyperparams({"lr": 0.1}, metrics={"val_acc": 0.5})
    logger.finalize("success")
    acc = read(logger.log_dir)
    assert hparams_data(acc)[1] == ["val_acc"]
    assert scalars(acc, "val_acc") == [(0, 0.5)]
    assert "hp_metric" not in acc.Tags()["scalars"]


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(4, 3)
        self.norm = nn.BatchNorm1d(3)
        self.drop = nn.Dropout(0.5)
        self.example_input_array = torch.randn(5, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.norm(self.layer(x)))


def test_log_graph_writes_the_graph_and_leaves_the_model_as_it_was(tmp_path: Path) -> None:
    net = Net()
    net.norm.eval()  # a frozen part in eval mode must stay so
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    logger = TensorBoardLogger(tmp_path, log_graph=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the jit deprecation warning is ours to hide
        logger.log_graph(net)
    logger.finalize("success")
    assert read(logger.log_dir).Tags()["graph"]
    assert net.training and net.layer.training and not net.norm.training and net.drop.training
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert torch.equal(torch.get_rng_state(), rng)


def test_log_graph_is_off_by_default_and_warns_without_an_input(tmp_path: Path) -> None:
    off = TensorBoardLogger(tmp_path, version="off")
    off.log_graph(Net())
    assert not os.path.exists(off.log_dir)
    on = TensorBoardLogger(tmp_path, version="on", log_graph=True)
    with pytest.warns(UserWarning, match="example_input_array"):
        on.log_graph(nn.Linear(2, 2))


def test_experiment_is_the_summary_writer(tmp_path: Path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    logger = TensorBoardLogger(tmp_path, flush_secs=5)
    writer = logger.experiment
    assert isinstance(writer, SummaryWriter) and writer.log_dir == logger.log_dir
    writer.add_histogram("weights", torch.randn(100), global_step=1)
    writer.add_text("note", "hello", global_step=1)
    writer.add_image("img", torch.rand(3, 4, 4), global_step=1)
    logger.finalize("success")
    tags = read(logger.log_dir).Tags()
    assert tags["histograms"] == ["weights"] and tags["images"] == ["img"]


def test_versions_names_and_sub_dir(tmp_path: Path) -> None:
    first = TensorBoardLogger(tmp_path)
    assert first.version == 0 and not os.path.exists(first.log_dir)  # nothing written before first use
    first.log_metrics({"a": 1.0}, 0)
    second = TensorBoardLogger(tmp_path)
    second.log_metrics({"a": 1.0}, 0)
    assert (first.log_dir, second.log_dir) == (
        str(tmp_path / "fitkit_logs" / "version_0"),
        str(tmp_path / "fitkit_logs" / "version_1"),
    )
    (tmp_path / "fitkit_logs" / "version_7").mkdir()
    (tmp_path / "fitkit_logs" / "version_9.txt").touch()  # not a version folder
    assert TensorBoardLogger(tmp_path).version == 8
    assert TensorBoardLogger(tmp_path, name="", version=3).log_dir == str(tmp_path / "version_3")
    named = TensorBoardLogger(tmp_path, name="exp", version="baseline", sub_dir="train")
    assert named.log_dir == str(tmp_path / "exp" / "baseline" / "train")
    assert (named.name, named.version, named.save_dir, named.sub_dir) == ("exp", "baseline", str(tmp_path), "train")
    for logger in (first, second):
        logger.finalize("success")


def test_writing_after_finalize_opens_a_new_event_file(tmp_path: Path) -> None:
    logger = TensorBoardLogger(tmp_path)
    logger.log_metrics({"loss": 1.0}, 1)
    logger.finalize("success")
    logger.log_metrics({"loss": 2.0}, 2)
    logger.finalize("success")
    assert len(os.listdir(logger.log_dir)) == 2
    assert scalars(read(logger.log_dir), "loss") == [(1, 1.0), (2, 2.0)]


def test_other_ranks_write_nothing(tmp_path: Path) -> None:
    os.environ["RANK"] = "1"  # the conftest restores the environment
    logger = TensorBoardLogger(tmp_path, log_graph=True)
    logger.log_hyperparams({"lr": 0.1})
    logger.log_metrics({"loss": 1.0}, 1)
    logger.log_graph(Net())
    assert isinstance(logger.experiment, DummyExperiment)
    logger.experiment.add_histogram("w", torch.zeros(3), 1)  # accepted, ignored
    logger.save()
    logger.finalize("success")
    assert os.listdir(tmp_path) == []


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FitkitTypeError, match="version"):
        TensorBoardLogger(tmp_path, version=1.5)  # type: ignore[arg-type]
    with pytest.raises(MisconfigurationError, match="version"):
        TensorBoardLogger(tmp_path, version=-1)
    with pytest.raises(FitkitTypeError, match="log_dir"):
        TensorBoardLogger(tmp_path, log_dir="elsewhere")
    logger = TensorBoardLogger(tmp_path)
    with pytest.raises(FitkitTypeError, match="'loss'"):
        logger.log_metrics({"loss": "high"}, 1)
    with pytest.raises(FitkitTypeError, match="'loss'"):
        logger.log_metrics({"loss": "0.5"}, 1)  # a numeric string is still not a number
    logger.log_metrics({"loss": np.float32(0.5), "flag": True}, 1)  # NumPy scalars and bools are
    logger.finalize("failed")
    assert scalars(read(logger.log_dir), "flag") == [(1, 1.0)]


def test_import_fitkit_does_not_import_tensorboard() -> None:
    code = "import sys, fitkit, fitkit.loggers; print(any(m.startswith('tensorboard') for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
