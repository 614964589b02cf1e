"""Manual optimization under every precision: ``manual_backward`` scales the loss, the
wrapped ``opt.step()`` goes through the scaler, and ``self.clip_gradients`` unscales first."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from _precision_helpers import SEED, make_loader, make_net

import fitkit as fk
import fitkit.precision
from fitkit.testing import quiet_trainer

CLIP = 0.5


class TwoOptimizers(fk.Module):
    """One loss, two optimizers (first and last layer): one backward, then both step."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.net = make_net()
        self.scaled_over_unscaled: list[float] = []  # grad after backward / grad after clip_gradients
        self.hidden: set[torch.dtype] = set()

    def training_step(self, batch: Any, batch_idx: int) -> None:
        opt_a, opt_b = self.optimizers()
        x, y = batch
        self.hidden.add(self.net[0](x).dtype)
        loss = F.mse_loss(self.net(x), y)
        self.manual_backward(loss)
        before = self.net[0].weight.grad.clone()
        self.clip_gradients(opt_a, gradient_clip_val=CLIP)
        after = self.net[0].weight.grad
        if torch.isfinite(before).all() and after.abs().max() > 0:
            self.scaled_over_unscaled.append((before.abs().max() / after.abs().max()).item())
        opt_a.step()
        opt_b.step()
        opt_a.zero_grad()
        opt_b.zero_grad()

    def configure_optimizers(self) -> Any:
        return (
            torch.optim.SGD(self.net[0].parameters(), lr=0.05, momentum=0.9),
            torch.optim.Adam(self.net[2].parameters(), lr=0.01),
        )


def raw_two_optimizers(init: torch.nn.Module, dtype: torch.dtype | None, scaler: Any) -> torch.nn.Module:
    net = copy.deepcopy(init)
    opt_a = torch.optim.SGD(net[0].parameters(), lr=0.05, momentum=0.9)
    opt_b = torch.optim.Adam(net[2].parameters(), lr=0.01)
    loader = make_loader()
    for _ in range(2):
        for x, y in loader:
            with torch.autocast("cpu", dtype=dtype) if dtype is not None else torch.autocast("cpu", enabled=False):
                loss = F.mse_loss(net(x), y)
            if scaler is None:
                loss.backward()
            else:
                scaler.scale(loss).backward()
                scaler.unscale_(opt_a)
            torch.nn.utils.clip_grad_norm_(list(net[0].parameters()), CLIP)
            if scaler is None:
                opt_a.step()
                opt_b.step()
            else:  # the PyTorch recipe for several optimizers: step each, update once
                scaler.step(opt_a)
                scaler.step(opt_b)
                scaler.update()
            opt_a.zero_grad(set_to_none=True)
            opt_b.zero_grad(set_to_none=True)
    return net


@pytest.mark.parametrize(
    ("precision", "dtype", "scaled"),
    [("32-true", None, False), ("16-mixed", torch.float16, True), ("bf16-mixed", torch.bfloat16, False)],
)
def test_manual_optimization_matches_the_raw_loop(precision: str, dtype: torch.dtype | None, scaled: bool) -> None:
    torch.manual_seed(SEED)
    model = TwoOptimizers()
    init = copy.deepcopy(model.net)
    trainer = quiet_trainer(accelerator="cpu", max_epochs=2, precision=precision)
    trainer.fit(model, make_loader())
    assert trainer.global_step == 16
    assert model.hidden == {dtype or torch.float32}
    raw = raw_two_optimizers(init, dtype, torch.amp.GradScaler("cpu") if scaled else None)
    for (name, p), q, p0 in zip(model.net.named_parameters(), raw.parameters(), init.parameters(), strict=True):
        assert not torch.equal(p, p0), name
        assert torch.equal(p, q), f"{name}: off by {(p - q).abs().max().item():.3g}"
    ratios = model.scaled_over_unscaled
    if scaled:
        # manual_backward left scaled gradients; clip_gradients unscaled them (then clipped).
        assert ratios and min(ratios) > 100
        assert trainer.strategy.precision.state_dict()["scale"] < 2.0**16  # the scaler did skip early steps
    else:
        assert ratios and max(ratios) < 100


