"""``"64-true"``, ``"16-true"`` and ``"bf16-true"``: the module, its floating-point inputs and
the tensors a step creates are all in one dtype, and nothing else changes."""

from __future__ import annotations

from collections import namedtuple
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from _precision_helpers import assert_same_weights, fit, make_loader, needs_cpu_half_kernels, raw_loop

from fitkit.precision import DoublePrecision, HalfPrecision
from fitkit.precision.dtype import convert_floats


def test_64_true_trains_in_float64_and_matches_a_raw_float64_loop() -> None:
    model, trainer, init = fit("64-true")
    assert isinstance(trainer.strategy.precision, DoublePrecision)
    assert {p.dtype for p in model.parameters()} == {torch.float64}
    assert model.seen["input"] == model.seen["target"] == model.seen["hidden"] == {torch.float64}
    assert model.seen["default"] == {torch.float64}  # torch.randn() in a step would be float64 too
    assert torch.get_default_dtype() == torch.float32  # and only in the step
    trainer.validate(model, make_loader(), verbose=False)
    assert model.seen["val_hidden"] == {torch.float64}

    net, _, _ = raw_loop(init, dtype=torch.float64)
    assert_same_weights(model.net, net, init)


@needs_cpu_half_kernels
@pytest.mark.parametrize(("name", "dtype"), [("16-true", torch.float16), ("bf16-true", torch.bfloat16)])
def test_16_bit_true_trains_in_that_dtype(name: str, dtype: torch.dtype) -> None:
    losses: list[float] = []
    model, trainer, init = fit(name, epochs=3)
    precision = trainer.strategy.precision
    assert isinstance(precision, HalfPrecision) and precision.name == name and precision.dtype == dtype
    assert {p.dtype for p in model.parameters()} == {dtype}
    assert model.seen["input"] == model.seen["target"] == model.seen["hidden"] == model.seen["default"] == {dtype}
    assert torch.get_default_dtype() == torch.float32
    x, y = make_loader().dataset.tensors
    with torch.no_grad():
        for net in (init, model.net):
            losses.append(torch.nn.functional.mse_loss(net.float()(x), y).item())
    assert all(loss == loss for loss in losses)  # finite
    assert losses[1] < losses[0]  # it learned something in 16 bits


@needs_cpu_half_kernels
def test_16_true_matches_a_raw_float16_loop() -> None:
    model, _, init = fit("16-true")
    net, _, _ = raw_loop(init, dtype=torch.float16)
    assert_same_weights(model.net, net, init)


Pair = namedtuple("Pair", ["x", "label"])


@dataclass
class Batch:
    x: torch.Tensor
    mask: torch.Tensor
    note: str = "kept"


def test_convert_floats_casts_floating_tensors_only_and_keeps_containers() -> None:
    batch: Any = {
        "pair": Pair(torch.ones(2), torch.tensor([1, 2])),
        "list": [torch.zeros(1, dtype=torch.float16), 3, "s"],
        "data": Batch(torch.ones(1), torch.tensor([True])),
    }
    out = convert_floats(batch, torch.float64)
    assert isinstance(out["pair"], Pair) and out["pair"].x.dtype == torch.float64
    assert out["pair"].label.dtype == torch.int64
    assert out["list"][0].dtype == torch.float64 and out["list"][1:] == [3, "s"]
    assert isinstance(out["data"], Batch) and out["data"].x.dtype == torch.float64
    assert out["data"].mask.dtype == torch.bool and out["data"].note == "kept"


def test_forward_context_restores_the_default_dtype_even_on_error_and_nests() -> None:
    plugin = DoublePrecision()
    with pytest.raises(RuntimeError, match="boom"), plugin.forward_context():
        with plugin.forward_context():
            assert torch.get_default_dtype() == torch.float64
        assert torch.get_default_dtype() == torch.float64
        raise RuntimeError("boom")
    assert torch.get_default_dtype() == torch.float32


def test_half_precision_refuses_other_names() -> None:
    with pytest.raises(ValueError, match=r"`precision='16-mixed'`.*'16-true' or 'bf16-true'"):
        HalfPrecision("16-mixed")
