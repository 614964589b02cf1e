"""``torch.compile`` with the Trainer: compiled submodules, compiled Modules, clean checkpoints.

The tests compile with a counting backend (which runs the captured graph eagerly) or
``backend="eager"``: they check fitkit's handling of compiled modules, not inductor's
code generation, and stay fast (inductor's first C++ build takes ~20 s here).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch._dynamo
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fitkit as fk
from fitkit.testing import quiet_trainer
from fitkit.utilities.compile import (
    clean_key,
    from_compiled,
    is_compiled,
    load_state_dict,
    to_uncompiled,
    unwrap_compiled,
)
from fitkit.utilities.exceptions import FitkitTypeError


class CountingBackend:
    """A torch.compile backend that counts the graphs it is given and runs them eagerly."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: Any) -> Callable[..., Any]:
        self.graphs += 1
        return gm.forward


class Net(fk.Module):
    def __init__(self, compile_net: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1))
        if compile_net:
            self.net = torch.compile(self.net, backend="eager")  # type: ignore[assignment]
        self.hooks: list[str] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self(x), y))

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("test_loss", nn.functional.mse_loss(self(x), y))

    def predict_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self(batch[0])

    def on_train_epoch_end(self) -> None:
        self.hooks.append("on_train_epoch_end")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(16, 6, generator=g), torch.randn(16, 1, generator=g)), batch_size=4)


def trainer(**kwargs: Any) -> fk.Trainer:
    return quiet_trainer(**{"max_epochs": 2, "limit_val_batches": 2, **kwargs})


def plain_weights(module: nn.Module) -> dict[str, torch.Tensor]:
    return {clean_key(k): v.detach().clone() for k, v in module.state_dict().items()}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> None:
    torch._dynamo.reset()


# -- a compiled submodule ------------------------------------------------------------------
def test_compiled_submodule_trains_like_eager_and_saves_clean_names() -> None:
    torch.manual_seed(0)
    eager = Net()
    compiled = Net(compile_net=True)
    compiled.net._orig_mod.load_state_dict(eager.net.state_dict())
    trainer().fit(eager, loader(), loader())
    t = trainer()
    t.fit(compiled, loader(), loader())
    assert_same(plain_weights(compiled), plain_weights(eager))  # backend="eager": same arithmetic
    t.save_checkpoint("sub.ckpt")
    saved = torch.load("sub.ckpt", weights_only=True)["state_dict"]
    assert list(saved) == ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"]


def test_checkpoint_of_compiled_submodule_loads_into_both_kinds() -> None:
    compiled = Net(compile_net=True)
    t = trainer()
    t.fit(compiled, loader())
    t.save_checkpoint("sub.ckpt")
    expected = plain_weights(compiled)

    uncompiled = Net.load_from_checkpoint("sub.ckpt", compile_net=False)
    assert not is_compiled(uncompiled.net)
    assert_same(plain_weights(uncompiled), expected)

    recompiled = Net.load_from_checkpoint("sub.ckpt")  # hparams say compile_net=True
    assert is_compiled(recompiled.net)
    assert_same(plain_weights(recompiled), expected)

    # Resuming restores the module through the strategy: both kinds again.
    for model in (Net(), Net(compile_net=True)):
        t2 = trainer(max_epochs=3)
        t2.fit(model, loader(), ckpt_path="sub.ckpt")
        assert t2.current_epoch == 3


# -- a compiled Module ---------------------------------------------------------------------------
def test_compiled_module_is_unwrapped_and_runs_compiled_forward() -> None:
    backend = CountingBackend()
    model = Net()
    compiled = torch.compile(model, backend=backend)
    t = trainer()
    t.fit(compiled, loader(), loader())
    assert t.module is model  # hooks, self.log and checkpoints see the fitkit.Module
    assert model.hooks == ["on_train_epoch_end", "on_train_epoch_end"]
    assert backend.graphs >= 1  # the step called self(x): the compiled forward ran
    assert "train_loss" in t.callback_metrics and "val_loss" in t.callback_metrics
    t.save_checkpoint("whole.ckpt")
    assert list(torch.load("whole.ckpt", weights_only=True)["state_dict"]) == [
        "net.0.weight",
        "net.0.bias",
        "net.2.weight",
        "net.2.bias",
    ]
    # validate/test/predict take the compiled model too.
    assert t.test(compiled, loader(), verbose=False)[0]["test_loss"] >= 0
    preds = t.predict(compiled, loader())
    assert preds is not None and len(preds) == 4
    assert t.module is model


