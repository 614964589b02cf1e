"""DCGAN: a generator that learns to draw Fashion-MNIST clothes from noise, trained with fitkit.

The book's chapter 4 (*PyTorch Pocket Reference*, pp. 123-134) trains a DCGAN on
Fashion-MNIST. This example follows it:

* data: Fashion-MNIST's 60,000 training images, read from the raw IDX files in
  ``<data-dir>/FashionMNIST/raw/`` (where ``torchvision.datasets.FashionMNIST``
  downloads them) by a small IDX reader of this gallery's own (``examples/_idx.py``),
  resized to 64 x 64 as the book's ``Resize(64)`` does and rescaled to [-1, 1], the
  range of the generator's ``Tanh``; batch 32;
* :func:`build_generator`: the book's generator, 100-dim noise (100 x 1 x 1) through
  ``ConvTranspose2d`` layers 100 -> 1024 -> 512 -> 256 -> 128 channels (4 x 4 up to
  32 x 32), each with ``BatchNorm2d`` and ``ReLU``, then 128 -> 1 and ``Tanh``: a
  64 x 64 image;
* :func:`build_discriminator`: the book's discriminator, the mirror image: ``Conv2d``
  1 -> 128 (``LeakyReLU(0.2)``) -> 256 -> 512 -> 1024 (each with ``BatchNorm2d`` and
  ``LeakyReLU(0.2)``), then 1024 -> 1 and ``Sigmoid``: the probability that the image
  is real;
* :func:`weights_init`: convolution weights drawn from N(0, 0.02), BatchNorm weights from
  N(1, 0.02) with zero bias, as in the book (and the DCGAN paper);
* :class:`DCGAN`: manual optimization (``automatic_optimization = False``) with two
  optimizers, Adam with lr 2e-4 for the generator and 1e-4 for the discriminator, both
  betas (0.5, 0.999); ``BCELoss`` with real label 1 and fake label 0; each batch one
  discriminator step, then one generator step through the updated discriminator. It
  logs ``d_loss``, ``g_loss``, ``d_real`` (D(x), the mean probability D gives real
  images) and ``d_fake`` (D(G(z)) before the D step), and prints the epoch means;
* :class:`SampleGrid`: after every epoch, the generator's images for a fixed batch of 32
  noise vectors, as ``samples/epoch=NNN.png`` beside the logs
  (``torchvision.utils.save_image``) and as the image ``samples`` in TensorBoard
  (``add_image``): the book's figures of samples improving epoch by epoch;
* checkpoints at every epoch end, then a prediction step, ``trainer.predict`` over the
  fixed noise, that saves the final grid as ``samples/final.png``.

**The book's bug, not repeated here.** The book's discriminator step runs D on
``netG(noise)`` without ``detach()`` and calls ``backward(retain_graph=True)``: the
discriminator's loss then also back-propagates into the generator (wasted work, and
gradients in G's ``.grad`` that only the ``zero_grad`` before the G step keeps from
mixing in), and the graph is kept alive for the generator step. Here the D step sees
``fake.detach()``: no gradient reaches G, no graph needs retaining; the G step then runs
the same fake images through the updated discriminator, as the book does.

Sizes: ``--image-size`` (a power of two, at least 16; 64 by default, the book's) sets
the number of up- and down-sampling layers (64: four each; 16: two), and ``--width``
the channels (128 by default, the book's: 128, 256, 512, 1024 at 64 x 64, the widest
layer ``width * image_size / 8``). The book's networks have 12.7 million (generator) and
11.0 million (discriminator) parameters: slow on a CPU;
``--image-size 32 --width 32`` trains 5 epochs on the 10,000 MNIST test digits in
about 4 minutes on one CPU thread, and the samples are recognisable digits.

Data: ``--data-dir`` must hold ``FashionMNIST/raw/train-images-idx3-ubyte[.gz]``, or
the IDX files themselves; ``--download`` fetches them (30 MB) with torchvision.
``--idx-prefix t10k`` reads the ``t10k-*`` (test) files instead of ``train-*``: with
``--data-dir ../shared/data/mnist-t10k`` that trains on the 10,000 MNIST test digits,
the same format.

Run it from the repository root::

    python examples/dcgan_fashion_mnist.py --data-dir data --download            # the book's run
    python examples/dcgan_fashion_mnist.py --data-dir data --image-size 32 --width 32 --num-threads 1
    python examples/dcgan_fashion_mnist.py --data-dir ../shared/data/mnist-t10k --idx-prefix t10k \\
        --image-size 16 --width 8 --max-epochs 1                                   # seconds, MNIST digits

It prints a line per epoch such as ``epoch 0: d_loss 0.8123  g_loss 2.0456  D(x)
0.71  D(G(z)) 0.29``, the paths of the checkpoint and sample grids, and last
``sample std across noise: 0.4321`` (how much the final samples differ from each other).
"""

