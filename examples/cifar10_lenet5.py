"""CIFAR-10 with LeNet5: the book's chapter 3 development process, trained with fitkit.

The book's chapter 3 (*PyTorch Pocket Reference*, pp. 55-98) walks through a whole
development cycle on CIFAR-10 (50,000 training and 10,000 test colour images, 32x32,
ten classes) with the classic LeNet5. This example follows it:

* :class:`CIFAR10DataModule`: ``torchvision.datasets.CIFAR10`` read from
  ``<data-dir>/cifar-10-batches-py``; the 50,000 training images split 40,000/10,000
  into training and validation sets by ``random_split`` with a seeded generator (the
  split is scaled in proportion when the set is smaller); training images go through
  ``RandomCrop(32, padding=4)`` and ``RandomHorizontalFlip()``, all images through
  ``ToTensor()`` and ``Normalize((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))``;
  batch 16 for every loader, shuffled for training;
* :class:`LeNet5`: Conv(3, 6, 5) - ReLU - MaxPool(2) - Conv(6, 16, 5) - ReLU - MaxPool(2)
  - Linear(400, 120) - ReLU - Linear(120, 84) - ReLU - Linear(84, 10);
  ``CrossEntropyLoss`` and ``SGD(lr=0.001, momentum=0.9)`` for 10 epochs. It logs
  ``train_loss`` (per step and its epoch mean), ``val_loss``, ``val_acc``, ``test_loss``
  and ``test_acc``; after each epoch a line like the book's is printed:
  ``Epoch: 0 Train Loss: 1.988 Val Loss: 1.741``;
* TensorBoard logs (fitkit's default logger), a :class:`fitkit.callbacks.ModelCheckpoint`
  that keeps the best checkpoint by ``val_loss`` and ``last.ckpt``; after training,
  ``trainer.save_checkpoint`` writes ``lenet5.ckpt``, ``LeNet5.load_from_checkpoint``
  reads it back (the fitkit way to save and reload), and ``trainer.test`` measures the
  reloaded model on the 10,000 test images. The network's plain ``state_dict`` is also
  saved as ``lenet5_model.pt``, as in the book (load it into ``LeNet5().net``).

Two differences from the book's code, both fixes:

* the book computes test accuracy as ``correct / (len(testloader) * batch_size)``, which
  is only right when every batch is full; here ``test_acc`` is the mean over batches
  weighted by batch size, i.e. exactly ``correct / number of test images``;
* the book splits the *augmented* training set, so its validation images are randomly
  cropped and flipped too; here the validation images get the test transforms.

The data: ``--data-dir`` must hold ``cifar-10-batches-py/`` (the python version of
CIFAR-10); ``--download`` fetches it, a 163 MB archive, from www.cs.toronto.edu.

Run it from the repository root::

    python examples/cifar10_lenet5.py --data-dir data --download     # the book's run: 10 epochs
    python examples/cifar10_lenet5.py --data-dir data --max-epochs 2 --lr 0.002
    python examples/cifar10_lenet5.py --data-dir data --fast-dev-run true

The last line reads ``test accuracy: 0.6322`` (the book reports 63.2% after 10 epochs).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import _cli  # the gallery's common options (examples/_cli.py)
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, random_split
from torchvision import datasets, transforms

import fitkit
from fitkit.callbacks import ModelCheckpoint, TQDMProgressBar

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_TRAIN_SIZE = 50_000  # --val-size is a share of this many images
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)


# -- data ---------------------------------------------------------------------------------------
def build_transforms() -> tuple[transforms.Compose, transforms.Compose]:
    """The book's training transforms (with augmentation) and test transforms."""
    normalize = transforms.Normalize(MEAN, STD)
    train = transforms.Compose(
        [transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(), transforms.ToTensor(), normalize]
    )
    test = transforms.Compose([transforms.ToTensor(), normalize])
    return train, test


def check_data(data_dir: Path, download: bool = False) -> None:
    """Stop with a clear message when CIFAR-10 is not in ``data_dir`` and ``download`` is off."""
    folder = data_dir / CIFAR10_FOLDER
    missing = [name for name in (*CIFAR10_FILES, "batches.meta") if not (folder / name).is_file()]
    if missing and not download:
        what = "" if len(missing) == len(CIFAR10_FILES) + 1 else f" lacks {', '.join(missing)}"
        _cli.missing_data(
            f"CIFAR-10 (python version: {CIFAR10_FOLDER}/{what})",
            data_dir,
            f"Pass --download to fetch it ({CIFAR10_URL}, 163 MB) into --data-dir, or point --data-dir at the "
            f"folder that holds {CIFAR10_FOLDER}/, e.g.: python examples/cifar10_lenet5.py --data-dir data --download",
        )