class ClosureStep(fk.Module):
    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.net = make_net()
        self.step_results: list[Any] = []

    def training_step(self, batch: Any, batch_idx: int) -> None:
        opt = self.optimizers()
        x, y = batch

        def closure() -> torch.Tensor:
            opt.zero_grad()
            loss = F.mse_loss(self.net(x), y)
            self.manual_backward(loss)
            return loss

        self.step_results.append(opt.step(closure=closure))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.05)


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed", "64-true"])
def test_manual_step_with_a_closure(precision: str) -> None:
    torch.manual_seed(SEED)
    model = ClosureStep()
    init = copy.deepcopy(model.net)
    trainer = quiet_trainer(accelerator="cpu", max_epochs=1, precision=precision)
    trainer.fit(model, make_loader())
    assert len(model.step_results) == 8 and all(isinstance(r, torch.Tensor) for r in model.step_results)
    assert any(
        not torch.equal(p.to(q.dtype), q) for p, q in zip(model.net.parameters(), init.parameters(), strict=True)
    )


class PoisonGrad(torch.autograd.Function):
    """Identity forward; an inf gradient backward (inf in one optimizer's gradients only)."""

    @staticmethod
    def forward(ctx: Any, w: torch.Tensor) -> torch.Tensor:
        return w.view_as(w)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad * float("inf")


def poisoned_forward(net: torch.nn.Module, x: torch.Tensor, poison: bool) -> torch.Tensor:
    w = PoisonGrad.apply(net[0].weight) if poison else net[0].weight
    return net[2](net[1](F.linear(x, w, net[0].bias)))


class OneOptimizerOverflows(TwoOptimizers):
    POISON = (2, 5)

    def training_step(self, batch: Any, batch_idx: int) -> None:
        opt_a, opt_b = self.optimizers()
        x, y = batch
        self.manual_backward(F.mse_loss(poisoned_forward(self.net, x, batch_idx in self.POISON), y))
        opt_a.step()  # inf: skipped
        opt_b.step()  # finite: must be unscaled with the same scale the loss was scaled by
        opt_a.zero_grad()
        opt_b.zero_grad()


def test_scale_holds_until_every_optimizer_of_the_backward_has_stepped() -> None:
    """``scaler.update()`` straight after ``opt_a.step()`` would halve the scale before
    ``opt_b`` unscales, doubling opt_b's gradients; the PyTorch recipe updates once."""
    torch.manual_seed(SEED)
    model = OneOptimizerOverflows()
    init = copy.deepcopy(model.net)
    scaler = torch.amp.GradScaler("cpu", init_scale=64.0)
    plugin = fk.precision.MixedPrecision("16-mixed", "cpu", scaler=scaler)
    trainer = quiet_trainer(accelerator="cpu", max_epochs=1, precision=plugin)
    trainer.fit(model, make_loader())

    net = copy.deepcopy(init)
    opt_a = torch.optim.SGD(net[0].parameters(), lr=0.05, momentum=0.9)
    opt_b = torch.optim.Adam(net[2].parameters(), lr=0.01)
    raw_scaler = torch.amp.GradScaler("cpu", init_scale=64.0)
    for i, (x, y) in enumerate(make_loader()):
        with torch.autocast("cpu", dtype=torch.float16):
            loss = F.mse_loss(poisoned_forward(net, x, i in OneOptimizerOverflows.POISON), y)
        raw_scaler.scale(loss).backward()
        raw_scaler.step(opt_a)
        raw_scaler.step(opt_b)
        raw_scaler.update()
        opt_a.zero_grad(set_to_none=True)
        opt_b.zero_grad(set_to_none=True)
    for p, q in zip(model.net.parameters(), net.parameters(), strict=True):
        assert torch.equal(p, q)
    assert plugin.state_dict() == raw_scaler.state_dict()
    assert raw_scaler.get_scale() == 16.0  # both poisoned steps halved it