def test_compiled_module_trains_like_eager() -> None:
    torch.manual_seed(0)
    eager = Net()
    model = copy.deepcopy(eager)
    trainer().fit(eager, loader())
    trainer().fit(torch.compile(model, backend="eager"), loader())
    assert_same(plain_weights(model), plain_weights(eager))


def test_compiled_module_checkpoint_loads_uncompiled_and_compiled() -> None:
    model = Net()
    t = trainer()
    t.fit(torch.compile(model, backend="eager"), loader())
    t.save_checkpoint("whole.ckpt")
    expected = plain_weights(model)

    assert_same(plain_weights(Net.load_from_checkpoint("whole.ckpt")), expected)
    compiled_again = torch.compile(Net.load_from_checkpoint("whole.ckpt"), backend="eager")
    assert_same(plain_weights(compiled_again), expected)

    resumed_eager = Net()
    t2 = trainer(max_epochs=3)
    t2.fit(resumed_eager, loader(), ckpt_path="whole.ckpt")
    fresh = Net()
    t3 = trainer(max_epochs=3)
    t3.fit(torch.compile(fresh, backend="eager"), loader(), ckpt_path="whole.ckpt")
    assert t2.global_step == t3.global_step == 12
    assert_same(plain_weights(fresh), plain_weights(resumed_eager))


def test_from_compiled_is_idempotent_and_to_uncompiled_restores_forward() -> None:
    backend = CountingBackend()
    model = Net()
    compiled = torch.compile(model, backend=backend)
    assert from_compiled(compiled) is model
    compiled_forward = model.__dict__["forward"]
    assert from_compiled(compiled) is model and model.__dict__["forward"] is compiled_forward
    x = torch.randn(2, 6)
    model(x)
    assert backend.graphs == 1
    assert to_uncompiled(compiled) is model
    assert "forward" not in model.__dict__ and "_compiler_ctx" not in model.__dict__
    model(x)
    assert backend.graphs == 1  # eager again
    assert to_uncompiled(model) is model  # never compiled: unchanged


def test_compiled_non_fitkit_module_is_refused() -> None:
    net = torch.compile(nn.Linear(2, 2), backend="eager")
    assert unwrap_compiled(net) is net
    with pytest.raises(FitkitTypeError, match="`model='OptimizedModule'` is not valid: it does not subclass"):
        trainer().fit(net, loader())  # type: ignore[arg-type]
    with pytest.raises(FitkitTypeError, match=r"torch.compile\(Linear\)"):
        from_compiled(net)
    with pytest.raises(FitkitTypeError, match=r"not the result of torch\.compile"):
        from_compiled(Net())


# -- state-dict names ------------------------------------------------------------------------------
def test_clean_key_drops_whole_segments_only() -> None:
    assert clean_key("net._orig_mod.0.weight") == "net.0.weight"
    assert clean_key("_orig_mod.net._orig_mod.bias") == "net.bias"
    assert clean_key("my_orig_mod.weight") == "my_orig_mod.weight"


def test_load_state_dict_maps_names_both_ways_and_stays_strict() -> None:
    plain = nn.Sequential(nn.Linear(2, 2))
    holder = nn.Module()
    holder.net = torch.compile(nn.Sequential(nn.Linear(2, 2)), backend="eager")
    load_state_dict(holder, {f"net.{k}": v for k, v in plain.state_dict().items()})
    assert torch.equal(holder.net._orig_mod[0].weight, plain[0].weight)
    load_state_dict(plain, {f"_orig_mod.{k}": torch.zeros_like(v) for k, v in plain.state_dict().items()})
    assert not plain[0].weight.any()
    with pytest.raises(RuntimeError, match="Missing key"):
        load_state_dict(holder, {"net.0.weight": torch.zeros(2, 2)})
    assert load_state_dict(holder, {"net.0.weight": torch.zeros(2, 2)}, strict=False).missing_keys == [
        "net._orig_mod.0.bias"
    ]
