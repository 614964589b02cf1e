"""Transfer learning: an ImageNet ResNet18 retrained to tell bees from ants, with fitkit.

The book's chapter 4 (*PyTorch Pocket Reference*, pp. 104-112) fine-tunes a ResNet18
on the hymenoptera set (244 training and 153 validation photos of ants and bees;
``ImageFolder`` skips the set's one ``.gif``). This example follows it:

* :class:`HymenopteraDataModule`: two ``torchvision.datasets.ImageFolder`` sets,
  ``<data-dir>/hymenoptera_data/{train,val}``; training images go through
  ``RandomResizedCrop(224)`` and ``RandomHorizontalFlip()``, validation images through
  ``Resize(256)`` and ``CenterCrop(224)``, both then ``ToTensor()`` and ImageNet's
  ``Normalize``; batch 4;
* :class:`ResNet18Classifier`: torchvision's ``resnet18`` with ImageNet weights
  (``ResNet18_Weights.IMAGENET1K_V1``) as ``backbone`` and its ``fc`` replaced by a new
  ``Linear(512, 2)``; ``CrossEntropyLoss``, ``SGD(lr=0.001, momentum=0.9)`` and
  ``StepLR(step_size=7, gamma=0.1)`` stepped once per epoch, for 25 epochs; it logs
  ``train_loss``, ``val_loss`` and ``val_acc``;
* ``--freeze-backbone``: :class:`fitkit.callbacks.BackboneFinetuning` trains the new
  head on a frozen backbone first, then unfreezes the backbone at
  ``--unfreeze-at-epoch`` with a smaller learning rate (``--backbone-lr-ratio`` of the
  head's), which then doubles each epoch up to the head's;
* TensorBoard logs (also the learning rate), checkpoints (the best by ``val_acc`` and
  ``last.ckpt``), and a last prediction step, ``trainer.predict`` over the validation
  set, that prints the validation accuracy and saves the book's Figure 4-1: a grid of
  validation images, normalisation undone, each labelled with its predicted class (green
  when right, red with the true class when wrong), as ``val_predictions.png`` beside
  the logs and as an image in TensorBoard. The trained network is also saved as a plain
  torchvision ``resnet18`` state dict, ``resnet18.pt``, as the book does.

The images: ``--data-dir`` must hold ``hymenoptera_data/`` (``--download`` fetches it
from download.pytorch.org). The ImageNet weights come from torchvision's cache
(``$TORCH_HOME/hub/checkpoints``) or, with ``--download``, from the internet; without
them pass ``--no-pretrained`` to train from random weights (expect far less: 244
training images are few to learn a ResNet18 from). ``--image-size`` shrinks the 224-pixel crops
(the resize goes with it, ``size * 256 / 224``) for quick runs on a CPU.

Run it from the repository root::

    python examples/transfer_resnet18.py --data-dir data --download      # the book's run
    python examples/transfer_resnet18.py --data-dir ../shared/data --freeze-backbone
    python examples/transfer_resnet18.py --data-dir ../shared/data --no-pretrained \\
        --image-size 64 --num-threads 1                                      # a CPU run, ~7 min

The last line reads ``validation accuracy: 0.6471``: the share of the 153 validation
images predicted right, here by the CPU run above (random weights, 64-pixel crops, 25
epochs, 7 minutes on a busy 2-core machine). The book reports no accuracy, and the
ImageNet-weight run was not measured (no download possible there). On a busy CPU,
``--num-threads 1`` is much faster than several threads that wait on each other.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _cli  # the gallery's common options (examples/_cli.py)
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image, ImageDraw, ImageFont
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms
from torchvision.models import ResNet18_Weights, resnet18

import fitkit
from fitkit.callbacks import BackboneFinetuning, LearningRateMonitor, ModelCheckpoint
from fitkit.loggers import TensorBoardLogger

DATA_URL = "https://download.pytorch.org/tutorial/hymenoptera_data.zip"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# -- data ---------------------------------------------------------------------------------------
def build_transforms(image_size: int = 224) -> tuple[transforms.Compose, transforms.Compose]:
    """The book's training and validation transforms, scaled to ``image_size`` (224 in the book).

    Example::

        >>> train_tf, val_tf = build_transforms(64)
        >>> val_tf.transforms[0].size, val_tf.transforms[1].size
        (73, (64, 64))
    """
    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train = transforms.Compose(
        [
            transforms.RandomResizedCrop(image_size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            normalize,
        ]
    )
    val = transforms.Compose(
        [
            transforms.Resize(round(image_size * 256 / 224)),  # 256 for 224, the book's ratio otherwise
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            normalize,
        ]
    )
    return train, val


def find_data(data_dir: Path, download: bool = False) -> Path:
    """``<data_dir>/hymenoptera_data``: checked, downloaded with ``download``, else a clear stop."""
    root = data_dir / "hymenoptera_data"
    if not all((root / split).is_dir() for split in ("train", "val")):
        if not download:
            _cli.missing_data(
                "the hymenoptera (bees and ants) images (hymenoptera_data/train and hymenoptera_data/val)",
                data_dir,
                f"Pass --download to fetch them ({DATA_URL}, 45 MB) into --data-dir, or point --data-dir at "
                "the folder that holds hymenoptera_data/ (for example --data-dir ../shared/data).",
            )
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(DATA_URL, download_root=str(data_dir))
    return root


class HymenopteraDataModule(fitkit.DataModule):
    """The bees and ants ``ImageFolder`` sets: ``<root>/train`` and ``<root>/val``.

    Example::

        >>> dm = HymenopteraDataModule("../shared/data/hymenoptera_data", image_size=64)  # doctest: +SKIP
        >>> dm.setup("fit"); dm.classes  # doctest: +SKIP
        ['ants', 'bees']
    """

    def __init__(self, root: str | os.PathLike[str], image_size: int = 224, batch_size: int = 4, num_workers: int = 0):
        super().__init__()
        self.root = Path(root)
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.train_set: datasets.ImageFolder | None = None
        self.val_set: datasets.ImageFolder | None = None

    def setup(self, stage: str) -> None:
        if self.train_set is not None:
            return
        train_tf, val_tf = build_transforms(self.image_size)
        self.train_set = datasets.ImageFolder(str(self.root / "train"), transform=train_tf)
        self.val_set = datasets.ImageFolder(str(self.root / "val"), transform=val_tf)

    @property
    def classes(self) -> list[str]:
        assert self.train_set is not None, "call setup() first"
        return list(self.train_set.classes)

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size, num_workers=self.num_workers)


# -- model --------------------------------------------------------------------------------------
def load_backbone(pretrained: bool, download: bool = False) -> nn.Module:
    """torchvision's ResNet18 (ImageNet weights when ``pretrained``) with ``fc`` an ``Identity``.

    The weights come from torchvision's cache; they are downloaded only with
    ``download``. When they cannot be had the script stops and says what to do.
    """
    if not pretrained:
        net = resnet18(weights=None)
    else:
        weights = ResNet18_Weights.IMAGENET1K_V1
        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
        how = (
            "Pass --download to fetch them (46 MB, needs internet), copy the file there from a machine that has "
            f"it, or pass --no-pretrained to train from random weights. ({weights.url})"
        )
        if not cached.is_file() and not download:
            _cli.missing_data(
                "the ResNet18 ImageNet weights (torchvision's ResNet18_Weights.IMAGENET1K_V1)", cached, how
            )
        try:
            net = resnet18(weights=weights)
        except (OSError, RuntimeError) as exc:  # no network, a bad or partial file
            raise SystemExit(f"error: could not load the ResNet18 ImageNet weights ({exc}).\n{how}") from exc
    net.fc = nn.Identity()  # the classifier is ResNet18Classifier.fc
    return net


class ResNet18Classifier(fitkit.Module):
    """A ResNet18 ``backbone`` (512 features) and a new ``fc = Linear(512, num_classes)`` head.

    The backbone is the attribute :class:`fitkit.callbacks.BackboneFinetuning` freezes.

    Example::

        >>> model = ResNet18Classifier(pretrained=False)
        >>> model(torch.zeros(2, 3, 64, 64)).shape
        torch.Size([2, 2])
    """

    def __init__(
        self,
        num_classes: int = 2,
        lr: float = 1e-3,
        momentum: float = 0.9,
        step_size: int = 7,
        gamma: float = 0.1,
        pretrained: bool = True,
        download: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["download"])
        self.backbone = load_backbone(pretrained, download)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone(x))

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

    def predict_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int, *args: Any) -> dict:
        x, y = batch
        return {"pred": self(x).argmax(dim=1), "target": y}

    def configure_optimizers(self) -> dict:
        # Trainable parameters only: with --freeze-backbone, BackboneFinetuning adds the
        # backbone as a second parameter group (with its own LR) when it unfreezes it.
        params = [p for p in self.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=self.hparams.lr, momentum=self.hparams.momentum)
        scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=self.hparams.step_size, gamma=self.hparams.gamma)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def to_torchvision(self) -> nn.Module:
        """The network as a plain ``torchvision.models.resnet18`` (``fc`` = this head), e.g. to save."""
        net = resnet18(weights=None, num_classes=self.hparams.num_classes)
        state = dict(self.backbone.state_dict())
        state.update({f"fc.{k}": v for k, v in self.fc.state_dict().items()})
        net.load_state_dict(state)
        return net


# -- the prediction grid (the book's Figure 4-1) -----------------------------------------------
def denormalize(images: torch.Tensor) -> torch.Tensor:
    """Undo ImageNet's ``Normalize``: back to [0, 1] pixel values."""
    mean = torch.tensor(IMAGENET_MEAN).view(-1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(-1, 1, 1)
    return (images.cpu() * std + mean).clamp(0, 1)


def prediction_grid(
    images: torch.Tensor,
    preds: Sequence[int],
    targets: Sequence[int],
    classes: Sequence[str],
    nrow: int = 4,
    min_cell: int = 128,
) -> Image.Image:
    """A grid of (normalised) ``images``, each captioned with its predicted class.

    Captions are green when right, red with the true class in brackets when wrong. Small
    images are enlarged to ``min_cell`` pixels so that the captions stay readable.
    """
    images = denormalize(images)
    if images.shape[-1] < min_cell:
        images = F.interpolate(images, size=(min_cell, min_cell), mode="nearest")
    padding = 2
    grid = torchvision.utils.make_grid(images, nrow=nrow, padding=padding)
    picture = transforms.functional.to_pil_image(grid)
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default()
    height, width = images.shape[-2:]
    for i, (pred, target) in enumerate(zip(preds, targets, strict=True)):
        x = padding + (i % nrow) * (width + padding)
        y = padding + (i // nrow) * (height + padding)
        right = pred == target
        text = classes[pred] if right else f"{classes[pred]} ({classes[target]})"
        box = draw.textbbox((x + 3, y + 3), text, font=font)
        draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
        draw.text((x + 3, y + 3), text, fill=(80, 230, 80) if right else (255, 80, 80), font=font)
    return picture


# -- the script ---------------------------------------------------------------------------------
def _quiet(*args: object) -> None:
    pass


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = _cli.parser(__doc__, max_epochs=25, batch_size=4)
    parser.add_argument("--lr", type=float, default=1e-3, help="SGD learning rate")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    parser.add_argument("--step-size", type=int, default=7, help="StepLR: epochs between LR cuts")
    parser.add_argument("--gamma", type=float, default=0.1, help="StepLR: LR factor at each cut")
    parser.add_argument("--image-size", type=int, default=224, help="crop size (resize: size * 256 / 224)")
    parser.add_argument(
        "--no-pretrained", dest="pretrained", action="store_false", help="start from random weights, not ImageNet's"
    )
    parser.add_argument(
        "--freeze-backbone", action="store_true", help="train the head alone first (BackboneFinetuning)"
    )
    parser.add_argument("--unfreeze-at-epoch", type=int, default=5, help="with --freeze-backbone: epoch to unfreeze")
    parser.add_argument(
        "--backbone-lr-ratio", type=float, default=0.1, help="with --freeze-backbone: backbone LR / head LR at first"
    )
    parser.add_argument("--grid-images", type=int, default=8, help="validation images in the prediction grid")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, callbacks: Sequence[fitkit.Callback] = ()) -> float:
    """Train, predict on the validation set, save the grid; return the validation accuracy.

    ``callbacks`` are added to the Trainer's (a seam for tests).
    """
    args = parse_args(argv)
    root = find_data(args.data_dir, args.download)
    trainer_kwargs = _cli.trainer_kwargs(args)
    fitkit.seed_everything(args.seed)
    start = time.perf_counter()

    datamodule = HymenopteraDataModule(root, args.image_size, args.batch_size, args.num_workers)
    datamodule.setup("fit")
    model = ResNet18Classifier(
        num_classes=len(datamodule.classes),
        lr=args.lr,
        momentum=args.momentum,
        step_size=args.step_size,
        gamma=args.gamma,
        pretrained=args.pretrained,
        download=args.download,
    )
    all_callbacks: list[fitkit.Callback] = [
        ModelCheckpoint(monitor="val_acc", mode="max", filename="{epoch}-{val_acc:.4f}", save_last=True)
    ]
    if not args.fast_dev_run:  # fast_dev_run runs without loggers
        all_callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    if args.freeze_backbone:
        all_callbacks.append(
            BackboneFinetuning(
                unfreeze_backbone_at_epoch=args.unfreeze_at_epoch,
                backbone_initial_ratio_lr=args.backbone_lr_ratio,
            )
        )
    all_callbacks.extend(callbacks)
    trainer = fitkit.Trainer(callbacks=all_callbacks, **trainer_kwargs)
    trainer.fit(model, datamodule=datamodule)
    say = print if trainer.is_global_zero else _quiet  # with several processes, rank 0 reports
    if "val_acc" in trainer.callback_metrics:
        say(
            f"after {trainer.current_epoch} epochs ({trainer.global_step} steps): "
            f"val_acc {float(trainer.callback_metrics['val_acc']):.4f}"
        )

    # The prediction step: the whole validation set, in order.
    outputs = trainer.predict(model, dataloaders=datamodule.val_dataloader()) or []
    preds = torch.cat([o["pred"] for o in outputs]).cpu()
    targets = torch.cat([o["target"] for o in outputs]).cpu()
    accuracy = float((preds == targets).float().mean())

    if trainer.is_global_zero:
        # Figure 4-1: validation images spread over the set (it is sorted by class).
        assert datamodule.val_set is not None
        count = min(args.grid_images, len(preds))
        picks = torch.linspace(0, len(preds) - 1, count).round().long().tolist()
        images = torch.stack([datamodule.val_set[i][0] for i in picks])
        picture = prediction_grid(
            images, [int(preds[i]) for i in picks], [int(targets[i]) for i in picks], datamodule.classes
        )
        out_dir = Path(trainer.log_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        picture.save(out_dir / "val_predictions.png")
        if isinstance(trainer.logger, TensorBoardLogger):
            array = transforms.functional.pil_to_tensor(picture)
            trainer.logger.experiment.add_image("val_predictions", array, global_step=trainer.global_step)
            trainer.logger.experiment.flush()
        torch.save(model.to_torchvision().state_dict(), out_dir / "resnet18.pt")
        say(f"prediction grid: {out_dir / 'val_predictions.png'}")
        checkpoint = next((c for c in trainer.callbacks if isinstance(c, ModelCheckpoint)), None)
        if checkpoint is not None and checkpoint.best_model_path:
            say(f"best checkpoint: {checkpoint.best_model_path}")
    say(f"finished in {time.perf_counter() - start:.1f} s")
    say(f"validation accuracy: {accuracy:.4f}")
    return accuracy


if __name__ == "__main__":
    main()
