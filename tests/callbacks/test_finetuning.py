"""BackboneFinetuning: the backbone is frozen, joins the optimizer at the unfreeze epoch
with the expected LR per epoch, BatchNorm follows train_bn, and a resumed run (at an
epoch end or inside the unfreeze epoch) ends equal to the uninterrupted one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from _train_cb_helpers import CollectLogger, SaveAtEpochEnd, trainer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fitkit as fk
from fitkit.callbacks import BackboneFinetuning, BaseFinetuning, LearningRateMonitor
from fitkit.checkpoint import check_plain


class Transfer(fk.Module):
    def __init__(self, bn: bool = False, all_params: bool = False) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8) if bn else nn.Identity(), nn.Tanh())
        self.head = nn.Linear(8, 1)
        self.all_params = all_params
        self.bn_modes: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        self.bn_modes.append(self.backbone[1].training)
        x, y = batch
        return nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self) -> Any:
        params = self.parameters() if self.all_params else [p for p in self.parameters() if p.requires_grad]
        return torch.optim.SGD(params, lr=0.1, momentum=0.9)


def data(batches: int = 2) -> DataLoader[Any]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4 * batches, 4, generator=g)
    return DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)


class Record(fk.Callback):
    """At each epoch end: every param group's LR, and a copy of the backbone's first weight."""

    def __init__(self) -> None:
        self.lrs: list[list[float]] = []
        self.weights: list[torch.Tensor] = []
        self.requires_grad: list[bool] = []

    def on_train_epoch_end(self, trainer: fk.Trainer, module: Any) -> None:
        self.lrs.append([round(g["lr"], 10) for g in trainer.optimizers[0].param_groups])
        self.weights.append(module.backbone[0].weight.detach().clone())
        self.requires_grad.append(module.backbone[0].weight.requires_grad)


def fit(model: Transfer, epochs: int, loader: Any = None, **kwargs: Any) -> Record:
    record = Record()
    trainer(max_epochs=epochs, callbacks=[BackboneFinetuning(**kwargs), record]).fit(model, loader or data())
    return record


def test_frozen_then_unfrozen_with_growing_lr() -> None:
    record = fit(Transfer(), 6, unfreeze_backbone_at_epoch=1)
    assert record.lrs == [[0.1], [0.1, 0.01], [0.1, 0.02], [0.1, 0.04], [0.1, 0.08], [0.1, 0.1]]  # aligned at 0.1
    assert record.requires_grad == [False, True, True, True, True, True]
    assert not torch.equal(record.weights[0], record.weights[1])


def test_backbone_does_not_move_while_frozen() -> None:
    torch.manual_seed(0)
    model = Transfer()
    before = model.backbone[0].weight.detach().clone()
    record = fit(model, 3, unfreeze_backbone_at_epoch=2)
    assert torch.equal(record.weights[0], before) and torch.equal(record.weights[1], before)
    assert not torch.equal(record.weights[2], before)


def test_initial_lr_lambda_and_no_alignment() -> None:
    record = fit(
        Transfer(),
        4,
        unfreeze_backbone_at_epoch=0,
        backbone_initial_lr=0.05,
        lambda_func=lambda epoch: 1.5,
        should_align=False,
    )
    assert record.lrs == [[0.1, 0.05], [0.1, 0.075], [0.1, 0.1125], [0.1, 0.16875]]


def test_ratio_of_the_first_group_lr() -> None:
    record = fit(Transfer(), 2, unfreeze_backbone_at_epoch=1, backbone_initial_ratio_lr=0.5)
    assert record.lrs == [[0.1], [0.1, 0.05]]


@pytest.mark.parametrize("train_bn", [False, True])
def test_batch_norm_follows_train_bn(train_bn: bool) -> None:
    model = Transfer(bn=True)
    bn = model.backbone[1]
    running = bn.running_mean.clone()
    fit(model, 3, unfreeze_backbone_at_epoch=1, train_bn=train_bn)
    assert model.bn_modes == [train_bn] * 6  # 2 batches x 3 epochs, frozen and after unfreezing
    assert bn.weight.requires_grad is train_bn
    assert torch.equal(bn.running_mean, running) is not train_bn


def test_trainable_batch_norm_in_the_optimizer_does_not_warn(recwarn: pytest.WarningsRecorder) -> None:
    fit(Transfer(bn=True), 2, unfreeze_backbone_at_epoch=1, train_bn=True)
    assert not [w for w in recwarn if "already in the optimizer" in str(w.message)]


def test_optimizer_built_with_all_parameters_warns_and_adds_nothing() -> None:
    with pytest.warns(UserWarning, match="already in the optimizer"):
        record = fit(Transfer(all_params=True), 3, unfreeze_backbone_at_epoch=1)
    assert record.lrs == [[0.1], [0.1], [0.1]]  # the head's group is never changed


def test_requires_a_backbone() -> None:
    class NoBackbone(Transfer):
        def __init__(self) -> None:
            super().__init__()
            del self.backbone
            self.backbone = torch.zeros(1)  # not a module

    with pytest.raises(fk.MisconfigurationError, match="backbone"):
        fit(NoBackbone(), 1)


def test_arguments_are_checked() -> None:
    with pytest.raises(fk.MisconfigurationError, match="unfreeze_backbone_at_epoch"):
        BackboneFinetuning(unfreeze_backbone_at_epoch=-1)
    with pytest.raises(fk.FitkitTypeError, match="lambda_func"):
        BackboneFinetuning(lambda_func=2.0)  # type: ignore[arg-type]
    with pytest.raises(fk.MisconfigurationError, match="backbone_initial_lr"):
        BackboneFinetuning(backbone_initial_lr=0.0)


def test_state_dict() -> None:
    callback = BackboneFinetuning(unfreeze_backbone_at_epoch=1)
    trainer(max_epochs=3, callbacks=[callback]).fit(Transfer(), data())
    state = callback.state_dict()
    check_plain(state)
    assert state["last_epoch"] == 2 and state["previous_backbone_lr"] == pytest.approx(0.02)
    [group] = state["added_param_groups"][0]
    assert group == {"params": ["backbone.0.weight", "backbone.0.bias"], "lr": pytest.approx(0.01)}


def _same_run(a: Transfer, b: Transfer, opt_a: Any, opt_b: Any) -> None:
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb), name
    sa, sb = opt_a.state_dict(), opt_b.state_dict()
    assert sa["param_groups"] == sb["param_groups"]
    for key in sa["state"]:
        assert torch.equal(sa["state"][key]["momentum_buffer"], sb["state"][key]["momentum_buffer"])


@pytest.mark.parametrize("saved_epoch", [0, 2])  # before and after the backbone was unfrozen
def test_resume_at_an_epoch_end(tmp_path: Path, saved_epoch: int) -> None:
    loader = data(3)
    torch.manual_seed(0)
    model = Transfer(bn=True)
    path = tmp_path / "mid.ckpt"
    straight = trainer(
        max_epochs=5,
        enable_checkpointing=True,
        callbacks=[BackboneFinetuning(unfreeze_backbone_at_epoch=1), SaveAtEpochEnd(path, saved_epoch)],
    )
    straight.fit(model, loader)

    torch.manual_seed(1)  # other initial weights: everything must come from the checkpoint
    resumed_model = Transfer(bn=True)
    callback = BackboneFinetuning(unfreeze_backbone_at_epoch=1)
    resumed = trainer(max_epochs=5, callbacks=[callback])
    resumed.fit(resumed_model, loader, ckpt_path=path)
    _same_run(model, resumed_model, straight.optimizers[0], resumed.optimizers[0])
    assert callback.previous_backbone_lr == pytest.approx(0.08)
    assert resumed_model.backbone[0].weight.requires_grad


class Crash(Exception):
    pass


class SaveThenCrash(fk.Callback):
    def __init__(self, path: Path, at: int) -> None:
        self.path, self.at = path, at

    def on_train_batch_end(self, trainer: fk.Trainer, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.progress.total_batches == self.at:
            trainer.save_checkpoint(self.path)
            raise Crash


def test_resume_inside_the_unfreeze_epoch(tmp_path: Path) -> None:
    loader = data(3)
    torch.manual_seed(0)
    model = Transfer()
    straight = trainer(max_epochs=4, callbacks=[BackboneFinetuning(unfreeze_backbone_at_epoch=1)])
    straight.fit(model, loader)

    torch.manual_seed(0)
    crashed = Transfer()
    path = tmp_path / "crash.ckpt"
    with pytest.raises(Crash):  # the 2nd batch of epoch 1, the epoch that unfroze the backbone
        trainer(max_epochs=4, callbacks=[BackboneFinetuning(unfreeze_backbone_at_epoch=1), SaveThenCrash(path, 5)]).fit(
            crashed, loader
        )
    resumed_model = Transfer()
    resumed = trainer(max_epochs=4, callbacks=[BackboneFinetuning(unfreeze_backbone_at_epoch=1)])
    resumed.fit(resumed_model, loader, ckpt_path=path)
    assert len(resumed.optimizers[0].param_groups) == 2  # the group was not added twice
    _same_run(model, resumed_model, straight.optimizers[0], resumed.optimizers[0])


def test_lr_monitor_names_the_added_group() -> None:
    logger = CollectLogger()
    monitor = LearningRateMonitor()
    t = trainer(max_epochs=3, logger=logger, log_every_n_steps=2, callbacks=[BackboneFinetuning(1), monitor])
    t.fit(Transfer(), data())
    assert logger.series("lr-SGD") == [(0, 0.1)]
    assert logger.series("lr-SGD/pg2") == [(2, pytest.approx(0.01)), (4, pytest.approx(0.02))]
    assert monitor.lrs["lr-SGD/pg1"] == [0.1, 0.1, 0.1]  # the history moved under the new name


def test_base_finetuning_needs_both_methods() -> None:
    class Half(BaseFinetuning):
        def freeze_before_training(self, module: Any) -> None:
            self.freeze(module.backbone)

    t = trainer(max_epochs=1, callbacks=[Half()])
    with pytest.raises(NotImplementedError, match="finetune_function"):
        t.fit(Transfer(), data())


def test_static_helpers() -> None:
    net = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.BatchNorm1d(2), nn.Linear(2, 1)))
    assert [type(m).__name__ for m in BaseFinetuning.flatten_modules(net)] == ["Linear", "BatchNorm1d", "Linear"]
    BaseFinetuning.freeze(net, train_bn=True)
    assert [p.requires_grad for p in net.parameters()] == [False, False, True, True, False, False]
    assert len(list(BaseFinetuning.filter_params(net, train_bn=False, requires_grad=False))) == 4
    BaseFinetuning.make_trainable(net)
    assert all(p.requires_grad for p in net.parameters())
