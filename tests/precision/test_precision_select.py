"""The ``precision`` argument: names, Lightning's aliases, refusals, and user plug-ins."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch

import fitkit as fk
from fitkit.accelerators.accelerator import Accelerator
from fitkit.accelerators.cpu import CPUAccelerator
from fitkit.accelerators.cuda import CUDAAccelerator
from fitkit.accelerators.mps import MPSAccelerator
from fitkit.precision import DoublePrecision, HalfPrecision, MixedPrecision, Precision
from fitkit.precision.select import autocast_device_type, select_precision
from fitkit.testing import BoringModule, quiet_trainer


@pytest.mark.parametrize(
    ("value", "kind", "name", "legacy"),
    [
        ("64-true", DoublePrecision, "64-true", False),
        ("64", DoublePrecision, "64-true", False),
        (64, DoublePrecision, "64-true", False),
        ("32-true", Precision, "32-true", False),
        ("32", Precision, "32-true", False),
        (32, Precision, "32-true", False),
        ("16-mixed", MixedPrecision, "16-mixed", False),
        ("16", MixedPrecision, "16-mixed", True),
        (16, MixedPrecision, "16-mixed", True),
        ("bf16-mixed", MixedPrecision, "bf16-mixed", False),
        ("bf16", MixedPrecision, "bf16-mixed", True),
        ("16-true", HalfPrecision, "16-true", False),
        ("bf16-true", HalfPrecision, "bf16-true", False),
    ],
)
def test_names_and_aliases(value: Any, kind: type, name: str, legacy: bool) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = fk.Trainer(accelerator="cpu", precision=value, logger=False)
    plugin = trainer.strategy.precision
    assert type(plugin) is kind and plugin.name == name
    notes = [str(w.message) for w in caught if "legacy alias" in str(w.message)]
    assert len(notes) == int(legacy)
    if legacy:
        assert f"`precision={value!r}`" in notes[0] and name in notes[0]
        assert caught[0].filename == __file__  # points at the Trainer(...) line


def test_mixed_precision_scaler_and_dtype() -> None:
    fp16 = select_precision("16-mixed", CPUAccelerator())
    bf16 = select_precision("bf16-mixed", CPUAccelerator())
    assert isinstance(fp16, MixedPrecision) and isinstance(fp16.scaler, torch.amp.GradScaler)
    assert fp16.dtype == torch.float16 and fp16.device == "cpu"
    assert isinstance(bf16, MixedPrecision) and bf16.scaler is None and bf16.dtype == torch.bfloat16


@pytest.mark.parametrize("value", ["17", 17, 8, 16.0, True, "fp16", "16-MIXED", "half", None, "transformer-engine"])
def test_unknown_values_are_refused_with_the_choices(value: Any) -> None:
    with pytest.raises(fk.MisconfigurationError) as info:
        fk.Trainer(precision=value)
    message = str(info.value)
    assert message.startswith(f"`precision={value!r}` is not valid")
    for choice in ("'64-true'", "'32-true'", "'16-mixed'", "'bf16-mixed'", "'16-true'", "'bf16-true'", "Precision"):
        assert choice in message


def test_unhashable_values_are_refused() -> None:
    with pytest.raises(fk.MisconfigurationError, match="precision"):
        select_precision(["16-mixed"])


class CountingPrecision(Precision):
    """A user's plug-in: counts the calls the loop makes and halves the inputs."""

    name = "counting"

    def __init__(self) -> None:
        self.calls: dict[str, int] = {"forward": 0, "backward": 0, "step": 0, "convert_input": 0}

    def forward_context(self) -> Any:
        self.calls["forward"] += 1
        return super().forward_context()

    def convert_input(self, batch: Any) -> Any:
        self.calls["convert_input"] += 1
        return batch * 0.5

    def backward(self, loss: torch.Tensor) -> None:
        self.calls["backward"] += 1
        super().backward(loss)

    def optimizer_step(self, optimizer: Any, closure: Callable[[], Any] | None = None) -> Any:
        self.calls["step"] += 1
        return super().optimizer_step(optimizer, closure)


