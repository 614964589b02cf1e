"""Custom components: a complex-valued layer, activation, loss and optimizer, trained with fitkit.

The book's chapter 5 (*PyTorch Pocket Reference*, pp. 135-154) builds its own layers,
activations, losses and optimizer. This example writes each one the way PyTorch's own
are written, then trains them together through :class:`fitkit.Trainer`:

* :class:`ComplexLinear`: a linear layer on complex numbers held as a (real, imaginary)
  pair of real tensors, with parameters ``weight_r``, ``weight_i``, ``bias_r`` and
  ``bias_i`` (the book's sign and argument-order bugs fixed; see its ``forward``), and
  :class:`ComplexLinearSimple`, the same map built from two ``nn.Linear``;
* :class:`ComplexReLU` (ReLU on each part) and :class:`MyReLU` (a ReLU with a threshold,
  written with ``torch.where``);
* :class:`ComplexMSELoss`: the mean squared error of both parts, or of the real part
  only with ``real_only=True``;
* :class:`SimpleSGD`: an ``Optimizer`` subclass, ``p -= lr * grad`` for every parameter
  group, whose ``step`` takes no closure; here with two parameter groups at different
  learning rates (the hidden layer learns faster than the output layer).

The task is synthetic complex regression: ``y = A x + b + noise`` for a random complex
matrix ``A`` and vector ``b``; a two-layer complex network (``ComplexLinear`` ->
``ComplexReLU`` -> ``ComplexLinear``) learns it. The run prints the mean training loss
of the first and the last epoch and their ratio; the defaults bring the loss down about
65-fold (0.81 to 0.012; the noise alone costs 0.005) in a couple of seconds on a CPU.

Run it from the repository root::

    python examples/custom_components.py                   # 20 epochs, ~2 s on a CPU
    python examples/custom_components.py --lr-hidden 0.05 --lr-output 0.02 --max-epochs 40
    python examples/custom_components.py --real-only        # fit the real part only

The last line reads ``loss fell 65.8x (first epoch 0.8072, last epoch 0.0123)``.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterable, Sequence
from typing import Any

import _cli  # the gallery's common options (examples/_cli.py)
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader, TensorDataset

import fitkit

ComplexPair = tuple[torch.Tensor, torch.Tensor]


# -- layers ---------------------------------------------------------------------------------
class ComplexLinear(nn.Module):
    """``y = x W^T + b`` for complex ``x``, ``W`` and ``b``, each held as (real, imaginary) parts.

    Args:
        in_features: size of each input sample.
        out_features: size of each output sample.

    Example::

        >>> layer = ComplexLinear(3, 2)
        >>> out_r, out_i = layer(torch.randn(5, 3), torch.randn(5, 3))
        >>> out_r.shape, out_i.shape
        (torch.Size([5, 2]), torch.Size([5, 2]))
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight_r = nn.Parameter(torch.empty(out_features, in_features))
        self.weight_i = nn.Parameter(torch.empty(out_features, in_features))
        self.bias_r = nn.Parameter(torch.empty(out_features))
        self.bias_i = nn.Parameter(torch.empty(out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # nn.Linear's default range, shrunk by sqrt(2) because each output adds up a real
        # and an imaginary product: the output's variance then matches nn.Linear's.
        bound = 1.0 / math.sqrt(2 * self.in_features)
        for p in (self.weight_r, self.weight_i, self.bias_r, self.bias_i):
            nn.init.uniform_(p, -bound, bound)

    def forward(self, x_r: torch.Tensor, x_i: torch.Tensor) -> ComplexPair:
        # (x_r + i x_i)(W_r + i W_i)^T = (x_r W_r^T - x_i W_i^T) + i (x_r W_i^T + x_i W_r^T).
        # The book's version (chapter 5) has the sign of one of these terms wrong, mixes up
        # the two bias arguments, and calls a function torch does not have; this is the
        # corrected form, with F.linear (matmul plus bias) doing the work.
        out_r = F.linear(x_r, self.weight_r, self.bias_r) - F.linear(x_i, self.weight_i)
        out_i = F.linear(x_r, self.weight_i, self.bias_i) + F.linear(x_i, self.weight_r)
        return out_r, out_i

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"


class ComplexLinearSimple(nn.Module):
    """The same complex linear map from two ``nn.Linear`` layers (``fc_r`` and ``fc_i``).

    Each ``nn.Linear`` brings its own bias, so the complex bias here is
    ``(fc_r.bias - fc_i.bias) + i (fc_r.bias + fc_i.bias)``: the same family of maps as
    :class:`ComplexLinear`, parameterised differently.

    Example::

        >>> out_r, out_i = ComplexLinearSimple(3, 2)(torch.randn(5, 3), torch.randn(5, 3))
        >>> out_r.shape
        torch.Size([5, 2])
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.fc_r = nn.Linear(in_features, out_features)
        self.fc_i = nn.Linear(in_features, out_features)

    def forward(self, x_r: torch.Tensor, x_i: torch.Tensor) -> ComplexPair:
        return self.fc_r(x_r) - self.fc_i(x_i), self.fc_r(x_i) + self.fc_i(x_r)


# -- activations ------------------------------------------------------------------------------
class ComplexReLU(nn.Module):
    """ReLU applied to the real and the imaginary part separately.

    Example::

        >>> ComplexReLU()(torch.tensor([-1.0, 2.0]), torch.tensor([3.0, -4.0]))
        (tensor([0., 2.]), tensor([3., 0.]))
    """

    def forward(self, x_r: torch.Tensor, x_i: torch.Tensor) -> ComplexPair:
        return F.relu(x_r), F.relu(x_i)


class MyReLU(nn.Module):
    """``x`` where ``x > thresh``, else 0: a ReLU whose threshold is a hyperparameter.

    Example::

        >>> MyReLU(thresh=1.0)(torch.tensor([0.5, 1.0, 1.5]))
        tensor([0.0000, 0.0000, 1.5000])
    """

    def __init__(self, thresh: float = 0.0) -> None:
        super().__init__()
        self.thresh = thresh

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x > self.thresh, x, torch.zeros_like(x))

    def extra_repr(self) -> str:
        return f"thresh={self.thresh}"


# -- loss -------------------------------------------------------------------------------------
class ComplexMSELoss(nn.Module):
    """Mean squared error of complex values: ``mse(real parts) + mse(imaginary parts)``.

    The sum of the two is the mean of ``|prediction - target|^2``. With ``real_only=True``
    only the real parts count.

    Example::

        >>> loss = ComplexMSELoss()
        >>> loss(torch.tensor([1.0]), torch.tensor([2.0]), torch.tensor([0.0]), torch.tensor([0.0]))
        tensor(5.)
        >>> ComplexMSELoss(real_only=True)(torch.tensor([1.0]), torch.tensor([2.0]),
        ...                                torch.tensor([0.0]), torch.tensor([0.0]))
        tensor(1.)
    """

    def __init__(self, real_only: bool = False) -> None:
        super().__init__()
        self.real_only = real_only

    def forward(
        self, input_r: torch.Tensor, input_i: torch.Tensor, target_r: torch.Tensor, target_i: torch.Tensor
    ) -> torch.Tensor:
        loss = F.mse_loss(input_r, target_r)
        if self.real_only:
            return loss
        return loss + F.mse_loss(input_i, target_i)

    def extra_repr(self) -> str:
        return f"real_only={self.real_only}"


# -- optimizer --------------------------------------------------------------------------------
class SimpleSGD(Optimizer):
    """Plain stochastic gradient descent, ``p -= lr * p.grad``, for every parameter group.

    Each group may set its own ``lr``; groups without one use the ``lr`` given here. Its
    ``step`` takes no closure (fitkit sees that from the signature and calls ``step()``).

    Args:
        params: parameters, or a list of dicts (parameter groups) with ``"params"`` and
            optionally ``"lr"``.
        lr: the default learning rate.

    Example::

        >>> w = nn.Parameter(torch.tensor([1.0]))
        >>> opt = SimpleSGD([w], lr=0.1)
        >>> (2 * w).sum().backward()
        >>> opt.step()
        >>> w
        Parameter containing:
        tensor([0.8000], requires_grad=True)
    """

    def __init__(self, params: Iterable[Any], lr: float = 0.01) -> None:
        if lr < 0.0:
            raise ValueError(f"lr={lr} is not valid: a learning rate cannot be negative. Expected lr >= 0.")
        super().__init__(params, {"lr": lr})

    # In-place updates of parameters must not be recorded by autograd, as in torch.optim.
    @torch.no_grad()
    def step(self) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"])


# -- data and model ---------------------------------------------------------------------------
def complex_regression_data(
    n: int = 2048, in_features: int = 8, out_features: int = 4, noise: float = 0.05, seed: int = 0
) -> TensorDataset:
    """``(x_r, x_i, y_r, y_i)`` samples of ``y = A x + b + noise`` for a random complex ``A``, ``b``.

    Example::

        >>> x_r, x_i, y_r, y_i = complex_regression_data(n=10)[:]
        >>> x_r.shape, y_i.shape
        (torch.Size([10, 8]), torch.Size([10, 4]))
    """
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.complex(torch.randn(*shape, generator=g), torch.randn(*shape, generator=g))

    x, a, b, eps = randn(n, in_features), randn(out_features, in_features), randn(out_features), randn(n, out_features)
    # Scaled so each part of each output has variance about 1 (plus the bias).
    y = x @ a.T / math.sqrt(2 * in_features) + b + noise * eps
    return TensorDataset(x.real.contiguous(), x.imag.contiguous(), y.real.contiguous(), y.imag.contiguous())


class ComplexRegressor(fitkit.Module):
    """``ComplexLinear -> ComplexReLU -> ComplexLinear``, trained with SimpleSGD and ComplexMSELoss.

    Example::

        >>> model = ComplexRegressor(in_features=8, hidden=32, out_features=4)
        >>> out_r, out_i = model(torch.randn(2, 8), torch.randn(2, 8))
        >>> out_r.shape
        torch.Size([2, 4])
    """

    def __init__(
        self,
        in_features: int = 8,
        hidden: int = 32,
        out_features: int = 4,
        lr_hidden: float = 0.1,
        lr_output: float = 0.05,
        real_only: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.hidden = ComplexLinear(in_features, hidden)
        self.act = ComplexReLU()
        self.output = ComplexLinear(hidden, out_features)
        self.loss_fn = ComplexMSELoss(real_only=real_only)
        self.epoch_losses: list[float] = []  # mean training loss of each epoch

    def forward(self, x_r: torch.Tensor, x_i: torch.Tensor) -> ComplexPair:
        return self.output(*self.act(*self.hidden(x_r, x_i)))

    def training_step(self, batch: Sequence[torch.Tensor], batch_idx: int) -> torch.Tensor:
        x_r, x_i, y_r, y_i = batch
        loss = self.loss_fn(*self(x_r, x_i), y_r, y_i)
        # Only the epoch mean: read once per epoch, so no host sync per step.
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def on_train_epoch_end(self) -> None:
        # The epoch's aggregates are ready when this hook runs (as in Lightning).
        self.epoch_losses.append(float(self.trainer.callback_metrics["train_loss"]))

    def configure_optimizers(self) -> SimpleSGD:
        # Two parameter groups, each with its own learning rate.
        return SimpleSGD(
            [
                {"params": self.hidden.parameters(), "lr": self.hparams.lr_hidden},
                {"params": self.output.parameters(), "lr": self.hparams.lr_output},
            ],
            lr=self.hparams.lr_output,
        )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = _cli.parser(__doc__, max_epochs=20, batch_size=32)
    parser.set_defaults(num_threads=1)  # layers this small gain nothing from more threads
    parser.add_argument("--samples", type=int, default=2048, help="synthetic training samples")
    parser.add_argument("--hidden", type=int, default=32, help="complex hidden units")
    parser.add_argument("--lr-hidden", type=float, default=0.1, help="SimpleSGD learning rate of the hidden layer")
    parser.add_argument("--lr-output", type=float, default=0.05, help="SimpleSGD learning rate of the output layer")
    parser.add_argument("--real-only", action="store_true", help="ComplexMSELoss(real_only=True)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[float]:
    """Train, print the first and last epoch's loss and their ratio, return every epoch's loss.

    Example::

        >>> losses = main(["--max-epochs", "2"])  # doctest: +SKIP
    """
    args = parse_args(argv)
    trainer_kwargs = _cli.trainer_kwargs(args, enable_checkpointing=False)
    fitkit.seed_everything(args.seed)
    data = complex_regression_data(n=args.samples, seed=args.seed)
    loader = DataLoader(data, batch_size=args.batch_size, shuffle=True, num_workers=args.num_workers)
    model = ComplexRegressor(
        hidden=args.hidden, lr_hidden=args.lr_hidden, lr_output=args.lr_output, real_only=args.real_only
    )
    trainer = fitkit.Trainer(**trainer_kwargs)
    trainer.fit(model, loader)

    losses = model.epoch_losses
    if trainer.is_global_zero and losses:
        first, last = losses[0], losses[-1]
        print(f"loss fell {first / last:.1f}x (first epoch {first:.4f}, last epoch {last:.4f})")
    return losses


if __name__ == "__main__":
    main()