from __future__ import annotations

import argparse
import itertools
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _cli  # the gallery's common options (examples/_cli.py)
import _idx  # the gallery's IDX reader (examples/_idx.py)
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torchvision import transforms

import fitkit
from fitkit.callbacks import ModelCheckpoint, TQDMProgressBar
from fitkit.loggers import TensorBoardLogger


# -- data ---------------------------------------------------------------------------------------
def find_data(data_dir: Path, prefix: str = "train", download: bool = False) -> Path:
    """The folder holding ``<prefix>-images-idx3-ubyte[.gz]``: ``<data_dir>/FashionMNIST/raw`` or ``data_dir``.

    With ``download`` and no files, torchvision's ``FashionMNIST`` fetches them into
    ``<data_dir>/FashionMNIST/raw`` first; without, the script stops and says how to get them.
    """
    raw = data_dir / "FashionMNIST" / "raw"
    for folder in (raw, data_dir):
        if _idx.find_idx_files(folder, prefix)[0] is not None:
            return folder
    if download:
        # torchvision only downloads and unpacks here; the IDX reader does the reading.
        torchvision.datasets.FashionMNIST(str(data_dir), train=True, download=True)
        if _idx.find_idx_files(raw, prefix)[0] is not None:
            return raw
    _cli.missing_data(
        f"Fashion-MNIST's raw IDX files ({prefix}-images-idx3-ubyte or {prefix}-images-idx3-ubyte.gz)",
        raw,
        "Pass --download to fetch them (30 MB, with torchvision.datasets.FashionMNIST) into "
        "--data-dir/FashionMNIST/raw, or point --data-dir at a folder that holds the IDX files and pass "
        "--idx-prefix for their names (for example --data-dir ../shared/data/mnist-t10k --idx-prefix t10k "
        "reads the 10,000 MNIST test digits).",
    )


def image_transform(image_size: int) -> transforms.Compose:
    """A [0, 1] grey image to ``image_size`` x ``image_size`` in [-1, 1] (the generator's ``Tanh`` range)."""
    return transforms.Compose(
        [
            transforms.Resize(image_size, antialias=True),  # the book's Resize(64)
            transforms.Normalize((0.5,), (0.5,)),  # x * 2 - 1
        ]
    )


class IDXImagesDataModule(fitkit.DataModule):
    """The images of one IDX set (``<prefix>-images-idx3-ubyte[.gz]`` in ``folder``) for a GAN.

    Labels are not read: the GAN learns the images alone. The last, short batch is dropped
    so that every step compares equal numbers of real and fake images.

    Example::

        >>> dm = IDXImagesDataModule("data/FashionMNIST/raw", image_size=16)  # doctest: +SKIP
        >>> dm.setup("fit"); next(iter(dm.train_dataloader()))[0].shape  # doctest: +SKIP
        torch.Size([32, 1, 16, 16])
    """

    def __init__(
        self,
        folder: str | Path,
        prefix: str = "train",
        image_size: int = 64,
        batch_size: int = 32,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.folder = Path(folder)
        self.prefix = prefix
        self.image_size = image_size
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.train_set: _idx.IDXDataset | None = None

    def setup(self, stage: str) -> None:
        if self.train_set is None:
            self.train_set = _idx.IDXDataset.from_folder(
                self.folder, self.prefix, transform=image_transform(self.image_size), labels=False
            )

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            self.train_set, batch_size=self.batch_size, shuffle=True, drop_last=True, num_workers=self.num_workers
        )


# -- the networks -------------------------------------------------------------------------------
def num_scale_layers(image_size: int) -> int:
    """How many stride-2 layers take 4 x 4 to ``image_size`` (64: 4, the book's); checks the size.

    Example::

        >>> num_scale_layers(64), num_scale_layers(16)
        (4, 2)
    """
    if image_size < 16 or image_size & (image_size - 1):
        raise ValueError(f"--image-size must be a power of two, at least 16 (16, 32, 64, 128, ...); got {image_size}")
    return int(math.log2(image_size)) - 2


