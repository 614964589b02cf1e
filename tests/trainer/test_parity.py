"""Parity: fitkit's final weights are bitwise equal to a hand-written PyTorch loop's.

Each test builds one model, copies it for the raw loop, and trains both copies on
the same shuffled data (a ``torch.Generator`` seeded identically for each run) with
the same global RNG state (the models use dropout, so any extra draw from the
global RNG inside fitkit would show). Weights are compared with ``torch.equal``:
not close, identical. Each test also checks that training changed the weights and
that the feature under test was exercised (clipping clipped, the scheduler moved
the learning rate), so a no-op on both sides cannot pass.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fitkit as fk

SEED = 1234
NUM_TRAIN = 50  # 10 batches of 5: not divisible by 3, so accumulation has a short last window
BATCH = 5
EPOCHS = 3


# -- fixtures shared by every parity test ------------------------------------------------
def make_dataset(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    w = torch.randn(6, 1, generator=g)
    y = torch.tanh(x @ w) + 0.1 * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)


def make_loader(ds: TensorDataset, batch_size: int = BATCH, shuffle: bool = True, seed: int = SEED) -> DataLoader:
    # An explicit generator: the shuffle order (and the loader's base seed draw) never
    # touches the global RNG, so both runs see the same batches in the same order.
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=torch.Generator().manual_seed(seed))


def make_net() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Dropout(0.2), nn.Linear(16, 1))


def make_trainer(**kwargs: Any) -> fk.Trainer:
    defaults: dict[str, Any] = dict(
        max_epochs=EPOCHS,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    defaults.update(kwargs)
    return fk.Trainer(**defaults)


class Regressor(fk.Module):
    """An MLP regressor whose optimizers come from a function of the module."""

    def __init__(self, configure: Callable[[Regressor], Any]) -> None:
        super().__init__()
        self.net = make_net()
        self._configure = configure
        self.lrs: list[float] = []  # the LR each training batch ran with

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        self.lrs.append(self.trainer.optimizers[0].param_groups[0]["lr"])
        return F.mse_loss(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.mse_loss(self(x), y))

    def configure_optimizers(self) -> Any:
        return self._configure(self)


def assert_same_weights(fitted: nn.Module, raw: nn.Module, init: nn.Module) -> None:
    fitted_params = dict(fitted.named_parameters())
    raw_params = dict(raw.named_parameters())
    init_params = dict(init.named_parameters())
    assert fitted_params.keys() == raw_params.keys()
    for name, p in fitted_params.items():
        assert not torch.equal(p, init_params[name]), f"{name} did not change: the test trained nothing"
        assert torch.equal(p, raw_params[name]), (
            f"{name} differs from the raw loop by up to {(p - raw_params[name]).abs().max().item():.3g}"
        )


def fit_fitkit(
    configure: Callable[[Regressor], Any], val: bool = False, **trainer_kwargs: Any
) -> tuple[Regressor, fk.Trainer, nn.Module]:
    """Build the model, keep an untouched copy of its initial net, and fit it with fitkit."""
    torch.manual_seed(SEED)
    model = Regressor(configure)
    init = copy.deepcopy(model.net)
    trainer = make_trainer(**trainer_kwargs)
    train_loader = make_loader(make_dataset(NUM_TRAIN, 0))
    val_loader = make_loader(make_dataset(22, 1), batch_size=6, shuffle=False, seed=7) if val else None
    torch.manual_seed(SEED + 1)  # the dropout stream; the raw loop starts from the same state
    trainer.fit(model, train_loader, val_loader)
    return model, trainer, init


def raw_setup(init: nn.Module) -> tuple[nn.Module, DataLoader]:
    net = copy.deepcopy(init)
    net.train()
    loader = make_loader(make_dataset(NUM_TRAIN, 0))
    torch.manual_seed(SEED + 1)
    return net, loader


# -- plain SGD --------------------------------------------------------------------------
def test_plain_sgd_matches_raw_loop() -> None:
    def sgd(params: Any) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=0.05, momentum=0.9, weight_decay=1e-3)

    model, trainer, init = fit_fitkit(lambda m: sgd(m.parameters()))

    net, loader = raw_setup(init)
    opt = sgd(net.parameters())
    steps = 0
    for _ in range(EPOCHS):
        for x, y in loader:
            loss = F.mse_loss(net(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            steps += 1

    assert trainer.global_step == steps == EPOCHS * math.ceil(NUM_TRAIN / BATCH)
    assert trainer.current_epoch == EPOCHS
    assert_same_weights(model.net, net, init)


def test_every_epoch_sees_the_batches_of_a_plain_for_loop() -> None:
    """The shuffle order of epoch 2+ depends on the loader being run to its end each epoch.

    RandomSampler draws from its generator once more when exhausted; a loop that stops
    after the last batch without finishing the iterator shifts every later permutation.
    """
    seen: list[torch.Tensor] = []

    class Recorder(Regressor):
        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            seen.append(batch[0])
            return super().training_step(batch, batch_idx)

    make_trainer().fit(
        Recorder(lambda m: torch.optim.SGD(m.parameters(), lr=0.01)), make_loader(make_dataset(NUM_TRAIN, 0))
    )
    loader = make_loader(make_dataset(NUM_TRAIN, 0))
    expected = [x for _ in range(EPOCHS) for x, _ in loader]
    assert len(seen) == len(expected) == EPOCHS * len(loader)
    assert all(torch.equal(a, b) for a, b in zip(seen, expected, strict=True))


def test_parity_detects_a_different_loop() -> None:
    """Sanity check of the harness itself: one extra raw step must break equality."""
    model, _, init = fit_fitkit(lambda m: torch.optim.SGD(m.parameters(), lr=0.05))
    net, loader = raw_setup(init)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    for _ in range(EPOCHS):
        for x, y in loader:
            F.mse_loss(net(x), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    x, y = next(iter(make_loader(make_dataset(NUM_TRAIN, 0))))
    F.mse_loss(net(x), y).backward()
    opt.step()
    with pytest.raises(AssertionError, match="differs from the raw loop"):
        assert_same_weights(model.net, net, init)


# -- gradient accumulation with a short last window, and norm clipping ------------------------
def test_accumulation_with_norm_clipping_matches_raw_loop() -> None:
    accumulate, max_norm = 3, 0.05
    assert (NUM_TRAIN // BATCH) % accumulate != 0, "the test needs a short last accumulation window"

    model, trainer, init = fit_fitkit(
        lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.5),
        accumulate_grad_batches=accumulate,
        gradient_clip_val=max_norm,
    )

    net, loader = raw_setup(init)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.5)
    steps, clipped = 0, 0
    for _ in range(EPOCHS):
        for i, (x, y) in enumerate(loader):
            loss = F.mse_loss(net(x), y)
            (loss / accumulate).backward()
            if (i + 1) % accumulate == 0 or i == len(loader) - 1:  # the epoch's last batch closes a short window
                params = [p for group in opt.param_groups for p in group["params"] if p.grad is not None]
                norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
                clipped += int(norm > max_norm)
                opt.step()
                opt.zero_grad(set_to_none=True)
                steps += 1

    assert clipped > 0, "clipping never engaged: lower max_norm"
    assert trainer.global_step == steps == EPOCHS * math.ceil(len(loader) / accumulate)
    assert_same_weights(model.net, net, init)


# -- schedulers ------------------------------------------------------------------------------
def test_step_lr_per_epoch_matches_raw_loop() -> None:
    def configure(m: Regressor) -> Any:
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)]

    model, trainer, init = fit_fitkit(configure)

    net, loader = raw_setup(init)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    lrs = []
    for _ in range(EPOCHS):
        for x, y in loader:
            lrs.append(opt.param_groups[0]["lr"])
            F.mse_loss(net(x), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        sched.step()

    assert model.lrs == lrs
    assert sorted(set(lrs), reverse=True) == [0.1, 0.05, 0.025]
    assert trainer.optimizers[0].param_groups[0]["lr"] == opt.param_groups[0]["lr"] == 0.0125
    assert_same_weights(model.net, net, init)


@pytest.mark.parametrize("accumulate", [1, 3])
def test_one_cycle_per_step_matches_raw_loop(accumulate: int) -> None:
    seen_total: list[int | float] = []

    def configure(m: Regressor) -> Any:
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
        total = m.trainer.estimated_stepping_batches
        seen_total.append(total)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    model, trainer, init = fit_fitkit(configure, accumulate_grad_batches=accumulate)

    net, loader = raw_setup(init)
    total = EPOCHS * math.ceil(len(loader) / accumulate)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=total)
    lrs = []
    for _ in range(EPOCHS):
        for i, (x, y) in enumerate(loader):
            lrs.append(opt.param_groups[0]["lr"])
            loss = F.mse_loss(net(x), y)
            (loss / accumulate if accumulate > 1 else loss).backward()
            if (i + 1) % accumulate == 0 or i == len(loader) - 1:
                opt.step()
                opt.zero_grad(set_to_none=True)
                sched.step()

    # estimated_stepping_batches was right: OneCycleLR raises when stepped past total_steps,
    # and a larger total would give a different schedule (and different weights).
    assert seen_total == [total]
    assert sched.last_epoch == total == trainer.global_step
    assert model.lrs == lrs
    assert len(set(lrs)) > total // 2, "the LR should move on almost every step"
    assert opt.param_groups[0]["momentum"] == trainer.optimizers[0].param_groups[0]["momentum"]
    assert_same_weights(model.net, net, init)


def weighted_mean(values: list[torch.Tensor], sizes: list[int]) -> torch.Tensor:
    """The epoch mean of a logged value, weighted by batch size (fitkit's reduction)."""
    stacked = torch.stack(values)
    return (stacked * torch.tensor(sizes, dtype=stacked.dtype)).sum() / sum(sizes)


def test_reduce_on_plateau_on_val_loss_matches_raw_loop() -> None:
    epochs = 6

    def plateau(opt: torch.optim.Optimizer) -> Any:
        # threshold=0.2: an epoch must improve val_loss by 20% or the LR halves, so both
        # outcomes happen within a few epochs.
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.5, patience=0, threshold=0.2)

    def configure(m: Regressor) -> Any:
        opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": plateau(opt), "monitor": "val_loss"}}

    model, trainer, init = fit_fitkit(configure, val=True, max_epochs=epochs)

    net, loader = raw_setup(init)
    val_loader = make_loader(make_dataset(22, 1), batch_size=6, shuffle=False, seed=7)  # batches of 6, 6, 6, 4
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    sched = plateau(opt)
    lrs, val_losses = [], []
    for _ in range(epochs):
        net.train()
        for x, y in loader:
            lrs.append(opt.param_groups[0]["lr"])
            F.mse_loss(net(x), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        net.eval()
        with torch.no_grad():
            values, sizes = [], []
            for x, y in val_loader:
                values.append(F.mse_loss(net(x), y))
                sizes.append(len(x))
        val_loss = weighted_mean(values, sizes)
        val_losses.append(val_loss)
        sched.step(val_loss)

    assert torch.equal(trainer.callback_metrics["val_loss"], val_losses[-1])
    epoch_lrs = lrs[:: len(loader)]
    reductions = sum(later < earlier for earlier, later in itertools.pairwise(epoch_lrs))
    assert epoch_lrs[0] == 0.1
    assert 0 < reductions < epochs - 1, f"the plateau should reduce the LR after some epochs, not all: {epoch_lrs}"
    assert model.lrs == lrs
    assert_same_weights(model.net, net, init)


# -- manual optimization: a GAN with two optimizers -----------------------------------------
def make_generator() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))


