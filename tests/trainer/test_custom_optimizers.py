"""Custom optimizers and losses, closure optimizers, and every ``configure_optimizers`` form.

* The book's ``SimpleSGD`` (chapter 5): an ``Optimizer`` subclass whose ``step()``
  takes no closure, with two parameter groups at different learning rates; it must
  train under fitkit exactly (bitwise) as in a hand-written loop.
* The book's ``ComplexMSELoss`` used as a loss module on a small ``ComplexLinear``
  model (the corrected form in ``BOOK.md``), unchanged.
* ``torch.optim.LBFGS``, whose ``step`` needs a closure: it trains, reduces the loss,
  and matches a raw LBFGS loop bitwise.
* Every form Lightning accepts from ``configure_optimizers``, with the number and
  timing of scheduler steps checked, and what ``self.optimizers()`` /
  ``self.lr_schedulers()`` return.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import Optimizer
from torch.utils.data import DataLoader, TensorDataset

import fitkit as fk
from fitkit.trainer.optimization import Optimizer as FitkitOptimizer

SEED = 4321


def make_trainer(**kwargs: Any) -> fk.Trainer:
    defaults: dict[str, Any] = dict(
        max_epochs=3,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    defaults.update(kwargs)
    return fk.Trainer(**defaults)


def make_loader(ds: TensorDataset, batch_size: int, shuffle: bool = True, seed: int = SEED) -> DataLoader:
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=torch.Generator().manual_seed(seed))


def regression_data(n: int = 48, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = torch.sin(x @ torch.randn(6, 1, generator=g)) + 0.05 * torch.randn(n, 1, generator=g)
    return TensorDataset(x, y)


def assert_same_weights(fitted: nn.Module, raw: nn.Module, init: nn.Module, unchanged: tuple[str, ...] = ()) -> None:
    raw_params, init_params = dict(raw.named_parameters()), dict(init.named_parameters())
    fitted_params = dict(fitted.named_parameters())
    assert fitted_params.keys() == raw_params.keys()
    for name, p in fitted_params.items():
        if name in unchanged:
            assert torch.equal(p, init_params[name]), f"{name} has no gradient and should not move"
        else:
            assert not torch.equal(p, init_params[name]), f"{name} did not change: the test trained nothing"
        assert torch.equal(p, raw_params[name]), f"{name} differs: {(p - raw_params[name]).abs().max().item():.3g}"


# -- the book's SimpleSGD ----------------------------------------------------------------------
class SimpleSGD(Optimizer):
    """Chapter 5's optimizer: ``p -= lr * grad`` per parameter group. ``step`` takes no closure."""

    def __init__(self, params: Any, lr: Any = "required") -> None:
        if lr != "required" and lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        super().__init__(params, dict(lr=lr))

    # An in-place update of a leaf that requires grad must run without autograd
    # recording it, as torch's own optimizers do.
    @torch.no_grad()
    def step(self) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                p.add_(p.grad, alpha=-group["lr"])


def mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(6, 12), nn.Tanh(), nn.Linear(12, 1))


def simple_sgd_groups(net: nn.Sequential) -> SimpleSGD:
    return SimpleSGD([{"params": net[0].parameters(), "lr": 0.1}, {"params": net[2].parameters(), "lr": 0.01}])


class Regressor(fk.Module):
    def __init__(self, configure: Callable[[Regressor], Any], net: nn.Module | None = None) -> None:
        super().__init__()
        self.net = net if net is not None else mlp()
        self._configure = configure
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.calls += 1
        x, y = batch
        return F.mse_loss(self(x), y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.mse_loss(self(x), y))

    def configure_optimizers(self) -> Any:
        return self._configure(self)


