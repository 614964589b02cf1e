"""Quickstart: a small CNN on scikit-learn's 8x8 handwritten digits, trained with fitkit.

What it shows, in one screen:

* a :class:`fitkit.DataModule` that loads the digits bundled with scikit-learn (no
  download), scales them to [0, 1] and splits them 70/15/15 into train, validation and
  test sets with a seeded generator, so every run sees the same split;
* a :class:`fitkit.Module` with ``training_step``, ``validation_step``, ``test_step``
  and ``configure_optimizers``, logging ``train_loss``, ``val_loss``, ``val_acc`` and
  ``test_acc`` with ``self.log``;
* :func:`fitkit.seed_everything`, ``trainer.fit(model, datamodule=dm)`` and
  ``trainer.test(model, datamodule=dm)``.

Run it from the repository root (``make demo`` does the same after setting up
``.venv``)::

    python examples/quickstart.py                 # 15 epochs, a few seconds on 2 CPU cores
    python examples/quickstart.py --max-epochs 3 --lr 0.003 --seed 1
    python examples/quickstart.py --accelerator cpu --devices 2 --strategy ddp   # two processes
    python examples/quickstart.py --fast-dev-run true                             # one batch of each stage

It prints the test metrics table and, last, a line such as ``test accuracy: 0.9777``.
The default settings reach about 98% test accuracy on CPU.

Needs ``scikit-learn`` (``pip install -e ".[examples]"``).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import _cli  # the gallery's common options (examples/_cli.py)
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, random_split

import fitkit


class DigitsDataModule(fitkit.DataModule):
    """The 1,797 8x8 digits of ``sklearn.datasets.load_digits``, split train/val/test.

    Example::

        >>> dm = DigitsDataModule(batch_size=32)
        >>> dm.setup("fit")
        >>> x, y = next(iter(dm.train_dataloader()))
        >>> tuple(x.shape), tuple(y.shape)
        ((32, 1, 8, 8), (32,))
    """

    def __init__(
        self,
        batch_size: int = 64,
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.train_set: TensorDataset | None = None
        self.val_set: TensorDataset | None = None
        self.test_set: TensorDataset | None = None

    def setup(self, stage: str) -> None:
        if self.train_set is not None:  # fit and test share one split
            return
        from sklearn.datasets import load_digits  # imported here: only the example needs scikit-learn

        digits = load_digits()
        # Pixel values are 0..16; scale to [0, 1] and add the channel dimension conv layers expect.
        x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        y = torch.tensor(digits.target, dtype=torch.long)
        full = TensorDataset(x, y)
        n_val = int(len(full) * self.hparams.val_fraction)
        n_test = int(len(full) * self.hparams.test_fraction)
        n_train = len(full) - n_val - n_test
        # Its own generator, so the split does not depend on what else drew random numbers.
        generator = torch.Generator().manual_seed(self.hparams.seed)
        self.train_set, self.val_set, self.test_set = random_split(full, [n_train, n_val, n_test], generator=generator)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set, batch_size=self.hparams.batch_size, shuffle=True, num_workers=self.hparams.num_workers
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=256, num_workers=self.hparams.num_workers)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=256, num_workers=self.hparams.num_workers)


class DigitsCNN(fitkit.Module):
    """Two 3x3 convolutions with batch norm, one pooling, two linear layers: about 38,000 parameters.

    Example::

        >>> DigitsCNN()(torch.zeros(4, 1, 8, 8)).shape
        torch.Size([4, 10])
    """

    def __init__(self, lr: float = 3e-3, weight_decay: float = 1e-4, dropout: float = 0.25) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            # 1 x 8 x 8 -> 16 x 8 x 8
            nn.Conv2d(1, 16, kernel_size=3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            # -> 32 x 8 x 8 -> 32 x 4 x 4
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(32 * 4 * 4, 64),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(64, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        # In a training step this logs per step; on_epoch=True also keeps the epoch mean.
        self.log("train_loss", loss, prog_bar=True, on_epoch=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        # Evaluation logs default to one epoch value, a mean weighted by batch size.
        # sync_dist: with several processes (--devices 2 --strategy ddp) each sees part of
        # the set; the logged value is then the mean over all of them, the same on every rank.
        self.log("val_loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log("val_acc", (logits.argmax(dim=1) == y).float().mean(), prog_bar=True, sync_dist=True)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("test_loss", F.cross_entropy(logits, y), sync_dist=True)
        self.log("test_acc", (logits.argmax(dim=1) == y).float().mean(), sync_dist=True)

    def configure_optimizers(self) -> dict:
        opt = torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)
        # Cosine decay over the run, stepped once per epoch (the default interval).
        max_epochs = max(1, self.trainer.max_epochs)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max_epochs)}


def _quiet(*args: object) -> None:
    pass


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    # The gallery's common options (--max-epochs, --accelerator, --devices, --precision,
    # --fast-dev-run, ...; see _cli.py). --data-dir and --download are accepted but not
    # needed: the digits ship with scikit-learn.
    parser = _cli.parser(__doc__, max_epochs=15, batch_size=64)
    parser.set_defaults(seed=42, num_threads=1)
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> float:
    """Train, test, print ``test accuracy: ...`` and return the test accuracy.

    Example::

        >>> acc = main(["--max-epochs", "1"])  # doctest: +SKIP
    """
    args = parse_args(argv)
    # One thread by default (--num-threads 1): layers this small gain nothing from several,
    # and on a busy machine the threads wait on each other (4 ms a step on one, 65 ms on two).
    trainer_kwargs = _cli.trainer_kwargs(args)
    fitkit.seed_everything(args.seed)
    start = time.perf_counter()

    datamodule = DigitsDataModule(batch_size=args.batch_size, seed=args.seed, num_workers=args.num_workers)
    model = DigitsCNN(lr=args.lr, weight_decay=args.weight_decay)
    trainer = fitkit.Trainer(**trainer_kwargs)
    trainer.fit(model, datamodule=datamodule)
    val_acc = float(trainer.callback_metrics["val_acc"])
    say = print if trainer.is_global_zero else _quiet  # with several processes, rank 0 reports
    say(f"after {trainer.current_epoch} epochs ({trainer.global_step} steps): val_acc {val_acc:.4f}")

    results = trainer.test(model, datamodule=datamodule)
    accuracy = results[0]["test_acc"]
    say(f"finished in {time.perf_counter() - start:.1f} s")
    say(f"test accuracy: {accuracy:.4f}")
    return accuracy


if __name__ == "__main__":
    main()