def make_discriminator() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 16), nn.LeakyReLU(0.2), nn.Dropout(0.1), nn.Linear(16, 1))


def make_gan_optimizers(g: nn.Module, d: nn.Module) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    return (
        torch.optim.Adam(g.parameters(), lr=2e-3, betas=(0.5, 0.999)),
        torch.optim.Adam(d.parameters(), lr=1e-3, betas=(0.5, 0.999)),
    )


def gan_losses_d(d: nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    real_logits, fake_logits = d(real), d(fake.detach())
    return F.binary_cross_entropy_with_logits(
        real_logits, torch.ones_like(real_logits)
    ) + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))


def gan_loss_g(d: nn.Module, fake: torch.Tensor) -> torch.Tensor:
    logits = d(fake)
    return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))


class GAN(fk.Module):
    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.generator = make_generator()
        self.discriminator = make_discriminator()

    def training_step(self, batch: Any, batch_idx: int) -> None:
        (real,) = batch
        opt_g, opt_d = self.optimizers()
        fake = self.generator(torch.randn(real.shape[0], 4))
        # discriminator on detached fakes
        opt_d.zero_grad()
        self.manual_backward(gan_losses_d(self.discriminator, real, fake))
        opt_d.step()
        # generator through the updated discriminator
        opt_g.zero_grad()
        self.manual_backward(gan_loss_g(self.discriminator, fake))
        opt_g.step()

    def configure_optimizers(self) -> Any:
        return list(make_gan_optimizers(self.generator, self.discriminator))