def test_simple_sgd_without_closure_two_groups_matches_raw_loop() -> None:
    epochs = 3

    def configure(m: Regressor) -> Any:
        opt = simple_sgd_groups(m.net)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)}

    torch.manual_seed(SEED)
    model = Regressor(configure)
    init = copy.deepcopy(model.net)
    trainer = make_trainer(max_epochs=epochs)
    trainer.fit(model, make_loader(regression_data(), batch_size=5))  # 10 batches, the last one short

    net = copy.deepcopy(init)
    opt = simple_sgd_groups(net)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    loader = make_loader(regression_data(), batch_size=5)
    for _ in range(epochs):
        for x, y in loader:
            F.mse_loss(net(x), y).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        sched.step()

    fitted_opt = trainer.optimizers[0]
    assert isinstance(fitted_opt, SimpleSGD)
    assert [g["lr"] for g in fitted_opt.param_groups] == [g["lr"] for g in opt.param_groups] == [0.0125, 0.00125]
    assert trainer.global_step == epochs * len(loader)
    assert_same_weights(model.net, net, init)


def test_simple_sgd_respects_each_group_learning_rate() -> None:
    """A group with lr=0 stays put while the other trains: the groups are not merged."""

    def configure(m: Regressor) -> Any:
        return SimpleSGD([{"params": m.net[0].parameters(), "lr": 0.0}, {"params": m.net[2].parameters(), "lr": 0.1}])

    torch.manual_seed(SEED)
    model = Regressor(configure)
    init = copy.deepcopy(model.net)
    make_trainer(max_epochs=1).fit(model, make_loader(regression_data(), batch_size=8))
    assert torch.equal(model.net[0].weight, init[0].weight) and torch.equal(model.net[0].bias, init[0].bias)
    assert not torch.equal(model.net[2].weight, init[2].weight)


