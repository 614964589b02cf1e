"""callbacks/ema.py: the average against a hand computation, the swap for evaluation, checkpoints."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _gallery_helpers import Model, load, loader, trainer

import fitkit as fk

ema_mod = load("ema")
EMA = ema_mod.EMA


class Recorder(fk.Callback):
    """The weights at fit start and after every training batch, with the step count then."""

    def __init__(self) -> None:
        self.start: dict[str, torch.Tensor] = {}
        self.after: list[tuple[int, dict[str, torch.Tensor]]] = []

    def on_fit_start(self, trainer: fk.Trainer, module: fk.Module) -> None:
        self.start = {n: p.detach().clone() for n, p in module.named_parameters()}

    def on_train_batch_end(self, trainer: fk.Trainer, module: fk.Module, *args: Any) -> None:
        self.after.append((trainer.global_step, {n: p.detach().clone() for n, p in module.named_parameters()}))


def hand_ema(rec: Recorder, decay: float, every: int) -> dict[str, torch.Tensor]:
    ema = {n: v.double() for n, v in rec.start.items()}
    last = 0
    for step, weights in rec.after:
        if step != last:
            last = step
            if step % every == 0:
                ema = {n: decay * ema[n] + (1 - decay) * weights[n].double() for n in ema}
    return ema


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k].double(), b[k].double(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("decay", "every", "accumulate", "steps"), [(0.9, 1, 1, 8), (0.5, 2, 2, 4)])
def test_average_matches_hand_computation(decay: float, every: int, accumulate: int, steps: int) -> None:
    rec, ema = Recorder(), EMA(decay=decay, every_n_steps=every)
    t = trainer(callbacks=[rec, ema], accumulate_grad_batches=accumulate)
    t.fit(Model(), loader(8))
    assert t.global_step == steps
    assert ema.num_updates == steps // every
    assert_close(ema.ema, hand_ema(rec, decay, every))
    # the model keeps its training weights
    assert_close(dict(t.module.named_parameters()), rec.after[-1][1])  # type: ignore[union-attr]


class SeesWeights(Model):
    """Records the weights each evaluation step runs with."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def validation_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        self.seen.append(self.layer.weight.detach().clone())
        return super().validation_step(batch, batch_idx)

    def test_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        self.seen.append(self.layer.weight.detach().clone())
        return super().test_step(batch, batch_idx)


def test_evaluation_uses_the_average_and_swaps_back() -> None:
    rec, ema = Recorder(), EMA(decay=0.8)
    model = SeesWeights()
    t = trainer(callbacks=[rec, ema], max_epochs=2, num_sanity_val_steps=1)
    t.fit(model, loader(4), loader(1))
    # sanity check: the average is still the initial weights; then once per epoch
    assert len(model.seen) == 3
    torch.testing.assert_close(model.seen[0], rec.start["layer.weight"])
    torch.testing.assert_close(model.seen[2], ema.ema["layer.weight"])
    assert not torch.equal(model.seen[2], model.layer.weight)
    torch.testing.assert_close(model.layer.weight.detach(), rec.after[-1][1]["layer.weight"], rtol=0, atol=0)

    t.test(model, loader(1))
    torch.testing.assert_close(model.seen[-1], ema.ema["layer.weight"])
    torch.testing.assert_close(model.layer.weight.detach(), rec.after[-1][1]["layer.weight"], rtol=0, atol=0)


def test_use_for_validation_false_keeps_training_weights() -> None:
    rec, ema = Recorder(), EMA(decay=0.8, use_for_validation=False)
    model = SeesWeights()
    trainer(callbacks=[rec, ema]).fit(model, loader(4), loader(1))
    torch.testing.assert_close(model.seen[-1], rec.after[-1][1]["layer.weight"], rtol=0, atol=0)


def test_state_dict_round_trip_and_copy_to() -> None:
    ema = EMA(decay=0.7)
    trainer(callbacks=[ema]).fit(Model(), loader(4))
    state = ema.state_dict()
    assert set(state) == {"decay", "num_updates", "ema"} and state["num_updates"] == 4
    assert all(isinstance(v, torch.Tensor) for v in state["ema"].values())

    fresh = EMA(decay=0.7)
    fresh.load_state_dict(state)
    other = Model()
    fresh.copy_to(other)  # before any fit: the loaded average
    torch.testing.assert_close(other.layer.weight.detach(), state["ema"]["layer.weight"], rtol=0, atol=0)
    fresh.on_fit_start(trainer(), other)
    assert fresh.num_updates == 4
    assert_close(fresh.ema, state["ema"])


def test_resume_gives_the_same_average(tmp_path: Any) -> None:
    data, model = loader(4), Model()
    init = {k: v.clone() for k, v in model.state_dict().items()}
    straight = EMA(decay=0.9)
    trainer(callbacks=[straight], max_epochs=2).fit(model, data)

    first, model = EMA(decay=0.9), Model()
    model.load_state_dict(init)
    t = trainer(callbacks=[first], max_epochs=1)
    t.fit(model, data)
    t.save_checkpoint(tmp_path / "half.ckpt")
    resumed = EMA(decay=0.9)
    trainer(callbacks=[resumed], max_epochs=2).fit(Model(), data, ckpt_path=tmp_path / "half.ckpt")
    assert resumed.num_updates == straight.num_updates == 8
    assert_close(resumed.ema, straight.ema)


@pytest.mark.parametrize(
    ("kwargs", "text"), [({"decay": 1.0}, "`decay=1.0`"), ({"every_n_steps": 0}, "`every_n_steps=0`")]
)
def test_bad_arguments(kwargs: dict[str, Any], text: str) -> None:
    with pytest.raises(fk.MisconfigurationError, match=text):
        EMA(**kwargs)
