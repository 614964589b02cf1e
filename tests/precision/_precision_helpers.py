"""Shared pieces of the precision tests: a small regression model, its data, and the
hand-written loops that fitkit's runs are compared against, bitwise."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fitkit as fk
from fitkit.testing import quiet_trainer

SEED = 31
NUM_TRAIN = 40  # 8 batches of 5
BATCH = 5

OptFactory = Callable[[Any], torch.optim.Optimizer]


def sgd(params: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=0.05, momentum=0.9)


def make_dataset(n: int = NUM_TRAIN, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    y = torch.tanh(x @ torch.randn(8, 1, generator=g)) + 0.1 * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)


def make_loader(n: int = NUM_TRAIN, seed: int = SEED) -> DataLoader[Any]:
    # An explicit generator: the shuffle never touches the global RNG.
    return DataLoader(make_dataset(n), batch_size=BATCH, shuffle=True, generator=torch.Generator().manual_seed(seed))


def make_net() -> nn.Sequential:
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 1))


class Net(fk.Module):
    """An MLP regressor that records the dtypes its steps see.

    ``inf_at`` holds the training batches (counted over the whole run) whose loss is
    multiplied by inf, so that every gradient is inf or NaN.
    """

    def __init__(
        self,
        make_opt: OptFactory = sgd,
        inf_at: Iterable[int] = (),
        scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
    ) -> None:
        super().__init__()
        self.net = make_net()
        self._make_opt = make_opt
        self._scheduler = scheduler
        self.inf_at = set(inf_at)
        self.batches = 0
        self.seen: dict[str, set[Any]] = {"input": set(), "target": set(), "hidden": set(), "param": set()}
        self.seen["default"] = set()
        self.seen["val_hidden"] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        hidden = self.net[0](x)
        self.seen["input"].add(x.dtype)
        self.seen["target"].add(y.dtype)
        self.seen["hidden"].add(hidden.dtype)
        self.seen["param"].add(self.net[0].weight.dtype)
        self.seen["default"].add(torch.get_default_dtype())
        loss = F.mse_loss(self.net[2](self.net[1](hidden)), y)
        if self.batches in self.inf_at:
            loss = loss * float("inf")
        self.batches += 1
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, _ = batch
        self.seen["val_hidden"].add(self.net[0](x).dtype)

    def configure_optimizers(self) -> Any:
        opt = self._make_opt(self.parameters())
        if self._scheduler is None:
            return opt
        return {"optimizer": opt, "lr_scheduler": {"scheduler": self._scheduler(opt), "interval": "step"}}


def fit(precision: Any, epochs: int = 2, **kwargs: Any) -> tuple[Net, fk.Trainer, nn.Module]:
    """Fit a fresh ``Net`` on the CPU; return it, its trainer, and a copy of its initial net."""
    trainer_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k not in ("make_opt", "inf_at", "scheduler")}
    torch.manual_seed(SEED)
    model = Net(**kwargs)
    init = copy.deepcopy(model.net)
    trainer = quiet_trainer(accelerator="cpu", max_epochs=epochs, precision=precision, **trainer_kwargs)
    trainer.fit(model, make_loader())
    return model, trainer, init


def raw_loop(
    init: nn.Module,
    epochs: int = 2,
    *,
    make_opt: OptFactory = sgd,
    autocast: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    dtype: torch.dtype | None = None,
    clip: float | None = None,
    inf_at: Iterable[int] = (),
    scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
) -> tuple[nn.Module, torch.optim.Optimizer, Any]:
    """The hand-written loop (the PyTorch AMP recipe where ``scaler`` is given)."""
    net = copy.deepcopy(init)
    if dtype is not None:
        net = net.to(dtype)
    opt = make_opt(net.parameters())
    sched = scheduler(opt) if scheduler is not None else None
    inf_at = set(inf_at)
    step = 0
    loader = make_loader()  # one loader: its generator moves on, so each epoch reshuffles
    for _ in range(epochs):
        for x, y in loader:
            if dtype is not None:
                x, y = x.to(dtype), y.to(dtype)
            with torch.autocast("cpu", dtype=autocast) if autocast is not None else contextlib.nullcontext():
                loss = F.mse_loss(net(x), y)
                if step in inf_at:
                    loss = loss * float("inf")
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
            else:
                loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_([p for p in net.parameters() if p.grad is not None], clip)
            if scaler is not None:
                scaler.step(opt)
                scaler.update()
            else:
                opt.step()
            opt.zero_grad(set_to_none=True)
            if sched is not None:
                sched.step()
            step += 1
    return net, opt, sched


def assert_same_weights(fitted: nn.Module, raw: nn.Module, init: nn.Module) -> None:
    for (name, p), q, p0 in zip(fitted.named_parameters(), raw.parameters(), init.parameters(), strict=True):
        assert p.dtype == q.dtype, name
        assert not torch.equal(p.to(p0.dtype), p0), f"{name} did not change: the test trained nothing"
        assert torch.equal(p, q), f"{name} differs from the raw loop by up to {(p - q).abs().max().item():.3g}"


def _cpu_half_mse_works() -> bool:
    """Whether this torch has CPU float16/bfloat16 kernels for mse_loss and its backward (torch >= 2.4)."""
    try:
        for dtype in (torch.float16, torch.bfloat16):
            x = torch.ones(2, dtype=dtype, requires_grad=True)
            F.mse_loss(x, torch.zeros(2, dtype=dtype)).backward()
    except RuntimeError:
        return False
    return True


needs_cpu_half_kernels = pytest.mark.skipif(
    not _cpu_half_mse_works(),
    reason="this torch has no CPU float16/bfloat16 mse_loss kernels (added in torch 2.4); the plug-in is not at fault",
)