def load_cifar10(data_dir: Path, train: bool, download: bool = False) -> datasets.CIFAR10:
    """torchvision's ``CIFAR10`` (PIL images, no transform); a clear stop when it cannot be read."""
    try:
        return datasets.CIFAR10(root=str(data_dir), train=train, download=download)
    except (RuntimeError, OSError) as exc:  # corrupted files (md5 mismatch), no network for --download
        raise SystemExit(
            f"error: could not load CIFAR-10 from {data_dir / CIFAR10_FOLDER} ({exc}).\n"
            f"Delete the folder and pass --download to fetch it again ({CIFAR10_URL})."
        ) from exc


class Transformed(Dataset):
    """``dataset`` with ``transform`` applied to each image: one split, two sets of transforms."""

    def __init__(self, dataset: Dataset, transform: Callable[[Any], torch.Tensor]) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.dataset[index]
        return self.transform(image), label


class CIFAR10DataModule(fitkit.DataModule):
    """CIFAR-10: 40,000 training, 10,000 validation (from the training files) and 10,000 test images.

    ``val_size`` counts images out of the full 50,000; a smaller training set (a test's
    tiny copy) is split in the same proportion.

    Example::

        >>> dm = CIFAR10DataModule("data", batch_size=16)  # doctest: +SKIP
        >>> dm.setup("fit"); len(dm.train_set), len(dm.val_set)  # doctest: +SKIP
        (40000, 10000)
    """

    def __init__(
        self,
        data_dir: str | Path = "data",
        batch_size: int = 16,
        val_size: int = 10_000,
        seed: int = 0,
        num_workers: int = 0,
        download: bool = False,
    ) -> None:
        super().__init__()
        self.data_dir = Path(data_dir)
        self.batch_size = batch_size
        self.val_size = val_size
        self.seed = seed
        self.num_workers = num_workers
        self.download = download
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self.classes: list[str] = []

    def prepare_data(self) -> None:
        # Called once (on one process) before setup: the place to download.
        check_data(self.data_dir, self.download)
        if self.download:
            load_cifar10(self.data_dir, train=True, download=True)

    def setup(self, stage: str) -> None:
        train_tf, test_tf = build_transforms()
        if stage in ("fit", "validate") and self.train_set is None:
            full = load_cifar10(self.data_dir, train=True)
            self.classes = list(full.classes)
            n_val = round(len(full) * self.val_size / CIFAR10_TRAIN_SIZE)
            # Its own generator, so the split does not depend on what else drew random numbers.
            generator = torch.Generator().manual_seed(self.seed)
            train_part, val_part = random_split(full, [len(full) - n_val, n_val], generator=generator)
            self.train_set = Transformed(train_part, train_tf)
            self.val_set = Transformed(val_part, test_tf)  # no augmentation when measuring
        if stage in ("test", "predict") and self.test_set is None:
            test = load_cifar10(self.data_dir, train=False)
            self.classes = list(test.classes)
            self.test_set = Transformed(test, test_tf)

    def _loader(self, dataset: Dataset | None, shuffle: bool = False) -> DataLoader:
        assert dataset is not None, "call setup() first"
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set)


# -- model --------------------------------------------------------------------------------------
class LeNet5(fitkit.Module):
    """The book's LeNet5 for 3x32x32 images: two convolutions, three linear layers, 62,006 parameters.

    Example::

        >>> LeNet5()(torch.zeros(4, 3, 32, 32)).shape
        torch.Size([4, 10])
        >>> sum(p.numel() for p in LeNet5().parameters())
        62006
    """

    def __init__(self, lr: float = 1e-3, momentum: float = 0.9, num_classes: int = 10) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Conv2d(3, 6, 5),  # 3 x 32 x 32 -> 6 x 28 x 28
            nn.ReLU(),
            nn.MaxPool2d(2),  # -> 6 x 14 x 14
            nn.Conv2d(6, 16, 5),  # -> 16 x 10 x 10
            nn.ReLU(),
            nn.MaxPool2d(2),  # -> 16 x 5 x 5
            nn.Flatten(),  # -> 400
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        # Per step, and (on_epoch=True) the epoch mean as train_loss_epoch: the book's train loss.
        self.log("train_loss", loss, prog_bar=True, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y), prog_bar=True, sync_dist=True)
        self.log("val_acc", (logits.argmax(dim=1) == y).float().mean(), sync_dist=True)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("test_loss", F.cross_entropy(logits, y), sync_dist=True)
        # The book divides the correct count by len(testloader) * batch_size, which is wrong
        # whenever the last batch is not full. fitkit's epoch value is the mean of the batch
        # accuracies weighted by batch size (here len(y)), i.e. correct / images: exact.
        self.log("test_acc", (logits.argmax(dim=1) == y).float().mean(), batch_size=len(y), sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=self.hparams.momentum)


