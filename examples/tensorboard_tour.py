"""A tour of TensorBoard: scalars, the graph, images, histograms, the projector and hyperparameters, from one run.

The book's chapter 8 (*PyTorch Pocket Reference*, pp. 259-269) writes each kind of
TensorBoard record with a ``SummaryWriter``. With fitkit the
:class:`fitkit.loggers.TensorBoardLogger` owns the writer: ``self.log`` values become
scalars, ``log_graph=True`` traces ``example_input_array`` into the graph, and
``self.trainer.logger.experiment`` is the ``SummaryWriter`` itself for everything else.
One training run of a small CNN on scikit-learn's 8x8 digits writes:

=============  =====================================================================
TensorBoard    what this run writes there
=============  =====================================================================
SCALARS        ``train_loss``, ``val_loss`` and ``val_acc`` per epoch (``self.log``)
GRAPHS         the CNN, traced once at fit start (``log_graph=True``)
IMAGES         per epoch: a grid of validation digits titled by prediction, and the
               first convolution's 16 filters (``add_image`` of ``make_grid``)
HISTOGRAMS,    every weight and bias per epoch (``add_histogram``)
DISTRIBUTIONS
PROJECTOR      the 64-dimensional features of the validation digits after training,
               labelled with their class and shown as thumbnails (``add_embedding``)
TEXT           a summary of the run (``add_text``)
HPARAMS        the hyperparameters (``save_hyperparameters``) with ``hp_metric``,
               the final validation accuracy, to compare runs
=============  =====================================================================

Run it from the repository root, then open TensorBoard on the folder it prints::

    python examples/tensorboard_tour.py                       # 8 epochs, ~5 s on a CPU
    python examples/tensorboard_tour.py --lr 0.01 --dropout 0.5  # a second run to compare in HPARAMS
    tensorboard --logdir runs                                 # http://localhost:6006

Runs go to ``runs/tensorboard_tour/version_N`` (``--default-root-dir`` moves ``runs``).
It prints the log folder and, last, ``val accuracy: 0.9xxx``.
Needs ``scikit-learn`` and ``tensorboard`` (``pip install -e ".[examples,tensorboard]"``).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _cli  # the gallery's common options (examples/_cli.py)
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, random_split
from torchvision.utils import make_grid

import fitkit
from fitkit.loggers import TensorBoardLogger


def digits_loaders(batch_size: int, seed: int = 0) -> tuple[DataLoader, DataLoader]:
    """Training and validation loaders of the 8x8 digits as ``1 x 8 x 8`` images in [0, 1] (80/20 split).

    Example::

        >>> train, val = digits_loaders(batch_size=16)
        >>> tuple(next(iter(train))[0].shape)
        (16, 1, 8, 8)
    """
    from sklearn.datasets import load_digits  # imported here: only the examples need scikit-learn

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    full = TensorDataset(x, torch.tensor(digits.target, dtype=torch.long))
    n_val = len(full) // 5
    train, val = random_split(full, [len(full) - n_val, n_val], generator=torch.Generator().manual_seed(seed))
    return DataLoader(train, batch_size=batch_size, shuffle=True), DataLoader(val, batch_size=256)


class DigitsCNN(fitkit.Module):
    """Convolutions to a 64-dimensional feature vector, then a linear classifier; writes a TensorBoard tour.

    Example::

        >>> model = DigitsCNN()
        >>> model(model.example_input_array).shape, model.features(model.example_input_array).shape
        (torch.Size([1, 10]), torch.Size([1, 64]))
    """

    def __init__(self, lr: float = 3e-3, channels: int = 16, dropout: float = 0.25, batch_size: int = 64) -> None:
        super().__init__()
        # Every argument lands in the HPARAMS tab (batch_size too, though the loaders use it).
        self.save_hyperparameters()
        self.conv1 = nn.Conv2d(1, channels, kernel_size=3, padding=1)
        self.body = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # -> 2c x 4 x 4
            nn.Flatten(),
            nn.Linear(2 * channels * 16, 64),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(64, 10))
        # What log_graph=True traces the graph with (any input of the right shape).
        self.example_input_array = torch.zeros(1, 1, 8, 8)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The 64-dimensional features the classifier reads: what the projector shows."""
        return self.body(self.conv1(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @property
    def tensorboard(self) -> Any:
        """The run's ``SummaryWriter`` (on ranks other than zero, a stand-in that writes nothing)."""
        return self.trainer.logger.experiment

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        logits = self(x)
        accuracy = (logits.argmax(dim=1) == y).float().mean()
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", accuracy, prog_bar=True)
        # hp_metric is the number the HPARAMS tab puts beside this run's hyperparameters.
        self.log("hp_metric", accuracy)
        if batch_idx == 0 and not self.trainer.sanity_checking:
            self._log_images(x, logits.argmax(dim=1))

    def _log_images(self, x: torch.Tensor, predictions: torch.Tensor) -> None:
        step = self.global_step
        # Upscaled 4x (nearest) so the 8x8 digits are big enough to read in the browser.
        digits = F.interpolate(x[:32], scale_factor=4, mode="nearest")
        self.tensorboard.add_image("val/digits", make_grid(digits, nrow=8, pad_value=1.0), step)
        predicted = " ".join(str(int(p)) for p in predictions[:32])
        self.tensorboard.add_text("val/predictions", f"row by row: {predicted}", step)
        filters = F.interpolate(self.conv1.weight.detach(), scale_factor=8, mode="nearest")
        grid = make_grid(filters, nrow=8, normalize=True, scale_each=True, pad_value=1.0)
        self.tensorboard.add_image("filters/conv1", grid, step)

    def on_train_epoch_end(self) -> None:
        # One histogram per tensor per epoch; DISTRIBUTIONS draws the same data over time.
        for name, parameter in self.named_parameters():
            self.tensorboard.add_histogram(f"weights/{name}", parameter.detach(), self.global_step)

    def on_fit_end(self) -> None:
        # The projector: learned features of the validation digits, each labelled with its
        # class and drawn as its own thumbnail (label_img), after the last epoch.
        was_training = self.training
        self.eval()
        xs, ys, feats = [], [], []
        with torch.no_grad():
            for x, y in self.trainer.val_dataloaders[0]:
                xs.append(x)
                ys.append(y)
                feats.append(self.features(x.to(self.device)).cpu())
        self.train(was_training)
        labels = torch.cat(ys)
        self.tensorboard.add_embedding(
            torch.cat(feats),
            metadata=[str(int(c)) for c in labels],
            label_img=torch.cat(xs),
            global_step=self.global_step,
            tag="val_features",
        )
        accuracy = float(self.trainer.callback_metrics["val_acc"])
        summary = (
            f"**{self.current_epoch} epochs, {self.global_step} steps**, val accuracy {accuracy:.4f}, "
            f"hyperparameters `{dict(self.hparams)}`"
        )
        self.tensorboard.add_text("run/summary", summary, self.global_step)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = _cli.parser(__doc__, max_epochs=8, batch_size=64)
    parser.set_defaults(num_threads=1)  # layers this small gain nothing from more threads
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate")
    parser.add_argument("--channels", type=int, default=16, help="filters of the first convolution")
    parser.add_argument("--dropout", type=float, default=0.25, help="dropout before the classifier")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> tuple[float, str]:
    """Train, write the tour, print the log folder and ``val accuracy: ...``; return both.

    Example::

        >>> accuracy, log_dir = main(["--max-epochs", "1"])  # doctest: +SKIP
    """
    args = parse_args(argv)
    root = Path(args.default_root_dir) if args.default_root_dir is not None else Path(".")
    logger = TensorBoardLogger(save_dir=root / "runs", name="tensorboard_tour", log_graph=True)
    trainer_kwargs = _cli.trainer_kwargs(args, logger=logger, enable_checkpointing=False)
    fitkit.seed_everything(args.seed)

    train_loader, val_loader = digits_loaders(args.batch_size, seed=args.seed)
    model = DigitsCNN(lr=args.lr, channels=args.channels, dropout=args.dropout, batch_size=args.batch_size)
    trainer = fitkit.Trainer(**trainer_kwargs)
    trainer.fit(model, train_loader, val_loader)
    accuracy = float(trainer.callback_metrics["val_acc"])
    if trainer.is_global_zero:
        print(f"TensorBoard logs in {logger.log_dir}: tensorboard --logdir {root / 'runs'}")
        print(f"val accuracy: {accuracy:.4f}")
    return accuracy, logger.log_dir


if __name__ == "__main__":
    main()
