"""Checks for ``examples/dcgan_fashion_mnist.py``, its IDX reader ``examples/_idx.py``, and
``examples/mnist_lenet_idx.py`` (the classifier that checks the reader on real labels)."""

from __future__ import annotations

import gzip
import math
import struct
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import _examples
import pytest
import torch

import fitkit

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load(name: str) -> Iterator[ModuleType]:
    with _examples.loaded(EXAMPLES / f"{name}.py", f"fitkit_example_{name}") as module:
        yield module


@pytest.fixture(scope="module")
def idx() -> Iterator[ModuleType]:
    yield from _load("_idx")


@pytest.fixture(scope="module")
def dcgan() -> Iterator[ModuleType]:
    yield from _load("dcgan_fashion_mnist")


@pytest.fixture(scope="module")
def lenet() -> Iterator[ModuleType]:
    yield from _load("mnist_lenet_idx")


# -- IDX files written here, byte by byte, independently of the reader ---------------------------
_CODES = {torch.uint8: (0x08, "B"), torch.int8: (0x09, "b"), torch.int16: (0x0B, "h"), torch.int32: (0x0C, "i")}
_CODES.update({torch.float32: (0x0D, "f"), torch.float64: (0x0E, "d")})


def write_idx(path: Path, values: torch.Tensor, compress: bool = False, magic: bytes | None = None) -> Path:
    code, fmt = _CODES[values.dtype]
    header = magic if magic is not None else bytes([0, 0, code, values.dim()])
    header += struct.pack(f">{values.dim()}I", *values.shape)
    flat = values.reshape(-1).tolist()
    data = header + struct.pack(f">{len(flat)}{fmt}", *flat)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def write_mnist_like(folder: Path, prefix: str = "train", n: int = 64, compress: bool = True) -> torch.Tensor:
    """``n`` 28 x 28 images (a bright bar at a random place on a dark ground) and labels, in the real format."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 40, (n, 28, 28), generator=g, dtype=torch.uint8)
    for i in range(n):
        r = int(torch.randint(2, 20, (), generator=g))
        images[i, r : r + 6, 6:22] = 230
    labels = torch.randint(0, 10, (n,), generator=g, dtype=torch.uint8)
    gz = ".gz" if compress else ""
    write_idx(folder / f"{prefix}-images-idx3-ubyte{gz}", images, compress)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{gz}", labels, compress)
    return images


# -- the IDX reader ----------------------------------------------------------------------------
@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_read_idx3_and_idx1(idx: ModuleType, tmp_path: Path, compress: bool) -> None:
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    labels = torch.tensor([7, 2, 1, 0, 4], dtype=torch.uint8)
    read_images = idx.read_idx(write_idx(tmp_path / "images", images, compress))
    read_labels = idx.read_idx(write_idx(tmp_path / "labels", labels, compress))
    assert read_images.dtype == torch.uint8 and read_images.shape == (5, 28, 28)
    assert torch.equal(read_images, images)
    assert torch.equal(read_labels, labels)


@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int32, torch.float32, torch.float64])
def test_read_idx_big_endian_types(idx: ModuleType, tmp_path: Path, dtype: torch.dtype) -> None:
    values = torch.tensor([[-3, 1, 100], [127, -128, 0]], dtype=dtype)
    if dtype in (torch.int16, torch.int32):
        values[0, 2] = 30000  # more than one byte: the byte order matters
    if dtype.is_floating_point:
        values[1, 2] = 0.1
    read = idx.read_idx(write_idx(tmp_path / "v.idx", values))
    assert read.dtype == dtype and torch.equal(read, values)


def test_bad_magic_is_a_clear_error(idx: ModuleType, tmp_path: Path) -> None:
    images = torch.zeros(2, 4, 4, dtype=torch.uint8)
    bad = write_idx(tmp_path / "bad-images-idx3-ubyte", images, magic=b"\x08\x03\x00\x00")
    expected = r"bad-images-idx3-ubyte: not an IDX file: bad magic number 0x08030000"
    with pytest.raises(idx.IDXFormatError, match=expected):
        idx.read_idx(bad)
    bad_gz = write_idx(tmp_path / "bad.gz", images, compress=True, magic=b"\x00\x00\x42\x03")  # unknown type
    with pytest.raises(idx.IDXFormatError, match="bad magic number 0x00004203"):
        idx.read_idx(bad_gz)
    (tmp_path / "text").write_text("not an idx file\n")
    with pytest.raises(ValueError, match="not an IDX file"):  # IDXFormatError is a ValueError
        idx.read_idx(tmp_path / "text")


def test_wrong_length_and_truncated_gzip(idx: ModuleType, tmp_path: Path) -> None:
    path = write_idx(tmp_path / "short", torch.zeros(3, 4, 4, dtype=torch.uint8))
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(idx.IDXFormatError, match=r"shape \(3, 4, 4\) \(48 bytes of data\), but the file has 43"):
        idx.read_idx(path)
    gz = write_idx(tmp_path / "cut.gz", torch.zeros(3, 4, 4, dtype=torch.uint8), compress=True)
    gz.write_bytes(gz.read_bytes()[:-10])
    with pytest.raises(idx.IDXFormatError, match="could not decompress"):
        idx.read_idx(gz)


def test_find_files_and_dataset(idx: ModuleType, tmp_path: Path) -> None:
    images = write_mnist_like(tmp_path, "t10k", n=6, compress=True)
    assert idx.find_idx_files(tmp_path, "train") == (None, None)
    found = idx.find_idx_files(tmp_path, "t10k")
    assert [p.name for p in found] == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    write_mnist_like(tmp_path, "t10k", n=6, compress=False)  # as torchvision leaves them: both
    assert idx.find_idx_files(tmp_path, "t10k")[0].name == "t10k-images-idx3-ubyte"  # the plain one first

    ds = idx.IDXDataset.from_folder(tmp_path, "t10k")
    image, label = ds[3]
    assert len(ds) == 6 and image.shape == (1, 28, 28) and image.dtype == torch.float32
    assert torch.allclose(image[0], images[3].float() / 255)
    assert label == int(idx.read_idx(found[1])[3])
    unlabelled = idx.IDXDataset.from_folder(tmp_path, "t10k", transform=lambda x: x * 2 - 1, labels=False)
    image, label = unlabelled[0]
    assert label == -1 and image.min() >= -1 and image.max() <= 1

    write_idx(tmp_path / "few-labels", torch.zeros(5, dtype=torch.uint8))
    with pytest.raises(idx.IDXFormatError, match=r"has 5 labels but .* has 6 images"):
        idx.IDXDataset(found[0], tmp_path / "few-labels")
    with pytest.raises(idx.IDXFormatError, match="expected images"):
        idx.IDXDataset(found[1])
    with pytest.raises(FileNotFoundError, match="no train-images-idx3-ubyte"):
        idx.IDXDataset.from_folder(tmp_path, "train")


# -- the networks ------------------------------------------------------------------------------
def test_book_architecture_at_64(dcgan: ModuleType) -> None:
    g, d = dcgan.build_generator(), dcgan.build_discriminator()
    g_convs = [(m.in_channels, m.out_channels, m.stride[0]) for m in g if isinstance(m, torch.nn.ConvTranspose2d)]
    d_convs = [(m.in_channels, m.out_channels, m.stride[0]) for m in d if isinstance(m, torch.nn.Conv2d)]
    assert g_convs == [(100, 1024, 1), (1024, 512, 2), (512, 256, 2), (256, 128, 2), (128, 1, 2)]
    assert d_convs == [(1, 128, 2), (128, 256, 2), (256, 512, 2), (512, 1024, 2), (1024, 1, 1)]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in g) == 4
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in d) == 3  # none after the first conv
    assert isinstance(g[-1], torch.nn.Tanh) and isinstance(d[-1], torch.nn.Sigmoid)


@pytest.mark.parametrize(("size", "layers"), [(16, 2), (32, 3), (128, 5)])
def test_image_size_sets_the_layers(dcgan: ModuleType, size: int, layers: int) -> None:
    g, d = dcgan.build_generator(image_size=size, width=4), dcgan.build_discriminator(image_size=size, width=4)
    images = g(torch.randn(3, 100, 1, 1))
    assert images.shape == (3, 1, size, size) and images.abs().max() <= 1
    assert d(images).shape == (3, 1, 1, 1)
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) and m.stride[0] == 2 for m in g) == layers


def test_weights_init(dcgan: ModuleType) -> None:
    torch.manual_seed(0)
    gan = dcgan.DCGAN(image_size=32, width=64)
    kinds = (torch.nn.Conv2d, torch.nn.ConvTranspose2d)
    convs = torch.cat([m.weight.detach().flatten() for m in gan.modules() if isinstance(m, kinds)])
    bns = [m for m in gan.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert abs(float(convs.mean())) < 1e-3 and float(convs.std()) == pytest.approx(0.02, rel=0.05)
    bn_weights = torch.cat([m.weight.detach() for m in bns])
    assert float(bn_weights.mean()) == pytest.approx(1.0, abs=0.01) and float(bn_weights.std()) < 0.03
    assert all(torch.count_nonzero(m.bias) == 0 for m in bns)


def test_bad_image_size_is_refused(dcgan: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("24", "8"):
        with pytest.raises(SystemExit) as exc:
            dcgan.parse_args(["--image-size", bad])
        assert exc.value.code == 2
        assert "power of two, at least 16" in capsys.readouterr().err


# -- the script --------------------------------------------------------------------------------
class _GradientCounter(fitkit.Callback):
    """Counts the gradients computed for the generator's first weight: once per batch if detached."""

    def __init__(self) -> None:
        self.generator_grads = 0
        self.batches = 0

    def on_fit_start(self, trainer: Any, module: Any) -> None:
        def count(grad: torch.Tensor) -> torch.Tensor:
            self.generator_grads += 1
            return grad

        next(module.generator.parameters()).register_hook(count)

    def on_train_batch_end(self, trainer: Any, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.batches += 1


def test_smoke_tiny_fashion_mnist(dcgan: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    write_mnist_like(tmp_path / "data" / "FashionMNIST" / "raw", "train", n=64)
    counter = _GradientCounter()
    args = ["--data-dir", str(tmp_path / "data"), "--image-size", "16", "--width", "8", "--max-epochs", "1"]
    args += ["--num-threads", "1", "--default-root-dir", str(tmp_path / "run")]
    result = dcgan.main(args, callbacks=[counter])

    assert len(result.history) == 1
    assert set(result.history[0]) == {"d_loss", "g_loss", "d_real", "d_fake"}
    assert all(math.isfinite(v) for v in result.history[0].values())
    out = capsys.readouterr().out
    assert "epoch 0: d_loss " in out and out.strip().splitlines()[-1].startswith("sample std across noise: ")
    # The D step sees detached fakes: the generator gets one gradient per batch (its own step).
    assert counter.batches == 2 and counter.generator_grads == 2

    log_dir = tmp_path / "run" / "fitkit_logs" / "version_0"
    assert [p.name for p in result.sample_paths] == ["epoch=000.png", "final.png"]
    from PIL import Image

    for path in result.sample_paths:
        assert path.parent == log_dir / "samples" and Image.open(path).size == (8 * 18 + 2, 4 * 18 + 2)
    events = EventAccumulator(str(log_dir), size_guidance={"images": 0})
    events.Reload()
    assert "samples" in events.Tags()["images"]
    assert {"d_loss_epoch", "g_loss_epoch"} <= set(events.Tags()["scalars"])

    # The checkpoint: the same generator (weights, BatchNorm statistics, fixed noise).
    assert Path(result.checkpoint).is_file() and Path(result.checkpoint).parent == log_dir / "checkpoints"
    loaded = dcgan.DCGAN.load_from_checkpoint(result.checkpoint, map_location="cpu").eval()
    assert loaded.hparams.image_size == 16 and loaded.hparams.width == 8
    with torch.no_grad():
        assert torch.allclose(loaded(loaded.fixed_noise), result.samples, atol=1e-6)
    assert result.samples.shape == (32, 1, 16, 16)


def test_images_are_resized_and_rescaled(dcgan: ModuleType, tmp_path: Path) -> None:
    write_mnist_like(tmp_path, "train", n=40, compress=False)
    dm = dcgan.IDXImagesDataModule(tmp_path, image_size=32, batch_size=16)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == 2  # 40 images, the short last batch dropped
    real, _ = batches[0]
    assert real.shape == (16, 1, 32, 32)
    assert float(real.min()) >= -1.0 and float(real.max()) <= 1.0 and float(real.min()) < -0.5


def test_download_fetches_with_torchvision_then_reads_idx(
    dcgan: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []

    def fake_fashion_mnist(root: str, train: bool = True, download: bool = False) -> None:
        calls.append((root, download))
        write_mnist_like(Path(root) / "FashionMNIST" / "raw", "train", n=4)

    monkeypatch.setattr(dcgan.torchvision.datasets, "FashionMNIST", fake_fashion_mnist)
    assert dcgan.find_data(tmp_path, "train", download=True) == tmp_path / "FashionMNIST" / "raw"
    assert calls == [(str(tmp_path), True)]
    assert dcgan.find_data(tmp_path, "train", download=True) == tmp_path / "FashionMNIST" / "raw"  # found now
    assert len(calls) == 1


def test_missing_data_is_a_clear_error(dcgan: ModuleType, lenet: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        dcgan.main(["--data-dir", str(tmp_path / "nothing")])
    message = exc.value.code
    assert isinstance(message, str)  # SystemExit with a message: printed to stderr, exit status 1
    assert "Fashion-MNIST's raw IDX files (train-images-idx3-ubyte" in message
    assert str(tmp_path / "nothing" / "FashionMNIST" / "raw") in message and "--download" in message
    with pytest.raises(SystemExit) as exc:
        lenet.main(["--data-dir", str(tmp_path), "--idx-prefix", "t10k"])
    assert "MNIST's raw IDX files (t10k-images-idx3-ubyte" in str(exc.value.code)


# -- real data (../shared/data/mnist-t10k) -------------------------------------------------------
@pytest.mark.realdata
def test_lenet_on_mnist_t10k_reaches_95_percent(lenet: ModuleType, shared_data: Path) -> None:
    folder = shared_data / "mnist-t10k"
    dm = lenet.IDXClassificationDataModule(folder, "t10k", val_size=2000)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set)) == (8000, 2000)
    accuracy = lenet.main(["--data-dir", str(folder), "--idx-prefix", "t10k", "--max-epochs", "5"])
    assert accuracy >= 0.95, accuracy


@pytest.mark.realdata
def test_dcgan_one_epoch_on_mnist_t10k(dcgan: ModuleType, shared_data: Path) -> None:
    args = ["--data-dir", str(shared_data / "mnist-t10k"), "--idx-prefix", "t10k", "--image-size", "16"]
    args += ["--width", "8", "--max-epochs", "1", "--num-threads", "1"]
    result = dcgan.main(args)
    (epoch,) = result.history
    assert all(math.isfinite(v) for v in epoch.values()), epoch
    assert 0.0 < epoch["d_fake"] < epoch["d_real"] < 1.0  # D tells real from fake, not perfectly
    # The generator has not collapsed to one image: samples differ across noise vectors.
    assert result.sample_std > 0.05, result.sample_std
