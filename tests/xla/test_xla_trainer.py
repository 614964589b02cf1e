"""fit / validate / test / predict on torch_xla's CPU backend, against the same run on the CPU.

Needs torch_xla (the XLA lane, ``make test-xla``); skips where it is not installed.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from _xla_helpers import IN, LossRecorder, Regressor, loader, trainer
from torch import nn

pytestmark = pytest.mark.xla
pytest.importorskip("torch_xla")

import fitkit as fk  # noqa: E402
from fitkit.precision.xla import XLAPrecision  # noqa: E402
from fitkit.strategies.xla import XLALoader, XLAStrategy  # noqa: E402
from fitkit.utilities.exceptions import MisconfigurationError  # noqa: E402


def test_fit_validate_test_predict_on_xla() -> None:
    model = Regressor()
    t = trainer(max_epochs=2, accelerator="tpu")  # the alias
    assert isinstance(t.strategy, XLAStrategy) and isinstance(t.strategy.precision, XLAPrecision)
    t.fit(model, loader(), loader(16, seed=1))
    assert isinstance(t.train_dataloader, XLALoader)  # read through MpDeviceLoader
    assert t.global_step == 16
    assert next(model.parameters()).device.type == "xla"
    assert t.callback_metrics["val_loss"].device.type == "xla"  # kept on the device, not turned into floats
    (val,) = t.validate(model, loader(16, seed=1), verbose=False)
    assert val["val_loss"] == pytest.approx(float(t.callback_metrics["val_loss"].cpu()), rel=1e-5)
    (test,) = t.test(model, loader(16, seed=2), verbose=False)
    assert test["test_loss"] > 0
    preds = t.predict(model, loader(8, seed=3))
    assert preds is not None and len(preds) == 2
    assert preds[0].device.type == "xla" and preds[0].shape == (4, 2)


def test_loss_trajectory_matches_cpu_with_accumulation_and_clipping() -> None:
    runs = {}
    for accelerator in ("cpu", "xla"):
        rec = LossRecorder()
        t = trainer(
            accelerator=accelerator,
            max_epochs=3,
            accumulate_grad_batches=2,
            gradient_clip_val=0.5,
            callbacks=[rec],
        )
        model = Regressor()
        t.fit(model, loader())
        runs[accelerator] = (rec.values(), [p.detach().cpu() for p in model.parameters()])
    cpu_losses, cpu_params = runs["cpu"]
    xla_losses, xla_params = runs["xla"]
    assert len(xla_losses) == len(cpu_losses) == 24
    assert xla_losses[-1] < 0.8 * xla_losses[0]  # it learns
    for step, (a, b) in enumerate(zip(cpu_losses, xla_losses, strict=True)):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-5), f"step {step}"
    for a, b in zip(cpu_params, xla_params, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


class TwoOptimizers(Regressor):
    """Manual optimization: one optimizer per layer, stepped one after the other."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False

    def training_step(self, batch: Any, batch_idx: int) -> None:
        first, second = self.optimizers()  # type: ignore[misc]
        x, y = batch
        loss = nn.functional.mse_loss(self(x), y)
        self.manual_backward(loss)
        first.step()
        first.zero_grad()
        second.zero_grad()  # the first backward's gradients of the second layer: dropped
        loss2 = nn.functional.mse_loss(self(x), y)
        self.manual_backward(loss2)
        second.step()
        second.zero_grad()
        self.log("train_loss", loss2)

    def configure_optimizers(self) -> Any:
        return (
            torch.optim.SGD(self.net[0].parameters(), lr=0.05),
            torch.optim.Adam(self.net[2].parameters(), lr=0.01),
        )


def test_manual_optimization_with_two_optimizers_matches_cpu() -> None:
    params = {}
    for accelerator in ("cpu", "xla"):
        model = TwoOptimizers()
        trainer(accelerator=accelerator, max_epochs=2).fit(model, loader())
        params[accelerator] = [p.detach().cpu() for p in model.parameters()]
    for a, b in zip(params["cpu"], params["xla"], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)


class DtypeProbe(Regressor):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, _ = batch
        self.seen = (x.dtype, self(x).dtype, self.net[0].weight.dtype)
        return super().training_step(batch, batch_idx)


def test_bf16_true_trains_in_bfloat16() -> None:
    rec = LossRecorder()
    model = DtypeProbe(lr=0.02)
    t = trainer(precision="bf16-true", max_epochs=3, callbacks=[rec])
    t.fit(model, loader())
    assert model.seen == (torch.bfloat16, torch.bfloat16, torch.bfloat16)
    losses = rec.values()
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] / 2
    (val,) = t.validate(model, loader(8, seed=1), verbose=False)  # bfloat16 inputs under inference mode too
    assert 0 < val["val_loss"] < losses[0]


def test_bf16_mixed_autocasts_on_xla() -> None:
    model = DtypeProbe()
    trainer(precision="bf16-mixed", max_epochs=1, limit_train_batches=2).fit(model, loader())
    assert model.seen == (torch.float32, torch.bfloat16, torch.float32)  # float32 weights, bf16 matmuls


@pytest.mark.parametrize("precision", ["16-mixed", "16-true", "64-true"])
def test_other_precisions_are_refused(precision: str) -> None:
    with pytest.raises(MisconfigurationError, match=r"precision=.*XLA devices train in float32 or bfloat16"):
        fk.Trainer(accelerator="xla", precision=precision)


def test_strategy_and_device_errors() -> None:
    with pytest.raises(MisconfigurationError, match="not DDP or FSDP"):
        fk.Trainer(accelerator="xla", strategy="ddp")
    with pytest.raises(MisconfigurationError, match="accelerator='xla'"):
        fk.Trainer(accelerator="cpu", strategy="xla")
    with pytest.raises(MisconfigurationError, match="CPU backend cannot reduce across replicas"):
        fk.Trainer(accelerator="xla", devices=2)
    with pytest.raises(MisconfigurationError, match="counts devices"):
        fk.Trainer(accelerator="xla", devices=0)


def test_example_input_and_eval_hooks_under_inference_mode() -> None:
    # Evaluation runs under torch.inference_mode, which XLA refuses for matmuls: the step must still run.
    model = Regressor()
    model.example_input_array = torch.zeros(2, IN)
    t = trainer(max_epochs=1, inference_mode=True)
    (out,) = t.test(model, loader(8), verbose=False)
    assert out["test_loss"] > 0


class NaNAtBatchOne(Regressor):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        return loss * float("nan") if batch_idx == 1 else loss


def test_nonfinite_loss_skip_matches_cpu() -> None:
    # "skip" must know before backward: XLAStrategy cuts the graph, then reads the loss.
    params = {}
    for accelerator in ("cpu", "xla"):
        model = NaNAtBatchOne()
        t = trainer(accelerator=accelerator, max_epochs=2, nonfinite_loss="skip")
        with pytest.warns(RuntimeWarning, match="not finite"):
            t.fit(model, loader())
        assert t.global_step == 14  # 2 of 16 steps skipped
        params[accelerator] = [p.detach().cpu() for p in model.parameters()]
    for a, b in zip(params["cpu"], params["xla"], strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
