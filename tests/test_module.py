"""``fitkit.Module``: ``save_hyperparameters``/``hparams`` and the properties a model reads."""

from __future__ import annotations

import argparse
import copy
import pickle
from typing import Any

import pytest
import torch
from torch import nn

import fitkit as fk
from fitkit.hparams import AttributeDict
from fitkit.testing import BoringModule, RandomDataset, quiet_trainer
from fitkit.trainer.optimization import Optimizer


def _trainer(**kwargs: Any) -> fk.Trainer:
    defaults: dict[str, Any] = dict(
        max_epochs=1,
        num_sanity_val_steps=0,
        limit_train_batches=3,
        limit_val_batches=1,
    )
    return quiet_trainer(**{**defaults, **kwargs})


# -- save_hyperparameters --------------------------------------------------------------------------------
class AllArgs(fk.Module):
    def __init__(self, lr: float = 0.1, width: int = 8, act: str = "relu") -> None:
        super().__init__()
        self.save_hyperparameters()


# At module level so that instances pickle.
class Picklable(AllArgs):
    pass


def test_save_all_init_arguments() -> None:
    assert AllArgs().hparams == {"lr": 0.1, "width": 8, "act": "relu"}
    assert AllArgs(0.5, act="gelu").hparams == {"lr": 0.5, "width": 8, "act": "gelu"}


def test_save_a_named_subset() -> None:
    class Subset(fk.Module):
        def __init__(self, lr: float = 0.1, width: int = 8, debug: bool = False) -> None:
            super().__init__()
            self.save_hyperparameters("lr", "width")

    assert Subset(lr=0.3).hparams == {"lr": 0.3, "width": 8}


def test_save_a_single_named_argument() -> None:
    class One(fk.Module):
        def __init__(self, lr: float = 0.1, width: int = 8) -> None:
            super().__init__()
            self.save_hyperparameters("width")

    assert One(width=4).hparams == {"width": 4}


def test_unknown_name_lists_the_init_arguments() -> None:
    class Typo(fk.Module):
        def __init__(self, lr: float = 0.1) -> None:
            super().__init__()
            self.save_hyperparameters("lr", "l2")

    with pytest.raises(fk.MisconfigurationError, match=r"\['l2'\].*names among \['lr'\]"):
        Typo()


@pytest.mark.parametrize("ignore", ["backbone", ["backbone"], ("backbone", "unused")])
def test_ignore(ignore: Any) -> None:
    class WithBackbone(fk.Module):
        def __init__(self, backbone: nn.Module, lr: float = 0.1) -> None:
            super().__init__()
            self.save_hyperparameters(ignore=ignore)
            self.backbone = backbone

    model = WithBackbone(nn.Linear(2, 2), lr=0.2)
    assert model.hparams == {"lr": 0.2}


def test_ignore_with_named_subset() -> None:
    class Both(fk.Module):
        def __init__(self, a: int = 1, b: int = 2, c: int = 3) -> None:
            super().__init__()
            self.save_hyperparameters("a", "b", ignore="b")

    assert Both().hparams == {"a": 1}


def test_save_a_dict() -> None:
    class FromDict(fk.Module):
        def __init__(self, config: dict[str, Any]) -> None:
            super().__init__()
            self.save_hyperparameters(config, ignore="secret")

    config = {"lr": 0.1, "layers": [4, 4], "secret": "x"}
    model = FromDict(config)
    assert model.hparams == {"lr": 0.1, "layers": [4, 4]}
    assert model.hparams.layers == [4, 4]


def test_save_a_namespace() -> None:
    class FromArgs(fk.Module):
        def __init__(self, args: argparse.Namespace) -> None:
            super().__init__()
            self.save_hyperparameters(args)

    model = FromArgs(argparse.Namespace(lr=0.01, epochs=3))
    assert model.hparams == {"lr": 0.01, "epochs": 3}


def test_save_something_that_is_not_a_mapping() -> None:
    class Bad(fk.Module):
        def __init__(self) -> None:
            super().__init__()
            self.save_hyperparameters(5)

    with pytest.raises(fk.FitkitTypeError, match=r"`save_hyperparameters\(\*args\)=5` is not valid"):
        Bad()


def test_kwargs_and_keyword_only_arguments() -> None:
    class Flexible(fk.Module):
        def __init__(self, lr: float = 0.1, *, depth: int = 2, **kwargs: Any) -> None:
            super().__init__()
            self.save_hyperparameters()

    assert Flexible(0.3, depth=5, dropout=0.5, name="x").hparams == {
        "lr": 0.3,
        "depth": 5,
        "dropout": 0.5,
        "name": "x",
    }
    assert Flexible().hparams == {"lr": 0.1, "depth": 2}