# -- the book's complex-valued layer and loss ------------------------------------------------------
class ComplexLinear(nn.Module):
    """Chapter 5's layer, corrected: out_r = x_r W_rᵀ - x_i W_iᵀ + b_r, out_i = x_r W_iᵀ + x_i W_rᵀ + b_i."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        scale = 1.0 / math.sqrt(in_features)
        self.weight_r = nn.Parameter(torch.randn(out_features, in_features) * scale)
        self.weight_i = nn.Parameter(torch.randn(out_features, in_features) * scale)
        self.bias_r = nn.Parameter(torch.randn(out_features) * scale)
        self.bias_i = nn.Parameter(torch.randn(out_features) * scale)

    def forward(self, x_r: torch.Tensor, x_i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out_r = F.linear(x_r, self.weight_r, self.bias_r) - F.linear(x_i, self.weight_i)
        out_i = F.linear(x_r, self.weight_i, self.bias_i) + F.linear(x_i, self.weight_r)
        return out_r, out_i


class ComplexReLU(nn.Module):
    def forward(self, x_r: torch.Tensor, x_i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.relu(x_r), F.relu(x_i)


class ComplexMSELoss(nn.Module):
    """Chapter 5's loss: MSE of the real and of the imaginary part (real part only if ``real_only``)."""

    def __init__(self, real_only: bool = False) -> None:
        super().__init__()
        self.real_only = real_only

    def forward(self, x: tuple[torch.Tensor, torch.Tensor], y: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        if self.real_only:
            return F.mse_loss(x[0], y[0])
        return F.mse_loss(x[0], y[0]) + F.mse_loss(x[1], y[1])


class ComplexNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = ComplexLinear(4, 16)
        self.act = ComplexReLU()
        self.fc2 = ComplexLinear(16, 2)

    def forward(self, x_r: torch.Tensor, x_i: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.fc2(*self.act(*self.fc1(x_r, x_i)))


class ComplexModule(fk.Module):
    def __init__(self, real_only: bool) -> None:
        super().__init__()
        self.net = ComplexNet()
        self.loss_fn = ComplexMSELoss(real_only=real_only)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x_r, x_i, y_r, y_i = batch
        loss = self.loss_fn(self.net(x_r, x_i), (y_r, y_i))
        self.log("train_loss", loss, on_epoch=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x_r, x_i, y_r, y_i = batch
        self.log("val_loss", self.loss_fn(self.net(x_r, x_i), (y_r, y_i)))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.02, momentum=0.9)


def complex_data(n: int, seed: int) -> TensorDataset:
    w = torch.Generator().manual_seed(99)  # one map for every split
    w_r, w_i = torch.randn(2, 4, generator=w) * 0.5, torch.randn(2, 4, generator=w) * 0.5
    g = torch.Generator().manual_seed(seed)
    x_r, x_i = torch.randn(n, 4, generator=g), torch.randn(n, 4, generator=g)
    y_r = x_r @ w_r.T - x_i @ w_i.T  # a complex linear map: (x_r + i x_i)(w_r + i w_i)ᵀ
    y_i = x_r @ w_i.T + x_i @ w_r.T
    return TensorDataset(x_r, x_i, y_r, y_i)


@pytest.mark.parametrize("real_only", [False, True])
def test_complex_mse_loss_module_trains_and_matches_raw_loop(real_only: bool) -> None:
    epochs = 6
    torch.manual_seed(SEED)
    model = ComplexModule(real_only)
    init = copy.deepcopy(model.net)
    val_data = complex_data(32, 1)
    trainer = make_trainer(max_epochs=epochs)
    trainer.fit(
        model, make_loader(complex_data(128, 0), batch_size=8), make_loader(val_data, batch_size=16, shuffle=False)
    )

    x_r, x_i, y_r, y_i = val_data.tensors
    with torch.no_grad():
        before = model.loss_fn(init(x_r, x_i), (y_r, y_i))
        after = model.loss_fn(model.net(x_r, x_i), (y_r, y_i))
    assert after < 0.5 * before, (before, after)
    assert torch.allclose(trainer.callback_metrics["val_loss"], after)  # two equal batches: the mean of means
    assert trainer.callback_metrics["train_loss_epoch"].dtype == torch.float32

    net, loss_fn = copy.deepcopy(init), ComplexMSELoss(real_only)
    opt = torch.optim.SGD(net.parameters(), lr=0.02, momentum=0.9)
    loader = make_loader(complex_data(128, 0), batch_size=8)
    for _ in range(epochs):
        for x_r, x_i, y_r, y_i in loader:
            loss_fn(net(x_r, x_i), (y_r, y_i)).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    # With real_only the last layer's imaginary bias never reaches the loss: no grad, no update.
    assert_same_weights(model.net, net, init, unchanged=("fc2.bias_i",) if real_only else ())


# -- LBFGS: a closure optimizer -------------------------------------------------------------------
def lbfgs(params: Any, line_search: str | None) -> torch.optim.LBFGS:
    lr = 1.0 if line_search else 0.1
    return torch.optim.LBFGS(params, lr=lr, max_iter=10, history_size=5, line_search_fn=line_search)


@pytest.mark.parametrize(("line_search", "clip"), [(None, None), ("strong_wolfe", None), ("strong_wolfe", 1.0)])
def test_lbfgs_trains_and_matches_raw_loop(line_search: str | None, clip: float | None) -> None:
    epochs = 3
    data = regression_data(96, seed=2)
    torch.manual_seed(SEED)
    model = Regressor(lambda m: lbfgs(m.parameters(), line_search))
    init = copy.deepcopy(model.net)
    trainer = make_trainer(max_epochs=epochs, gradient_clip_val=clip)
    trainer.fit(model, make_loader(data, batch_size=32))  # 3 shuffled batches an epoch

    net = copy.deepcopy(init)
    opt = lbfgs(net.parameters(), line_search)
    loader = make_loader(data, batch_size=32)
    evaluations, clipped = 0, 0
    for _ in range(epochs):
        for x, y in loader:

            def closure(x: torch.Tensor = x, y: torch.Tensor = y) -> torch.Tensor:
                nonlocal evaluations, clipped
                evaluations += 1
                opt.zero_grad(set_to_none=True)
                loss = F.mse_loss(net(x), y)
                loss.backward()
                if clip:
                    norm = torch.nn.utils.clip_grad_norm_([p for p in net.parameters() if p.grad is not None], clip)
                    clipped += int(norm > clip)
                return loss

            opt.step(closure)

    x_all, y_all = data.tensors
    with torch.no_grad():
        loss_before, loss_after = F.mse_loss(init(x_all), y_all), F.mse_loss(model(x_all), y_all)
    assert loss_after < 0.1 * loss_before, (loss_before, loss_after)
    assert clipped > 0 or not clip, "clipping never engaged"
    assert trainer.global_step == epochs * len(loader)
    assert model.calls == evaluations > trainer.global_step  # the closure re-ran training_step
    assert_same_weights(model.net, net, init)


def test_lbfgs_refuses_gradient_accumulation() -> None:
    model = Regressor(lambda m: lbfgs(m.parameters(), None))
    trainer = make_trainer(max_epochs=1, accumulate_grad_batches=2)
    with pytest.raises(fk.MisconfigurationError, match="accumulate_grad_batches"):
        trainer.fit(model, make_loader(regression_data(), batch_size=16))


# -- every configure_optimizers form ---------------------------------------------------------------
NUM_BATCHES, EPOCHS = 6, 4  # 24 optimizer steps


def step_lr(opt: Optimizer) -> torch.optim.lr_scheduler.StepLR:
    return torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.9)


def plateau(opt: Optimizer) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
    return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, patience=0)