def test_a_precision_instance_is_used_as_given() -> None:
    plugin = CountingPrecision()
    assert select_precision(plugin, CPUAccelerator()) is plugin
    trainer = quiet_trainer(accelerator="cpu", precision=plugin, max_epochs=1, limit_train_batches=3)
    assert trainer.strategy.precision is plugin
    trainer.fit(BoringModule())
    assert plugin.calls["backward"] == plugin.calls["step"] == 3
    assert plugin.calls["forward"] >= 3 and plugin.calls["convert_input"] >= 3


def test_a_mixed_precision_instance_keeps_its_scaler() -> None:
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    plugin = MixedPrecision("16-mixed", "cpu", scaler=scaler)
    trainer = quiet_trainer(accelerator="cpu", precision=plugin, max_epochs=1, limit_train_batches=2)
    trainer.fit(BoringModule())
    assert trainer.strategy.precision.scaler is scaler
    assert trainer.global_step == 2


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (("16-true", "cpu"), ["`precision='16-true'`", "'16-mixed' or 'bf16-mixed'"]),
        (("bf16-mixed", "banana"), ["`device='banana'`", "'cpu'"]),
        (("bf16-mixed", "cpu", torch.amp.GradScaler("cpu")), ["`scaler=", "None"]),
    ],
)
def test_mixed_precision_refuses_what_cannot_work(args: tuple[Any, ...], fragments: list[str]) -> None:
    with pytest.raises(fk.MisconfigurationError) as info:
        MixedPrecision(*args)
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where CUDA's GradScaler is unavailable")
def test_16_mixed_is_refused_where_grad_scaler_is_unavailable() -> None:
    for make in (lambda: MixedPrecision("16-mixed", "cuda"), lambda: select_precision("16-mixed", CUDAAccelerator())):
        with pytest.raises(fk.MisconfigurationError) as info:
            make()
        message = str(info.value)
        assert "`precision='16-mixed'`" in message and "GradScaler" in message and "'bf16-mixed'" in message


def test_64_true_is_refused_on_mps() -> None:
    with pytest.raises(fk.MisconfigurationError, match=r"`precision='64-true'`.*MPS"):
        select_precision("64-true", MPSAccelerator())


class OddAccelerator(CPUAccelerator):
    """A user's accelerator with a name autocast does not know."""

    name = "odd"

    def __init__(self, device: str | None) -> None:
        self.device = device

    def get_device(self, local_rank: int) -> torch.device:
        if self.device is None:
            raise RuntimeError("devices not parsed yet")
        return torch.device(self.device)


@pytest.mark.parametrize(
    ("accelerator", "expected"),
    [
        (None, "cpu"),
        (CPUAccelerator(), "cpu"),
        (CUDAAccelerator(), "cuda"),
        (MPSAccelerator(), "mps"),
        (OddAccelerator("cpu"), "cpu"),
        (OddAccelerator("meta"), "meta"),
        (OddAccelerator(None), "cpu"),
    ],
)
def test_autocast_device_comes_from_the_accelerator(accelerator: Accelerator | None, expected: str) -> None:
    assert autocast_device_type(accelerator) == expected
    if expected in ("cpu", "cuda"):
        plugin = select_precision("bf16-mixed", accelerator)
        assert isinstance(plugin, MixedPrecision) and plugin.device == expected


def test_default_is_32_true_and_costs_nothing() -> None:
    trainer = quiet_trainer(accelerator="cpu")
    plugin = trainer.strategy.precision
    assert type(plugin) is Precision and plugin.name == "32-true"
    # The strategy skips convert_input for the base class: a batch passes through untouched.
    batch = torch.randn(2, 32)
    assert trainer.strategy.batch_to_device(batch) is batch