class Parent(fk.Module):
    def __init__(self, lr: float = 0.1, width: int = 8) -> None:
        super().__init__()
        self.save_hyperparameters()


class Child(Parent):
    def __init__(self, lr: float = 0.5, depth: int = 3) -> None:
        # The parent receives a derived value; the child's own argument is what the user set.
        super().__init__(lr=lr * 2)
        self.depth = depth


class GrandChild(Child):
    def __init__(self, lr: float = 0.7, depth: int = 4, extra: str = "z") -> None:
        super().__init__(lr=lr, depth=depth + 1)


def test_subclass_chain_child_values_win() -> None:
    assert Parent().hparams == {"lr": 0.1, "width": 8}
    # the parent's defaults fill in, the most derived class's values win
    assert Child().hparams == {"lr": 0.5, "width": 8, "depth": 3}
    assert Child(lr=0.9).hparams == {"lr": 0.9, "width": 8, "depth": 3}
    assert GrandChild(depth=10).hparams == {"lr": 0.7, "width": 8, "depth": 10, "extra": "z"}


def test_child_saves_when_parent_does_not() -> None:
    class Base(fk.Module):
        def __init__(self, hidden: int = 4) -> None:
            super().__init__()
            self.layer = nn.Linear(hidden, 1)

    class Derived(Base):
        def __init__(self, hidden: int = 16, lr: float = 0.1) -> None:
            super().__init__(hidden)
            self.save_hyperparameters()

    assert Derived(hidden=8).hparams == {"hidden": 8, "lr": 0.1}


def test_a_module_built_inside_another_keeps_its_own_arguments() -> None:
    class Inner(fk.Module):
        def __init__(self, size: int = 2) -> None:
            super().__init__()
            self.save_hyperparameters()

    class Outer(fk.Module):
        def __init__(self, hidden: int = 4) -> None:
            super().__init__()
            self.inner = Inner(size=hidden + 1)
            self.save_hyperparameters()

    outer = Outer(hidden=6)
    assert outer.inner.hparams == {"size": 7}
    assert outer.hparams == {"hidden": 6}


def test_hparams_attribute_access() -> None:
    hp = AllArgs(lr=0.25).hparams
    assert isinstance(hp, AttributeDict) and isinstance(hp, dict)
    assert hp.lr == hp["lr"] == 0.25
    hp.momentum = 0.9
    assert hp["momentum"] == 0.9
    with pytest.raises(AttributeError, match=r"No hyperparameter 'nope'; saved: \['act', 'lr', 'momentum', 'width'\]"):
        _ = hp.nope


def test_hparams_empty_by_default_and_stays_out_of_the_state_dict() -> None:
    model = BoringModule()
    assert model.hparams == {}
    saved = AllArgs()
    assert set(saved.state_dict()) == set()
    assert "hparams" not in dict(saved.named_modules()) and not list(saved.parameters())


def test_hparams_survive_copy_and_pickle() -> None:
    model = Picklable(lr=0.3)
    assert copy.deepcopy(model).hparams == {"lr": 0.3, "width": 8, "act": "relu"}
    restored = pickle.loads(pickle.dumps(model))
    assert restored.hparams.lr == 0.3


def test_hparams_are_usable_in_configure_optimizers() -> None:
    class UsesHparams(BoringModule):
        def __init__(self, lr: float = 0.05) -> None:
            super().__init__()
            self.save_hyperparameters()

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    model = UsesHparams(lr=0.02)
    t = _trainer()
    t.fit(model)
    assert t.optimizers[0].param_groups[0]["lr"] == 0.02


# -- properties -------------------------------------------------------------------------------------------
def test_trainer_property() -> None:
    model = BoringModule()
    with pytest.raises(fk.FitkitRuntimeError, match="BoringModule is not attached to a Trainer"):
        _ = model.trainer
    t = _trainer()
    t.fit(model)
    assert model.trainer is t
    model.trainer = None  # type: ignore[assignment]
    with pytest.raises(RuntimeError):
        _ = model.trainer