def sgd(m: nn.Module) -> torch.optim.SGD:
    return torch.optim.SGD(m.parameters(), lr=0.01)


# Each form: configure(opt) -> what configure_optimizers returns (opt and sched are built
# first so the test can hold them), the scheduler factory (None: no scheduler), and the
# expected scheduler count as a function of (global_step, epochs finished).
FORMS: dict[str, tuple[Callable[[Any, Any], Any], Any, Callable[[int, int], int] | None, dict[str, Any]]] = {
    "optimizer": (lambda o, s: o, None, None, {}),
    "list": (lambda o, s: [o], None, None, {}),
    "tuple-of-lists": (lambda o, s: ([o], [s]), step_lr, lambda g, e: e, {"interval": "epoch"}),
    "tuple-with-one-scheduler": (lambda o, s: ([o], s), step_lr, lambda g, e: e, {"interval": "epoch"}),
    "dict-optimizer-only": (lambda o, s: {"optimizer": o}, None, None, {}),
    "dict-scheduler": (
        lambda o, s: {"optimizer": o, "lr_scheduler": s},
        step_lr,
        lambda g, e: e,
        {"interval": "epoch"},
    ),
    "dict-config-step": (
        lambda o, s: {"optimizer": o, "lr_scheduler": {"scheduler": s, "interval": "step"}},
        step_lr,
        lambda g, e: g,
        {"interval": "step", "frequency": 1},
    ),
    "dict-config-step-frequency-2": (
        lambda o, s: {"optimizer": o, "lr_scheduler": {"scheduler": s, "interval": "step", "frequency": 2}},
        step_lr,
        lambda g, e: g // 2,
        {"interval": "step", "frequency": 2},
    ),
    "dict-config-epoch-frequency-2-named": (
        lambda o, s: {
            "optimizer": o,
            "lr_scheduler": {"scheduler": s, "interval": "epoch", "frequency": 2, "name": "my_lr"},
        },
        step_lr,
        lambda g, e: e // 2,
        {"interval": "epoch", "frequency": 2, "name": "my_lr"},
    ),
    "dict-plateau-top-level-monitor": (
        lambda o, s: {"optimizer": o, "lr_scheduler": s, "monitor": "val_loss"},
        plateau,
        lambda g, e: e,
        {"monitor": "val_loss", "interval": "epoch"},
    ),
    "dict-plateau-config-monitor-strict": (
        lambda o, s: {"optimizer": o, "lr_scheduler": {"scheduler": s, "monitor": "val_loss", "strict": True}},
        plateau,
        lambda g, e: e,
        {"monitor": "val_loss", "strict": True},
    ),
    "dict-plateau-missing-metric-not-strict": (
        lambda o, s: {"optimizer": o, "lr_scheduler": {"scheduler": s, "monitor": "nope", "strict": False}},
        plateau,
        lambda g, e: 0,
        {"monitor": "nope", "strict": False},
    ),
    "list-of-one-dict": (
        lambda o, s: [{"optimizer": o, "lr_scheduler": {"scheduler": s, "interval": "step"}}],
        step_lr,
        lambda g, e: g,
        {"interval": "step"},
    ),
}


