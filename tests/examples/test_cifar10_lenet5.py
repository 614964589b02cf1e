"""Smoke and error checks for ``examples/cifar10_lenet5.py`` (LeNet5 on CIFAR-10).

CIFAR-10 cannot be downloaded here, so the tests write a tiny CIFAR-10 in the real
on-disk format: ``cifar-10-batches-py/`` with ``data_batch_1..5``, ``test_batch`` and
``batches.meta``, each a Python 2 pickle of a dict (``data``: uint8 N x 3072, row-major
R, G, B planes; ``labels``; ``label_names`` in the meta file). torchvision's own
``CIFAR10`` code reads them. It also checks each file's md5 against the real files'
checksums, which fake files cannot match; the tests therefore point torchvision's
checksum table (``CIFAR10.train_list``, ``test_list``, ``meta``) at the md5 of the files
they wrote, so the integrity check still runs, on these files. The example is unchanged.
"""

from __future__ import annotations

import hashlib
import pickle
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import _examples
import numpy as np
import pytest
import torch
from torchvision import datasets

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cifar10_lenet5.py"
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PER_TRAIN_BATCH = 12  # 5 files: 60 training images -> 48 train / 12 validation (the 4:1 split)
TEST_IMAGES = 20  # with batch 16: a full batch and a partial one, which the book's accuracy gets wrong
SMALL = ["--max-epochs", "1", "--num-threads", "1"]


@pytest.fixture(scope="module")
def example() -> Iterator[ModuleType]:
    with _examples.loaded(EXAMPLE, "fitkit_example_cifar10_lenet5") as module:
        yield module


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]  # the pure-Python pickler
    """Writes ``bytes`` as Python 2 ``str`` (BINSTRING opcodes), as in the real CIFAR-10 files.

    Such strings load as ``str`` with ``encoding="latin1"`` (what torchvision passes) and
    as ``bytes`` with ``encoding="bytes"`` (``b"data"``, ``b"labels"``), like the real files.
    """

    write: Callable[[bytes], Any]  # (the pure-Python pickler's, not in its type stubs)
    memoize: Callable[[Any], None]
    dispatch: ClassVar[dict[type, Callable[..., None]]] = dict(pickle._Pickler.dispatch)  # type: ignore[attr-defined]

    def _save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def _write_batch(path: Path, entry: dict[bytes, Any]) -> str:
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(entry)
    return hashlib.md5(path.read_bytes()).hexdigest()


def _images(count: int, gen: np.random.Generator) -> tuple[np.ndarray, list[int]]:
    """``count`` 32x32 colour images, a class colour plus noise, as CIFAR's N x 3072 rows."""
    labels = [int(i % 10) for i in range(count)]
    base = np.array([[(37 * k) % 256, (91 * k) % 256, (151 * k) % 256] for k in labels], dtype=np.int64)
    pixels = base[:, :, None, None] + gen.integers(-30, 30, size=(count, 3, 32, 32))
    return pixels.clip(0, 255).astype(np.uint8).reshape(count, 3072), labels