def test_manual_gan_two_optimizers_matches_raw_loop() -> None:
    real_data = TensorDataset(torch.randn(40, 2, generator=torch.Generator().manual_seed(3)) * 0.5 + 2.0)
    torch.manual_seed(SEED)
    model = GAN()
    init = copy.deepcopy(model)
    trainer = make_trainer()
    torch.manual_seed(SEED + 1)  # noise and dropout
    trainer.fit(model, make_loader(real_data, batch_size=8))

    g, d = copy.deepcopy(init.generator), copy.deepcopy(init.discriminator)
    g.train()
    d.train()
    opt_g, opt_d = make_gan_optimizers(g, d)
    loader = make_loader(real_data, batch_size=8)
    torch.manual_seed(SEED + 1)
    for _ in range(EPOCHS):
        for (real,) in loader:
            fake = g(torch.randn(real.shape[0], 4))
            opt_d.zero_grad()
            gan_losses_d(d, real, fake).backward()
            opt_d.step()
            opt_g.zero_grad()
            gan_loss_g(d, fake).backward()
            opt_g.step()

    raw = nn.Module()
    raw.generator, raw.discriminator = g, d
    assert_same_weights(model, raw, init)
    # both optimizers really stepped, once per batch each
    assert all(s["step"].item() == EPOCHS * len(loader) for s in trainer.optimizers[0].state.values())
    assert all(s["step"].item() == EPOCHS * len(loader) for s in trainer.optimizers[1].state.values())