def test_device_property() -> None:
    assert BoringModule().device == torch.device("cpu")

    class Empty(fk.Module):
        pass

    assert Empty().device == torch.device("cpu")

    class BufferOnly(fk.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("scale", torch.ones(1, device="meta"))

    assert BufferOnly().device == torch.device("meta")
    assert BoringModule().to("meta").device == torch.device("meta")


def test_epoch_and_step_when_detached() -> None:
    model = BoringModule()
    assert model.current_epoch == 0
    assert model.global_step == 0
    assert model.global_rank == 0 and model.local_rank == 0


def test_epoch_and_step_during_fit() -> None:
    seen: list[tuple[int, int]] = []

    class Records(BoringModule):
        def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
            seen.append((self.current_epoch, self.global_step))
            return super().training_step(batch, batch_idx)

    model = Records()
    t = _trainer(max_epochs=2, limit_train_batches=3)
    t.fit(model)
    assert seen == [(0, 0), (0, 1), (0, 2), (1, 3), (1, 4), (1, 5)]
    assert (model.current_epoch, model.global_step) == (2, 6) == (t.current_epoch, t.global_step)


def test_global_step_counts_optimizer_steps_with_accumulation() -> None:
    model = BoringModule()
    t = _trainer(max_epochs=1, limit_train_batches=5, accumulate_grad_batches=2)
    t.fit(model)
    assert model.global_step == 3  # after batches 2, 4 and the epoch's last batch


def test_automatic_optimization_property() -> None:
    model = BoringModule()
    assert model.automatic_optimization is True
    model.automatic_optimization = 0  # type: ignore[assignment]
    assert model.automatic_optimization is False


def test_optimizers_and_lr_schedulers_during_fit() -> None:
    seen: dict[str, Any] = {}

    class Inspects(BoringModule):
        def configure_optimizers(self) -> Any:
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 1)}

        def on_train_start(self) -> None:
            seen["opt"] = self.optimizers()
            seen["sched"] = self.lr_schedulers()

    t = _trainer()
    t.fit(Inspects())
    assert isinstance(seen["opt"], Optimizer)
    assert seen["opt"].optimizer is t.optimizers[0]
    assert seen["opt"].param_groups is t.optimizers[0].param_groups  # attributes pass through
    assert isinstance(seen["sched"], torch.optim.lr_scheduler.StepLR)


def test_several_optimizers_in_manual_optimization() -> None:
    seen: dict[str, Any] = {}

    class Manual(BoringModule):
        def __init__(self) -> None:
            super().__init__()
            self.automatic_optimization = False

        def configure_optimizers(self) -> Any:
            return [torch.optim.SGD(self.parameters(), lr=0.1), torch.optim.Adam(self.parameters())]

        def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
            opts = self.optimizers()
            seen["opts"] = opts
            seen["sched"] = self.lr_schedulers()
            loss = self.loss(self(batch))
            self.manual_backward(loss)
            for opt in opts:
                opt.step()
                opt.zero_grad()
            return loss

    t = _trainer()
    t.fit(Manual())
    assert [type(o.optimizer) for o in seen["opts"]] == [torch.optim.SGD, torch.optim.Adam]
    assert seen["sched"] is None
    assert t.global_step == 3  # manual optimization counts training batches


def test_default_predict_step_calls_forward() -> None:
    model = BoringModule()
    batch = torch.randn(2, 32)
    assert torch.equal(model.predict_step(batch, 0), model(batch))
    preds = _trainer(limit_predict_batches=2).predict(model)
    assert preds is not None and len(preds) == 2 and preds[0].shape == (2, 2)


def test_clip_gradients_by_norm_and_value() -> None:
    model = BoringModule()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    (model(torch.randn(4, 32) * 100).sum()).backward()
    model.clip_gradients(opt, gradient_clip_val=0.5, gradient_clip_algorithm="value")
    assert all(p.grad.abs().max() <= 0.5 for p in model.parameters())
    model.clip_gradients(opt, gradient_clip_val=0.1, gradient_clip_algorithm="norm")
    norm = torch.norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert norm <= 0.1 + 1e-6
    before = [p.grad.clone() for p in model.parameters()]
    model.clip_gradients(opt, gradient_clip_val=None)
    assert all(torch.equal(b, p.grad) for b, p in zip(before, model.parameters(), strict=True))


def test_module_is_an_nn_module() -> None:
    model = BoringModule()
    assert isinstance(model, nn.Module)
    assert [n for n, _ in model.named_parameters()] == ["layer.weight", "layer.bias"]
    out = model(RandomDataset(32, 2).data)
    assert out.shape == (2, 2)