@pytest.fixture
def tiny_cifar10(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``<tmp>/data/cifar-10-batches-py``: 5 x 12 training images, 20 test images, the meta file."""
    data = tmp_path / "data"
    folder = data / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    gen = np.random.default_rng(0)
    train_list = []
    for i in range(1, 6):
        x, y = _images(PER_TRAIN_BATCH, gen)
        name = f"data_batch_{i}"
        entry = {b"batch_label": f"training batch {i} of 5".encode(), b"labels": y, b"data": x}
        entry[b"filenames"] = [f"img_{i}_{j}.png".encode() for j in range(len(y))]
        train_list.append([name, _write_batch(folder / name, entry)])
    x, y = _images(TEST_IMAGES, gen)
    entry = {b"batch_label": b"testing batch 1 of 1", b"labels": y, b"data": x}
    test_list = [["test_batch", _write_batch(folder / "test_batch", entry)]]
    meta = {b"num_cases_per_batch": PER_TRAIN_BATCH, b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072}
    meta_md5 = _write_batch(folder / "batches.meta", meta)
    # torchvision checks every file's md5: let it check these files' (see the module docstring).
    monkeypatch.setattr(datasets.CIFAR10, "train_list", train_list)
    monkeypatch.setattr(datasets.CIFAR10, "test_list", test_list)
    monkeypatch.setattr(datasets.CIFAR10, "meta", {**datasets.CIFAR10.meta, "md5": meta_md5})
    return data


def test_tiny_files_read_like_the_real_format(tiny_cifar10: Path) -> None:
    with open(tiny_cifar10 / "cifar-10-batches-py" / "data_batch_1", "rb") as f:
        raw = pickle.load(f, encoding="bytes")  # how the CIFAR-10 page says to read them
    assert set(raw) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert raw[b"data"].dtype == np.uint8 and raw[b"data"].shape == (PER_TRAIN_BATCH, 3072)
    train = datasets.CIFAR10(str(tiny_cifar10), train=True)
    test = datasets.CIFAR10(str(tiny_cifar10), train=False)
    assert (len(train), len(test)) == (5 * PER_TRAIN_BATCH, TEST_IMAGES)
    assert train.classes == CLASSES and train.data.shape == (60, 32, 32, 3)
    assert np.array_equal(train.data[0].transpose(2, 0, 1).reshape(-1), raw[b"data"][0])


def test_split_is_seeded_and_proportional(example: ModuleType, tiny_cifar10: Path) -> None:
    a = example.CIFAR10DataModule(tiny_cifar10, seed=3)
    b = example.CIFAR10DataModule(tiny_cifar10, seed=3)
    a.setup("fit")
    b.setup("fit")
    assert (len(a.train_set), len(a.val_set)) == (48, 12)  # 40,000 : 10,000 of 60
    assert a.val_set.dataset.indices == b.val_set.dataset.indices
    assert not set(a.train_set.dataset.indices) & set(a.val_set.dataset.indices)
    x, y = a.val_set[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and 0 <= y < 10
    assert torch.equal(a.val_set[0][0], a.val_set[0][0])  # validation images are not augmented


def test_lenet5_is_the_books(example: ModuleType) -> None:
    model = example.LeNet5()
    assert sum(p.numel() for p in model.parameters()) == 62_006
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    assert [type(m).__name__ for m in model.net] == [
        "Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d", "Flatten",
        "Linear", "ReLU", "Linear", "ReLU", "Linear",
    ]  # fmt: skip
    opt = model.configure_optimizers()
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["lr"] == 1e-3 and opt.defaults["momentum"] == 0.9
    args = example.parse_args([])
    assert (args.max_epochs, args.batch_size, args.val_size) == (10, 16, 10_000)


def test_smoke_end_to_end(
    example: ModuleType, tiny_cifar10: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("tensorboard")
    accuracy = example.main(["--data-dir", str(tiny_cifar10), *SMALL])
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert lines[-1] == f"test accuracy: {accuracy:.4f}"
    epoch_lines = [line for line in lines if line.startswith("Epoch: ")]
    assert len(epoch_lines) == 1 and epoch_lines[0].startswith("Epoch: 0 Train Loss: ")
    assert " Val Loss: " in epoch_lines[0]
    assert "trained 1 epochs (3 steps)" in out  # 48 training images, batch 16

    runs = sorted((tmp_path / "fitkit_logs").glob("version_*"))
    assert len(runs) == 1, runs
    run = runs[0]
    assert list(run.glob("events.out.tfevents.*")), "no TensorBoard event file"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run))
    events.Reload()
    # (train_loss_step: every 50 steps, log_every_n_steps; this run has 3.)
    assert {"train_loss_epoch", "val_loss", "val_acc", "test_acc"} <= set(events.Tags()["scalars"])
    checkpoints = sorted(p.name for p in (run / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in checkpoints and any(name.startswith("epoch=0-val_loss=") for name in checkpoints)
    assert (run / "lenet5.ckpt").is_file()

    # The book's state_dict loads into the bare network; its accuracy is correct / images,
    # counted here by hand over the 20 test images (a batch of 16 and one of 4).
    net = example.LeNet5().net
    net.load_state_dict(torch.load(run / "lenet5_model.pt", weights_only=True))
    net.eval()
    dm = example.CIFAR10DataModule(tiny_cifar10)
    dm.setup("test")
    x = torch.stack([dm.test_set[i][0] for i in range(TEST_IMAGES)])
    y = torch.tensor([dm.test_set[i][1] for i in range(TEST_IMAGES)])
    with torch.no_grad():
        correct = int((net(x).argmax(dim=1) == y).sum())
    assert accuracy == pytest.approx(correct / TEST_IMAGES, abs=1e-6)
    # The fitkit checkpoint rebuilds the module with its hyperparameters.
    reloaded = example.LeNet5.load_from_checkpoint(run / "lenet5.ckpt")
    assert reloaded.hparams["lr"] == 1e-3 and reloaded.hparams["momentum"] == 0.9


def test_options_reach_the_model(example: ModuleType, tiny_cifar10: Path, tmp_path: Path) -> None:
    example.main(["--data-dir", str(tiny_cifar10), "--fast-dev-run", "2", "--lr", "0.01", "--momentum", "0.5"])
    reloaded = example.LeNet5.load_from_checkpoint(tmp_path / "lenet5.ckpt")  # no logger: default_root_dir
    assert (reloaded.hparams["lr"], reloaded.hparams["momentum"]) == (0.01, 0.5)


def test_missing_data_stops_clearly(example: ModuleType, tmp_path: Path) -> None:
    nowhere = tmp_path / "nowhere"
    with pytest.raises(SystemExit) as exc:
        example.main(["--data-dir", str(nowhere)])
    message = str(exc.value.code)
    assert message.startswith(f"error: CIFAR-10 (python version: cifar-10-batches-py/) not found in {nowhere}.")
    assert "--download" in message and "cifar-10-python.tar.gz" in message
    assert not (tmp_path / "fitkit_logs").exists()  # stopped before the Trainer was built


def test_partly_missing_data_names_the_files(example: ModuleType, tiny_cifar10: Path) -> None:
    (tiny_cifar10 / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(SystemExit, match=r"cifar-10-batches-py/ lacks data_batch_3\) not found"):
        example.main(["--data-dir", str(tiny_cifar10), *SMALL])


def test_missing_data_exits_non_zero(tmp_path: Path) -> None:
    # As a user runs it: a separate process, which must exit with status 1 and no traceback.
    proc = subprocess.run(
        [sys.executable, str(EXAMPLE), "--data-dir", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert "error: CIFAR-10" in proc.stderr and "--download" in proc.stderr and "Traceback" not in proc.stderr


def test_corrupted_data_stops_clearly(example: ModuleType, tiny_cifar10: Path) -> None:
    with open(tiny_cifar10 / "cifar-10-batches-py" / "test_batch", "ab") as f:
        f.write(b"\0")  # the file no longer matches its md5
    with pytest.raises(SystemExit, match="could not load CIFAR-10") as exc:
        example.main(["--data-dir", str(tiny_cifar10), *SMALL])
    assert "--download" in str(exc.value)