def build_generator(latent_dim: int = 100, image_size: int = 64, width: int = 128, channels: int = 1) -> nn.Sequential:
    """Noise (``latent_dim`` x 1 x 1) to an image (``channels`` x ``image_size`` x ``image_size``) in [-1, 1].

    The defaults are the book's: 100 -> 1024 (4 x 4) -> 512 -> 256 -> 128 -> 1 (64 x 64).

    Example::

        >>> build_generator(image_size=16, width=8)(torch.zeros(2, 100, 1, 1)).shape
        torch.Size([2, 1, 16, 16])
    """
    n = num_scale_layers(image_size)
    widths = [width * 2 ** (n - 1 - i) for i in range(n)]  # 1024, 512, 256, 128 for the book's
    # Convolutions without bias: each is followed by BatchNorm, whose shift does that job.
    layers: list[nn.Module] = [
        nn.ConvTranspose2d(latent_dim, widths[0], 4, 1, 0, bias=False),  # 1 x 1 -> 4 x 4
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(True),
    ]
    for c_in, c_out in itertools.pairwise(widths):  # each doubles the size
        layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]
    layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1, bias=False), nn.Tanh()]
    return nn.Sequential(*layers)


def build_discriminator(image_size: int = 64, width: int = 128, channels: int = 1) -> nn.Sequential:
    """An image to the probability (N x 1 x 1 x 1) that it is real; the generator's mirror image.

    The defaults are the book's: 1 -> 128 (32 x 32) -> 256 -> 512 -> 1024 (4 x 4) -> 1.

    Example::

        >>> build_discriminator(image_size=16, width=8)(torch.zeros(2, 1, 16, 16)).shape
        torch.Size([2, 1, 1, 1])
    """
    n = num_scale_layers(image_size)
    widths = [width * 2**i for i in range(n)]  # 128, 256, 512, 1024 for the book's
    layers: list[nn.Module] = [nn.Conv2d(channels, widths[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
    for c_in, c_out in itertools.pairwise(widths):  # each halves the size
        layers += [nn.Conv2d(c_in, c_out, 4, 2, 1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2, True)]
    layers += [nn.Conv2d(widths[-1], 1, 4, 1, 0, bias=False), nn.Sigmoid()]  # 4 x 4 -> 1 x 1
    return nn.Sequential(*layers)


def weights_init(module: nn.Module) -> None:
    """The book's initialisation, for ``net.apply``: conv N(0, 0.02); BatchNorm weight N(1, 0.02), bias 0."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def bce(probs: torch.Tensor, label: float) -> torch.Tensor:
    """``BCELoss`` of probabilities against a constant label (1.0 real, 0.0 fake).

    Computed in float32 with autocast off: mixed precision refuses ``binary_cross_entropy``
    on probabilities (it is unsafe in float16), and this keeps ``--precision 16-mixed`` usable.
    """
    with torch.autocast(device_type=probs.device.type, enabled=False):
        probs = probs.float().view(-1)
        return F.binary_cross_entropy(probs, torch.full_like(probs, label))


class DCGAN(fitkit.Module):
    """The book's generator and discriminator, trained in turn with two optimizers.

    ``fixed_noise`` (a buffer, so it is saved in checkpoints) is the batch of noise
    vectors the sample grids are drawn from, the same every epoch.

    Example::

        >>> gan = DCGAN(image_size=16, width=8)
        >>> gan(gan.fixed_noise).shape
        torch.Size([32, 1, 16, 16])
    """

    def __init__(
        self,
        latent_dim: int = 100,
        image_size: int = 64,
        width: int = 128,
        channels: int = 1,
        lr_g: float = 2e-4,
        lr_d: float = 1e-4,
        beta1: float = 0.5,
        beta2: float = 0.999,
        num_samples: int = 32,
        noise_seed: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False  # two optimizers, stepped in training_step
        self.generator = build_generator(latent_dim, image_size, width, channels)
        self.discriminator = build_discriminator(image_size, width, channels)
        self.generator.apply(weights_init)
        self.discriminator.apply(weights_init)
        noise = torch.randn(num_samples, latent_dim, 1, 1, generator=torch.Generator().manual_seed(noise_seed))
        self.register_buffer("fixed_noise", noise)
        self.history: list[dict[str, float]] = []  # the epoch means, also printed

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return self.generator(noise)

    def noise(self, n: int) -> torch.Tensor:
        return torch.randn(n, self.hparams.latent_dim, 1, 1, device=self.device)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        real = batch[0] if isinstance(batch, (list, tuple)) else batch
        opt_g, opt_d = self.optimizers()
        fake = self.generator(self.noise(real.shape[0]))

        # Discriminator: real images -> 1, fake ones -> 0. The book passes the fake images
        # without detach() and relies on backward(retain_graph=True); detaching them is the
        # correct form: the D loss must not back-propagate into the generator, and no graph
        # needs keeping for later.
        d_real = self.discriminator(real)
        d_fake = self.discriminator(fake.detach())
        loss_d = bce(d_real, 1.0) + bce(d_fake, 0.0)
        opt_d.zero_grad()
        self.manual_backward(loss_d)
        opt_d.step()

        # Generator: the same fake images through the updated discriminator, labelled real.
        loss_g = bce(self.discriminator(fake), 1.0)
        opt_g.zero_grad()
        self.manual_backward(loss_g)
        opt_g.step()

        self.log("d_loss", loss_d, prog_bar=True, on_epoch=True)
        self.log("g_loss", loss_g, prog_bar=True, on_epoch=True)
        self.log("d_real", d_real.mean(), on_step=False, on_epoch=True)
        self.log("d_fake", d_fake.mean(), on_step=False, on_epoch=True)

    def on_train_epoch_end(self) -> None:
        # This epoch's means are in callback_metrics already (reduced before this hook).
        metrics = self.trainer.callback_metrics
        means = {
            name: float(metrics[key])
            for name, key in (("d_loss", "d_loss_epoch"), ("g_loss", "g_loss_epoch"), ("d_real", "d_real"))
            if key in metrics
        }
        if "d_fake" in metrics:
            means["d_fake"] = float(metrics["d_fake"])
        self.history.append(means)
        if self.trainer.is_global_zero and len(means) == 4:
            # Through the progress bar when there is one, so that the line does not break it.
            bar = next((c for c in self.trainer.callbacks if isinstance(c, TQDMProgressBar)), None)
            (bar.print if bar is not None else print)(
                f"epoch {self.current_epoch}: d_loss {means['d_loss']:.4f}  g_loss {means['g_loss']:.4f}  "
                f"D(x) {means['d_real']:.2f}  D(G(z)) {means['d_fake']:.2f}"
            )

    def predict_step(self, batch: Any, batch_idx: int, *args: Any) -> torch.Tensor:
        noise = batch[0] if isinstance(batch, (list, tuple)) else batch
        return self.generator(noise)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        betas = (self.hparams.beta1, self.hparams.beta2)
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=self.hparams.lr_g, betas=betas)
        opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=self.hparams.lr_d, betas=betas)
        return [opt_g, opt_d]  # self.optimizers() returns them in this order


# -- sample grids -------------------------------------------------------------------------------
def save_grid(samples: torch.Tensor, path: Path, nrow: int = 8) -> torch.Tensor:
    """Save ``samples`` (in [-1, 1]) as one PNG grid; return the grid (3 x H x W in [0, 1])."""
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = torchvision.utils.make_grid(samples.detach().float().cpu(), nrow=nrow, normalize=True, value_range=(-1, 1))
    torchvision.utils.save_image(grid, str(path))
    return grid


class SampleGrid(fitkit.Callback):
    """After every training epoch: the generator's images for ``fixed_noise``, as a PNG and in TensorBoard.

    The generator runs in eval mode (BatchNorm with its running statistics, as in
    ``trainer.predict``) without gradients; rank zero writes. ``paths`` lists the files.
    """

    def __init__(self, nrow: int = 8) -> None:
        self.nrow = nrow
        self.paths: list[Path] = []

    def on_train_epoch_end(self, trainer: fitkit.Trainer, module: fitkit.Module) -> None:
        if not trainer.is_global_zero:
            return
        assert isinstance(module, DCGAN)
        was_training = module.generator.training
        module.generator.eval()
        with torch.no_grad():
            samples = module.generator(module.fixed_noise)
        module.generator.train(was_training)
        path = Path(trainer.log_dir) / "samples" / f"epoch={trainer.current_epoch:03d}.png"
        grid = save_grid(samples, path, self.nrow)
        self.paths.append(path)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("samples", grid, global_step=trainer.global_step)


# -- the script ---------------------------------------------------------------------------------
@dataclass
class Result:
    """What :func:`main` returns: the per-epoch means, the final samples and where things went."""

    history: list[dict[str, float]]
    samples: torch.Tensor
    sample_std: float
    sample_paths: list[Path] = field(default_factory=list)
    checkpoint: str = ""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = _cli.parser(__doc__, max_epochs=5, batch_size=32)
    parser.add_argument("--idx-prefix", default="train", help="IDX file names: <prefix>-images-idx3-ubyte[.gz]")
    parser.add_argument("--image-size", type=int, default=64, help="image side: a power of two, at least 16")
    parser.add_argument("--width", type=int, default=128, help="channels of the first D / last G layer (doubling)")
    parser.add_argument("--latent-dim", type=int, default=100, help="size of the generator's noise vectors")
    parser.add_argument("--lr-g", type=float, default=2e-4, help="generator Adam learning rate")
    parser.add_argument("--lr-d", type=float, default=1e-4, help="discriminator Adam learning rate")
    parser.add_argument("--beta1", type=float, default=0.5, help="Adam beta1 (both optimizers)")
    parser.add_argument("--num-samples", type=int, default=32, help="fixed noise vectors in each sample grid")
    parser.add_argument(
        "--limit-train-batches", type=float, default=None, help="batches per epoch (an int) or a fraction (<= 1.0)"
    )
    args = parser.parse_args(argv)
    try:
        num_scale_layers(args.image_size)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def _quiet(*args: object) -> None:
    pass


def main(argv: Sequence[str] | None = None, callbacks: Sequence[fitkit.Callback] = ()) -> Result:
    """Train, sample from the fixed noise with ``trainer.predict``, save the grids; return a :class:`Result`.

    ``callbacks`` are added to the Trainer's (a seam for tests).
    """
    args = parse_args(argv)
    folder = find_data(args.data_dir, args.idx_prefix, args.download)
    overrides: dict[str, Any] = {}
    if args.limit_train_batches is not None:
        limit = args.limit_train_batches
        overrides["limit_train_batches"] = int(limit) if limit > 1 else limit
    trainer_kwargs = _cli.trainer_kwargs(args, **overrides)
    fitkit.seed_everything(args.seed)
    start = time.perf_counter()

    datamodule = IDXImagesDataModule(folder, args.idx_prefix, args.image_size, args.batch_size, args.num_workers)
    model = DCGAN(
        latent_dim=args.latent_dim,
        image_size=args.image_size,
        width=args.width,
        lr_g=args.lr_g,
        lr_d=args.lr_d,
        beta1=args.beta1,
        num_samples=args.num_samples,
        noise_seed=args.seed,
    )
    grids = SampleGrid()
    checkpoint = ModelCheckpoint()  # at every epoch end, keeping the newest
    trainer = fitkit.Trainer(callbacks=[grids, checkpoint, *callbacks], **trainer_kwargs)
    say = print if trainer.is_global_zero else _quiet  # with several processes, rank 0 reports
    n_g = sum(p.numel() for p in model.generator.parameters())
    n_d = sum(p.numel() for p in model.discriminator.parameters())
    say(f"data: {folder} ({args.idx_prefix}-*); generator {n_g:,} and discriminator {n_d:,} parameters")
    trainer.fit(model, datamodule=datamodule)

    # The prediction step: the generator (eval mode) on the fixed noise, in batches.
    noise_loader = DataLoader(TensorDataset(model.fixed_noise.cpu()), batch_size=args.batch_size)
    outputs = trainer.predict(model, dataloaders=noise_loader) or []
    samples = torch.cat([o.cpu() for o in outputs]) if outputs else torch.empty(0)
    # How different the samples are from each other: per pixel, the std across noise
    # vectors, averaged. Near 0 means the generator draws one image whatever the noise.
    sample_std = float(samples.float().std(dim=0).mean()) if len(samples) > 1 else 0.0

    paths = list(grids.paths)
    if trainer.is_global_zero and len(samples):
        final = Path(trainer.log_dir) / "samples" / "final.png"
        save_grid(samples, final)
        paths.append(final)
        say(f"sample grids: {final.parent} ({len(paths)} files)")
    if checkpoint.last_model_path or checkpoint.best_model_path:
        say(f"checkpoint: {checkpoint.last_model_path or checkpoint.best_model_path}")
    say(f"finished in {time.perf_counter() - start:.1f} s")
    say(f"sample std across noise: {sample_std:.4f}")
    return Result(
        history=list(model.history),
        samples=samples,
        sample_std=sample_std,
        sample_paths=paths,
        checkpoint=str(checkpoint.last_model_path or checkpoint.best_model_path or ""),
    )


if __name__ == "__main__":
    main()
