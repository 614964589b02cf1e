"""Smoke, error and real-data checks for ``examples/transfer_resnet18.py`` (ResNet18, bees and ants)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import _examples
import pytest
import torch
from PIL import Image

import fitkit

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "transfer_resnet18.py"
SMALL = ["--no-pretrained", "--image-size", "32", "--max-epochs", "1", "--batch-size", "2", "--num-threads", "1"]


@pytest.fixture(scope="module")
def example() -> Iterator[ModuleType]:
    with _examples.loaded(EXAMPLE, "fitkit_example_transfer_resnet18") as module:
        yield module


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    """``<tmp>/data/hymenoptera_data/{train,val}/{ants,bees}``: 4 + 2 real 40x40 JPEGs per class."""
    data = tmp_path / "data"
    gen = torch.Generator().manual_seed(0)
    for split, count in (("train", 4), ("val", 2)):
        for label, base in (("ants", (200, 60, 40)), ("bees", (40, 60, 200))):
            folder = data / "hymenoptera_data" / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                noise = torch.randint(0, 50, (40, 40, 3), generator=gen)
                pixels = (torch.tensor(base) + noise).clamp(0, 255).to(torch.uint8).numpy()
                Image.fromarray(pixels).save(folder / f"{label}_{i}.jpg", format="JPEG")
    return data


def _run_dir(root: Path) -> Path:
    runs = sorted((root / "fitkit_logs").glob("version_*"))
    assert len(runs) == 1, runs
    return runs[0]


def _image_tags(run: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run), size_guidance={"images": 0})
    events.Reload()
    return set(events.Tags()["images"])


def test_smoke_end_to_end(example: ModuleType, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    pytest.importorskip("tensorboard")
    accuracy = example.main([*SMALL, "--data-dir", str(tiny_data), "--default-root-dir", str(tmp_path / "runs")])
    assert 0.0 <= accuracy <= 1.0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1] == f"validation accuracy: {accuracy:.4f}"
    assert "after 1 epochs (4 steps)" in out  # 8 training images, batch 2
    run = _run_dir(tmp_path / "runs")
    checkpoints = sorted(p.name for p in (run / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in checkpoints and len(checkpoints) == 2, checkpoints  # the best by val_acc, and last
    grid = Image.open(run / "val_predictions.png")
    assert grid.size == (4 * 128 + 5 * 2, 128 + 2 * 2)  # 4 validation images, each enlarged to 128 pixels
    assert "val_predictions" in _image_tags(run)
    # The book's resnet18.pt: a plain torchvision state dict.
    state = torch.load(run / "resnet18.pt", weights_only=True)
    assert state["fc.weight"].shape == (2, 512)


def test_freeze_backbone(example: ModuleType, tiny_data: Path, tmp_path: Path) -> None:
    seen: dict[int, dict[str, object]] = {}

    class Watch(fitkit.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):  # type: ignore[no-untyped-def]
            if batch_idx == 0:
                # BatchNorm layers train throughout (BackboneFinetuning's train_bn=True); the rest is frozen.
                layers = [m for m in module.backbone.modules() if not isinstance(m, torch.nn.BatchNorm2d)]
                conv = [p.requires_grad for m in layers for p in m.parameters(recurse=False)]
                seen[trainer.current_epoch] = {
                    "backbone": set(conv),
                    "head": {p.requires_grad for p in module.fc.parameters()},
                    "groups": [g["lr"] for g in trainer.optimizers[0].param_groups],
                }

    argv = [*SMALL, "--data-dir", str(tiny_data), "--default-root-dir", str(tmp_path / "runs")]
    argv += ["--max-epochs", "2", "--freeze-backbone", "--unfreeze-at-epoch", "1"]
    example.main(argv, callbacks=[Watch()])
    assert seen[0] == {"backbone": {False}, "head": {True}, "groups": [pytest.approx(1e-3)]}
    # Epoch 1: the backbone trains, in its own group at a tenth of the head's LR.
    assert seen[1] == {"backbone": {True}, "head": {True}, "groups": [pytest.approx(1e-3), pytest.approx(1e-4)]}


def test_transforms_follow_the_image_size(example: ModuleType) -> None:
    train, val = example.build_transforms()
    assert train.transforms[0].size == (224, 224)
    assert val.transforms[0].size == 256 and list(val.transforms[1].size) == [224, 224]
    _, small = example.build_transforms(32)
    assert small.transforms[0].size == 37


def test_missing_data_stops_clearly(example: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as stop:
        example.main(["--no-pretrained", "--data-dir", str(tmp_path / "nowhere")])
    message = str(stop.value.code)
    assert message.startswith("error: the hymenoptera (bees and ants) images")
    assert str(tmp_path / "nowhere") in message and "--download" in message


def test_missing_weights_stop_clearly(
    example: ModuleType, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))  # no cached weights there
    with pytest.raises(SystemExit) as stop:
        example.main(["--data-dir", str(tiny_data), "--image-size", "32"])
    message = str(stop.value.code)
    assert "ResNet18 ImageNet weights" in message
    assert "--download" in message and "--no-pretrained" in message


def test_cached_weights_are_used(example: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in for the ImageNet file in torchvision's cache: the backbone must load it.
    from torchvision.models import ResNet18_Weights, resnet18

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    cached = tmp_path / "torch_home" / "hub" / "checkpoints" / Path(ResNet18_Weights.IMAGENET1K_V1.url).name
    cached.parent.mkdir(parents=True)
    reference = resnet18(weights=None)
    torch.save(reference.state_dict(), cached)
    model = example.ResNet18Classifier(pretrained=True)
    assert torch.equal(model.backbone.conv1.weight, reference.conv1.weight)
    assert model.to_torchvision().conv1.weight.data_ptr() != reference.conv1.weight.data_ptr()


@pytest.mark.realdata
def test_real_bees_and_ants_one_epoch(
    example: ModuleType, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not (shared_data / "hymenoptera_data").is_dir():
        pytest.skip("hymenoptera_data not in the shared data")
    argv = ["--data-dir", str(shared_data), "--no-pretrained", "--image-size", "64", "--max-epochs", "1"]
    argv += ["--num-threads", "1", "--default-root-dir", str(tmp_path / "runs")]
    seen: list[float] = []

    class Losses(fitkit.Callback):
        def on_train_epoch_end(self, trainer, module):  # type: ignore[no-untyped-def]
            seen.append(float(trainer.callback_metrics["train_loss_epoch"]))

    accuracy = example.main(argv, callbacks=[Losses()])
    out = capsys.readouterr().out
    assert "after 1 epochs (61 steps)" in out  # 244 images (ImageFolder skips the one .gif), batch 4
    assert len(seen) == 1 and math.isfinite(seen[0])
    assert 0.0 <= accuracy <= 1.0
    run = _run_dir(tmp_path / "runs")
    assert (run / "checkpoints" / "last.ckpt").is_file()
    assert Image.open(run / "val_predictions.png").size == (4 * 128 + 5 * 2, 2 * 128 + 3 * 2)  # 8 images


def test_download_fetches_the_images(
    example: ModuleType, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No network in tests: the download is replaced by a copy of the tiny tree.
    import shutil

    import torchvision.datasets.utils

    calls: list[tuple[str, str]] = []

    def fake_download(url: str, download_root: str, **kwargs: object) -> None:
        calls.append((url, download_root))
        shutil.copytree(tiny_data / "hymenoptera_data", Path(download_root) / "hymenoptera_data")

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", fake_download)
    root = example.find_data(tmp_path / "fresh", download=True)
    assert calls == [(example.DATA_URL, str(tmp_path / "fresh"))]
    assert root == tmp_path / "fresh" / "hymenoptera_data" and (root / "val" / "bees").is_dir()
    assert example.find_data(tmp_path / "fresh", download=True) == root and len(calls) == 1  # present: no download


def test_fast_dev_run(example: ModuleType, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    # fast_dev_run runs without loggers: no LearningRateMonitor, the grid goes to --default-root-dir.
    accuracy = example.main(
        [*SMALL, "--data-dir", str(tiny_data), "--default-root-dir", str(tmp_path), "--fast-dev-run", "1"]
    )
    assert 0.0 <= accuracy <= 1.0
    assert (tmp_path / "val_predictions.png").is_file()
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"validation accuracy: {accuracy:.4f}"