class FormModule(Regressor):
    """Records, at every training batch, what the module sees and how often the scheduler stepped."""

    def __init__(self, form: Callable[[Any, Any], Any], make_sched: Any) -> None:
        super().__init__(self._build, net=nn.Linear(6, 1))
        self.form, self.make_sched = form, make_sched
        self.opt: Any = None
        self.sched: Any = None
        self.seen: list[tuple[Any, Any]] = []
        self.history: list[tuple[int, int, int]] = []  # (global_step, current_epoch, scheduler steps so far)

    @staticmethod
    def _build(m: FormModule) -> Any:
        m.opt = sgd(m)
        m.sched = m.make_sched(m.opt) if m.make_sched is not None else None
        return m.form(m.opt, m.sched)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.seen.append((self.optimizers(), self.lr_schedulers()))
        if self.sched is not None:
            self.history.append((self.global_step, self.current_epoch, self.sched.last_epoch))
        return super().training_step(batch, batch_idx)


@pytest.mark.parametrize("name", list(FORMS))
def test_configure_optimizers_form(name: str) -> None:
    form, make_sched, expected_steps, config_fields = FORMS[name]
    model = FormModule(form, make_sched)
    trainer = make_trainer(max_epochs=EPOCHS)
    trainer.fit(
        model,
        make_loader(regression_data(NUM_BATCHES * 4), batch_size=4),
        make_loader(regression_data(8, seed=1), batch_size=4, shuffle=False),
    )
    assert trainer.global_step == NUM_BATCHES * EPOCHS

    # what configure_optimizers gave is what the trainer holds and the module sees
    assert trainer.optimizers == [model.opt] and trainer.optimizers[0] is model.opt
    opt_seen, sched_seen = model.seen[0]
    assert isinstance(opt_seen, FitkitOptimizer) and opt_seen.optimizer is model.opt
    assert opt_seen.param_groups is model.opt.param_groups  # attributes forward to the wrapped optimizer
    assert all(o is opt_seen for o, _ in model.seen), "self.optimizers() should return the same wrapper each time"
    assert model.optimizers().optimizer is model.opt
    if make_sched is None:
        assert sched_seen is None and model.lr_schedulers() is None and trainer.lr_scheduler_configs == []
        return
    assert sched_seen is model.sched and model.lr_schedulers() is model.sched
    (config,) = trainer.lr_scheduler_configs
    assert config.scheduler is model.sched
    for key, value in config_fields.items():
        assert getattr(config, key) == value, (key, getattr(config, key))

    # scheduler steps: how many, and when (before each batch, counted from finished steps and epochs)
    assert expected_steps is not None
    for global_step, epoch, count in model.history:
        assert count == expected_steps(global_step, epoch), (global_step, epoch, count)
    assert model.sched.last_epoch == expected_steps(trainer.global_step, EPOCHS)


def test_frequency_two_steps_half_as_often() -> None:
    counts = {}
    for name in (
        "dict-config-step",
        "dict-config-step-frequency-2",
        "dict-scheduler",
        "dict-config-epoch-frequency-2-named",
    ):
        form, make_sched, _, _ = FORMS[name]
        model = FormModule(form, make_sched)
        make_trainer(max_epochs=EPOCHS).fit(model, make_loader(regression_data(NUM_BATCHES * 4), batch_size=4))
        counts[name] = model.sched.last_epoch
    assert counts["dict-config-step"] == NUM_BATCHES * EPOCHS == 2 * counts["dict-config-step-frequency-2"]
    assert counts["dict-scheduler"] == EPOCHS == 2 * counts["dict-config-epoch-frequency-2-named"]


def test_plateau_missing_metric_strict_raises() -> None:
    model = FormModule(lambda o, s: {"optimizer": o, "lr_scheduler": {"scheduler": s, "monitor": "nope"}}, plateau)
    with pytest.raises(fk.MisconfigurationError, match="nope"):
        make_trainer(max_epochs=1).fit(model, make_loader(regression_data(8), batch_size=4))


def test_two_optimizers_need_manual_optimization() -> None:
    model = Regressor(lambda m: [sgd(m.net), sgd(m.net)])
    with pytest.raises(fk.MisconfigurationError, match="automatic_optimization"):
        make_trainer(max_epochs=1).fit(model, make_loader(regression_data(8), batch_size=4))


