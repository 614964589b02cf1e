"""Checks for ``examples/tensorboard_tour.py``: run it, then read every kind of record back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import _examples
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tensorboard_tour.py"
EPOCHS = 2


@pytest.fixture(scope="module")
def example() -> Iterator[ModuleType]:
    with _examples.loaded(EXAMPLE, "fitkit_example_tensorboard_tour") as module:
        yield module


@pytest.fixture(scope="module")
def run(example: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> tuple[float, Path, EventAccumulator]:
    root = tmp_path_factory.mktemp("tour")
    accuracy, log_dir = example.main(["--max-epochs", str(EPOCHS), "--default-root-dir", str(root)])
    events = EventAccumulator(log_dir, size_guidance={"scalars": 0, "images": 0, "histograms": 0, "tensors": 0})
    events.Reload()
    return accuracy, Path(log_dir), events


def test_log_folder_and_metric(run: tuple[float, Path, EventAccumulator]) -> None:
    accuracy, log_dir, _ = run
    assert log_dir.parts[-3:] == ("runs", "tensorboard_tour", "version_0")
    assert 0.3 < accuracy <= 1.0  # two epochs already learn something (chance is 0.1)


def test_scalars_per_epoch(run: tuple[float, Path, EventAccumulator]) -> None:
    _, _, events = run
    assert {"train_loss", "val_loss", "val_acc", "hp_metric"} <= set(events.Tags()["scalars"])
    for tag in ("train_loss", "val_loss", "val_acc"):
        assert len(events.Scalars(tag)) == EPOCHS, tag
    train_loss = [e.value for e in events.Scalars("train_loss")]
    assert train_loss[-1] < train_loss[0]


def test_graph_images_text_and_histograms(run: tuple[float, Path, EventAccumulator]) -> None:
    _, _, events = run
    tags = events.Tags()
    assert tags["graph"] and len(events.Graph().node) > 0
    assert any("Conv2d" in node.op or "conv" in node.name.lower() for node in events.Graph().node)
    assert set(tags["images"]) == {"val/digits", "filters/conv1"}
    for tag in tags["images"]:
        images = events.Images(tag)
        assert len(images) == EPOCHS, tag  # one per epoch, none from the sanity check
        assert images[0].width > 0 and images[0].encoded_image_string.startswith(b"\x89PNG")
    histograms = [t for t in tags["histograms"] if t.startswith("weights/")]
    assert "weights/conv1.weight" in histograms and "weights/head.1.bias" in histograms
    for tag in histograms:
        assert len(events.Histograms(tag)) == EPOCHS, tag
    assert "run/summary/text_summary" in tags["tensors"]


def test_hparams_with_hp_metric(run: tuple[float, Path, EventAccumulator]) -> None:
    accuracy, _, events = run
    content = events.PluginTagToContent("hparams")
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(content)
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    assert set(start.session_start_info.hparams) == {"lr", "channels", "dropout", "batch_size"}
    assert start.session_start_info.hparams["lr"].number_value == pytest.approx(3e-3)
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    assert [m.name.tag for m in experiment.experiment.metric_infos] == ["hp_metric"]
    hp_metric = events.Scalars("hp_metric")
    assert hp_metric[0].value == -1.0  # the placeholder written at fit start
    assert hp_metric[-1].value == pytest.approx(accuracy)  # then the real value, each epoch


def test_projector_files(run: tuple[float, Path, EventAccumulator]) -> None:
    _, log_dir, _ = run
    config = (log_dir / "projector_config.pbtxt").read_text()
    assert 'tensor_name: "val_features' in config and "sprite" in config
    (folder,) = {p.parent for p in log_dir.glob("*/val_features/tensors.tsv")}
    tensors = (folder / "tensors.tsv").read_text().strip().splitlines()
    labels = (folder / "metadata.tsv").read_text().strip().splitlines()
    assert len(tensors) == len(labels) == 359  # every validation digit
    assert len(tensors[0].split("\t")) == 64  # the learned features
    assert set(labels) <= {str(d) for d in range(10)}
    assert (folder / "sprite.png").read_bytes().startswith(b"\x89PNG")
