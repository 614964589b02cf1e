"""LeNet-5 on MNIST (or Fashion-MNIST) read from the raw IDX files, trained with fitkit.

A companion of ``dcgan_fashion_mnist.py``: the same IDX reader (``examples/_idx.py``),
this time with the labels, feeding a classifier whose accuracy says whether images and
labels were read right (a GAN learns from images alone and cannot tell). The network is
the book's LeNet5 (chapter 3, pp. 55-98) for one grey channel:

* :class:`IDXClassificationDataModule`: ``<prefix>-images-idx3-ubyte[.gz]`` and
  ``<prefix>-labels-idx1-ubyte[.gz]`` from ``<data-dir>/MNIST/raw`` (or
  ``FashionMNIST/raw`` with ``--dataset fashion-mnist``; the layout torchvision downloads
  into) or from ``--data-dir`` itself, scaled to [0, 1] and normalised with MNIST's mean
  and std, split by ``--val-size`` into training and validation sets with a seeded
  generator;
* :class:`LeNet5`: Conv2d(1, 6, 5, padding=2) -> ReLU -> MaxPool(2) -> Conv2d(6, 16, 5)
  -> ReLU -> MaxPool(2) -> 400 -> 120 -> 84 -> 10 (the book's layers; the padding makes
  a 28 x 28 digit the 32 x 32 LeNet expects), cross-entropy, Adam (lr 1e-3), batch 64;
* it logs ``train_loss``, ``val_loss`` and ``val_acc`` and prints the validation accuracy.

Run it from the repository root::

    python examples/mnist_lenet_idx.py --data-dir ../shared/data/mnist-t10k --idx-prefix t10k   # 8,000 / 2,000
    python examples/mnist_lenet_idx.py --data-dir data --download                 # MNIST's 60,000 training digits
    python examples/mnist_lenet_idx.py --data-dir data --download --dataset fashion-mnist

The last line reads ``validation accuracy: 0.9745``.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import _cli  # the gallery's common options (examples/_cli.py)
import _idx  # the gallery's IDX reader (examples/_idx.py)
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.data import DataLoader, random_split

import fitkit

# torchvision's class (its folder under --data-dir is the class name) and the mean and std
# of its training images' pixels.
DATASETS = {
    "mnist": ("MNIST", (0.1307,), (0.3081,)),
    "fashion-mnist": ("FashionMNIST", (0.2860,), (0.3530,)),
}


def find_data(data_dir: Path, dataset: str = "mnist", prefix: str = "train", download: bool = False) -> Path:
    """The folder with ``<prefix>``'s images and labels: ``<data_dir>/<Class>/raw`` or ``data_dir``."""
    name = DATASETS[dataset][0]
    raw = data_dir / name / "raw"
    for folder in (raw, data_dir):
        if all(p is not None for p in _idx.find_idx_files(folder, prefix)):
            return folder
    if download:
        getattr(torchvision.datasets, name)(str(data_dir), train=True, download=True)  # only fetches the files
        if all(p is not None for p in _idx.find_idx_files(raw, prefix)):
            return raw
    _cli.missing_data(
        f"{name}'s raw IDX files ({prefix}-images-idx3-ubyte[.gz] and {prefix}-labels-idx1-ubyte[.gz])",
        raw,
        f"Pass --download to fetch them (with torchvision.datasets.{name}) into --data-dir/{name}/raw, or point "
        "--data-dir at a folder that holds the IDX files and pass --idx-prefix for their names (for example "
        "--data-dir ../shared/data/mnist-t10k --idx-prefix t10k).",
    )


class IDXClassificationDataModule(fitkit.DataModule):
    """One labelled IDX set, split into training and validation sets (``val_size`` images).

    Example::

        >>> dm = IDXClassificationDataModule("../shared/data/mnist-t10k", "t10k", val_size=2000)  # doctest: +SKIP
        >>> dm.setup("fit"); len(dm.train_set), len(dm.val_set)  # doctest: +SKIP
        (8000, 2000)
    """

    def __init__(
        self,
        folder: str | Path,
        prefix: str = "train",
        dataset: str = "mnist",
        val_size: int = 2000,
        batch_size: int = 64,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.folder = Path(folder)
        self.prefix = prefix
        self.dataset = dataset
        self.val_size = val_size
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        self.train_set: torch.utils.data.Subset | None = None
        self.val_set: torch.utils.data.Subset | None = None

    def setup(self, stage: str) -> None:
        if self.train_set is not None:
            return
        _, mean, std = DATASETS[self.dataset]
        full = _idx.IDXDataset.from_folder(
            self.folder, self.prefix, transform=torchvision.transforms.Normalize(mean, std)
        )
        if not 0 < self.val_size < len(full):
            raise ValueError(f"--val-size must be between 1 and {len(full) - 1} for {len(full)} images")
        generator = torch.Generator().manual_seed(self.seed)
        sizes = [len(full) - self.val_size, self.val_size]
        self.train_set, self.val_set = random_split(full, sizes, generator=generator)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=500, num_workers=self.num_workers)


class LeNet5(fitkit.Module):
    """The book's LeNet5 for one 28 x 28 grey channel (61,706 parameters).

    Example::

        >>> LeNet5()(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, num_classes: int = 10, lr: float = 1e-3) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2),  # 28 x 28 -> 28 x 28
            nn.ReLU(),
            nn.MaxPool2d(2),  # -> 14 x 14
            nn.Conv2d(6, 16, 5),  # -> 10 x 10
            nn.ReLU(),
            nn.MaxPool2d(2),  # -> 5 x 5
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, prog_bar=True, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val_loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log("val_acc", (logits.argmax(dim=1) == y).float().mean(), prog_bar=True, sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def _quiet(*args: object) -> None:
    pass


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = _cli.parser(__doc__, max_epochs=5, batch_size=64)
    parser.set_defaults(num_threads=1)  # a network this small is fastest on one thread
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="mnist", help="which torchvision layout")
    parser.add_argument("--idx-prefix", default="train", help="IDX file names: <prefix>-images-idx3-ubyte[.gz]")
    parser.add_argument("--val-size", type=int, default=2000, help="images held out for validation")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> float:
    """Train, print and return the validation accuracy after the last epoch."""
    args = parse_args(argv)
    folder = find_data(args.data_dir, args.dataset, args.idx_prefix, args.download)
    trainer_kwargs = _cli.trainer_kwargs(args)
    fitkit.seed_everything(args.seed)
    start = time.perf_counter()

    datamodule = IDXClassificationDataModule(
        folder, args.idx_prefix, args.dataset, args.val_size, args.batch_size, args.seed, args.num_workers
    )
    model = LeNet5(lr=args.lr)
    trainer = fitkit.Trainer(**trainer_kwargs)
    trainer.fit(model, datamodule=datamodule)
    accuracy = float(trainer.callback_metrics["val_acc"])
    say = print if trainer.is_global_zero else _quiet  # with several processes, rank 0 reports
    say(f"after {trainer.current_epoch} epochs ({trainer.global_step} steps) in {time.perf_counter() - start:.1f} s")
    say(f"validation accuracy: {accuracy:.4f}")
    return accuracy


if __name__ == "__main__":
    main()