class EpochSummary(fitkit.Callback):
    """Prints the book's line after each epoch: ``Epoch: 0 Train Loss: 1.988 Val Loss: 1.741``."""

    def on_train_epoch_end(self, trainer: fitkit.Trainer, module: fitkit.Module) -> None:
        if not trainer.is_global_zero:
            return
        # Validation has run by now, so both epoch means are in callback_metrics.
        metrics = trainer.callback_metrics
        parts = [f"Epoch: {trainer.current_epoch}"]
        if "train_loss_epoch" in metrics:
            parts.append(f"Train Loss: {float(metrics['train_loss_epoch']):.3f}")
        if "val_loss" in metrics:
            parts.append(f"Val Loss: {float(metrics['val_loss']):.3f}")
        # Through the progress bar when there is one, so the line does not break it.
        bar = next((c for c in trainer.callbacks if isinstance(c, TQDMProgressBar)), None)
        (bar.print if bar is not None else print)(" ".join(parts))


# -- the script ---------------------------------------------------------------------------------
def _quiet(*args: object) -> None:
    pass


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = _cli.parser(__doc__, max_epochs=10, batch_size=16)
    # One thread by default: LeNet5's layers are too small for several to help, and on a busy
    # machine the threads wait on each other (one epoch measured on 2 shared cores: 9-20 ms a
    # step with one thread, 466 ms with two).
    parser.set_defaults(num_threads=1)
    parser.add_argument("--lr", type=float, default=1e-3, help="SGD learning rate")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    parser.add_argument(
        "--val-size", type=int, default=10_000, help="validation images out of the 50,000 training images"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, callbacks: Sequence[fitkit.Callback] = ()) -> float:
    """Train, save, reload, test; print ``test accuracy: ...`` and return it.

    ``callbacks`` are added to the Trainer's (a seam for tests).

    Example::

        >>> acc = main(["--data-dir", "data", "--max-epochs", "1"])  # doctest: +SKIP
    """
    args = parse_args(argv)
    check_data(args.data_dir, args.download)  # before anything slow: a clear stop if it is missing
    trainer_kwargs = _cli.trainer_kwargs(args)
    fitkit.seed_everything(args.seed)
    start = time.perf_counter()

    datamodule = CIFAR10DataModule(
        args.data_dir, args.batch_size, args.val_size, args.seed, args.num_workers, args.download
    )
    model = LeNet5(lr=args.lr, momentum=args.momentum)
    checkpoint = ModelCheckpoint(monitor="val_loss", filename="{epoch}-{val_loss:.4f}", save_last=True)
    trainer = fitkit.Trainer(callbacks=[checkpoint, EpochSummary(), *callbacks], **trainer_kwargs)
    say = print if trainer.is_global_zero else _quiet  # with several processes, rank 0 reports
    trainer.fit(model, datamodule=datamodule)
    say(f"trained {trainer.current_epoch} epochs ({trainer.global_step} steps) in {time.perf_counter() - start:.1f} s")

    # The fitkit way to save and reload: a checkpoint holds the weights, the hyperparameters
    # (so load_from_checkpoint can rebuild LeNet5(lr=..., momentum=...)) and the training state.
    out_dir = Path(trainer.log_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / "lenet5.ckpt"
    trainer.save_checkpoint(final)
    reloaded = LeNet5.load_from_checkpoint(final, map_location="cpu")
    if trainer.is_global_zero:
        # And the book's way: the network's bare state_dict (load it into LeNet5().net).
        torch.save(reloaded.net.state_dict(), out_dir / "lenet5_model.pt")
    if checkpoint.best_model_path:
        say(f"best checkpoint (val_loss {float(checkpoint.best_model_score or 0):.4f}): {checkpoint.best_model_path}")
    say(f"saved: {final} and {out_dir / 'lenet5_model.pt'}")

    results = trainer.test(reloaded, datamodule=datamodule)
    accuracy = float(results[0]["test_acc"])
    say(f"finished in {time.perf_counter() - start:.1f} s")
    say(f"test accuracy: {accuracy:.4f}")
    return accuracy


if __name__ == "__main__":
    main()