# -- manual optimization: lists of dicts and tuples, schedulers stepped by the user -------------------
class TwoHeads(fk.Module):
    """Two optimizers over two layers; the user steps the schedulers (fitkit must not)."""

    def __init__(self, form: str) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.a, self.b = nn.Linear(6, 1), nn.Linear(6, 1)
        self.form = form
        self.made: dict[str, Any] = {}
        self.seen: list[tuple[Any, Any]] = []

    def configure_optimizers(self) -> Any:
        oa, ob = sgd(self.a), sgd(self.b)
        sa, sb = step_lr(oa), step_lr(ob)
        self.made = {"opts": [oa, ob], "scheds": [sa, sb], "steps": {id(oa): 0, id(ob): 0}}
        for opt in (oa, ob):
            opt.register_step_post_hook(self._count_step)
        if self.form == "list-of-dicts":
            return [
                {"optimizer": oa, "lr_scheduler": {"scheduler": sa, "interval": "step"}},
                {"optimizer": ob, "lr_scheduler": sb},
            ]
        if self.form == "list-of-dicts-one-scheduler":
            self.made["scheds"] = [sa]
            return [{"optimizer": oa, "lr_scheduler": sa}, {"optimizer": ob}]
        if self.form == "tuple":
            return [oa, ob], [sa, sb]
        self.made["scheds"] = []
        return [oa, ob]

    def _count_step(self, opt: Optimizer, args: Any, kwargs: Any) -> None:
        self.made["steps"][id(opt)] += 1

    def training_step(self, batch: Any, batch_idx: int) -> None:
        opts, scheds = self.optimizers(), self.lr_schedulers()
        self.seen.append((opts, scheds))
        x, y = batch
        for opt, layer in zip(opts, (self.a, self.b), strict=True):
            opt.zero_grad()
            self.manual_backward(F.mse_loss(layer(x), y))
            opt.step()
        # the user's schedule: the first every batch, the second at each epoch's end
        sched_list = [] if scheds is None else scheds if isinstance(scheds, list) else [scheds]
        if sched_list:
            sched_list[0].step()
        if len(sched_list) > 1 and batch_idx == self.trainer.num_training_batches - 1:
            sched_list[1].step()


@pytest.mark.parametrize("form", ["list-of-dicts", "list-of-dicts-one-scheduler", "tuple", "list"])
def test_manual_optimization_forms(form: str) -> None:
    model = TwoHeads(form)
    a0, b0 = model.a.weight.clone(), model.b.weight.clone()
    trainer = make_trainer(max_epochs=EPOCHS)
    trainer.fit(model, make_loader(regression_data(NUM_BATCHES * 4), batch_size=4))

    oa, ob = model.made["opts"]
    scheds = model.made["scheds"]
    opts_seen, scheds_seen = model.seen[0]
    assert isinstance(opts_seen, list) and [o.optimizer for o in opts_seen] == [oa, ob]
    assert all(isinstance(o, FitkitOptimizer) for o in opts_seen)
    assert trainer.optimizers == [oa, ob]
    if not scheds:
        assert scheds_seen is None
    elif len(scheds) == 1:
        assert scheds_seen is scheds[0]
    else:
        assert scheds_seen == scheds
    # fitkit left the schedulers to the user: exactly the user's steps, no more
    if scheds:
        assert scheds[0].last_epoch == NUM_BATCHES * EPOCHS
        assert oa.param_groups[0]["lr"] == pytest.approx(0.01 * 0.9 ** (NUM_BATCHES * EPOCHS))
    if len(scheds) > 1:
        assert scheds[1].last_epoch == EPOCHS
        assert ob.param_groups[0]["lr"] == pytest.approx(0.01 * 0.9**EPOCHS)
    if form == "list-of-dicts":
        assert [c.interval for c in trainer.lr_scheduler_configs] == ["step", "epoch"]
    # both optimizers stepped once per batch
    assert model.made["steps"] == {id(oa): NUM_BATCHES * EPOCHS, id(ob): NUM_BATCHES * EPOCHS}
    assert not torch.equal(model.a.weight, a0) and not torch.equal(model.b.weight, b0)
