"""Accelerator classes, ``accelerator=`` selection, and the strategy they feed.

What needs no device runs here: CPU behaviour, CUDA/MPS device mapping through
subclasses that report a device count (their ``torch.device`` objects are plain
values; nothing touches CUDA), and the errors for a kind this machine lacks. What
needs a real GPU is in ``tests/gpu/test_gpu_accelerator.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import fitkit as fk
from fitkit.accelerators import Accelerator, CPUAccelerator, CUDAAccelerator, MPSAccelerator
from fitkit.accelerators.select import select_accelerator
from fitkit.strategies import SingleDeviceStrategy
from fitkit.testing import BoringModule, quiet_trainer
from fitkit.trainer.plugins import select_strategy
from fitkit.utilities.exceptions import FitkitRuntimeError, MisconfigurationError

HAS_CUDA = torch.cuda.device_count() > 0
HAS_MPS = MPSAccelerator.is_available()


class FourGPUs(CUDAAccelerator):
    """A CUDA accelerator that believes in four devices: parsing and mapping only."""

    @staticmethod
    def is_available() -> bool:
        return True

    @staticmethod
    def auto_device_count() -> int:
        return 4


# -- CPU -----------------------------------------------------------------------------------
def test_cpu_accelerator_basics() -> None:
    acc = CPUAccelerator()
    assert acc.is_available() and acc.auto_device_count() == 1
    assert acc.parse_devices("auto") == 1 and acc.parse_devices(-1) == 1 and acc.parse_devices("2") == 2
    assert acc.device_indices(2) == [0, 1]
    assert acc.get_device(0) == torch.device("cpu")
    assert acc.get_device_stats(torch.device("cpu")) == {}


# -- indexed accelerators: the index list drives get_device ---------------------------------
@pytest.mark.parametrize(
    ("devices", "indices", "rank0"),
    [(1, [0], 0), (2, [0, 1], 0), ([2], [2], 2), ("1,", [1], 1), ("3, 1", [3, 1], 3), (-1, [0, 1, 2, 3], 0)],
)
def test_cuda_maps_local_rank_through_the_indices(devices: Any, indices: list[int], rank0: int) -> None:
    acc = FourGPUs()
    assert acc.device_indices(devices) == indices
    assert acc.parse_devices(devices) == len(indices)
    assert acc.get_device(0) == torch.device("cuda", rank0)
    assert [acc.get_device(r) for r in range(len(indices))] == [torch.device("cuda", i) for i in indices]


def test_cuda_get_device_for_a_rank_outside_the_selection() -> None:
    acc = FourGPUs()
    acc.parse_devices([1])
    with pytest.raises(FitkitRuntimeError, match=r"local rank 1 has no cuda device: `devices` selected \[1\]"):
        acc.get_device(1)
    assert FourGPUs().get_device(3) == torch.device("cuda", 3)  # never parsed: rank i -> device i


def test_cuda_parse_errors_name_devices() -> None:
    with pytest.raises(MisconfigurationError, match=r"`devices=\[4\]` is not valid: cuda device 4 does not exist"):
        FourGPUs().parse_devices([4])


def test_cuda_setup_device_refuses_other_device_kinds() -> None:
    with pytest.raises(MisconfigurationError, match="cuda"):
        FourGPUs().setup_device(torch.device("cpu"))


def test_single_cuda_device_gives_single_device_strategy_on_that_index() -> None:
    strategy = select_strategy(FourGPUs(), [2], "auto", "32-true")
    assert isinstance(strategy, SingleDeviceStrategy)
    assert strategy.root_device == torch.device("cuda", 2)
    assert strategy._non_blocking and not strategy._on_cpu
    assert select_strategy(FourGPUs(), "3,", "auto", "32-true").root_device == torch.device("cuda", 3)
    assert select_strategy(FourGPUs(), 1, "auto", "32-true").root_device == torch.device("cuda", 0)


def test_mps_counts_one_device_at_most() -> None:
    assert MPSAccelerator.auto_device_count() == (1 if HAS_MPS else 0)


# -- accelerator= selection -------------------------------------------------------------------
def test_auto_prefers_cuda_then_mps_then_cpu() -> None:
    expected = "cuda" if HAS_CUDA else "mps" if HAS_MPS else "cpu"
    assert select_accelerator("auto").name == expected
    assert select_accelerator("CPU").name == "cpu"


def test_auto_order_follows_availability(monkeypatch: pytest.MonkeyPatch) -> None:
    # Availability is the accelerators' own question; flip their answers to check the order.
    monkeypatch.setattr(CUDAAccelerator, "is_available", staticmethod(lambda: False))
    monkeypatch.setattr(MPSAccelerator, "is_available", staticmethod(lambda: True))
    assert isinstance(select_accelerator("auto"), MPSAccelerator)
    assert isinstance(select_accelerator("gpu"), MPSAccelerator)
    monkeypatch.setattr(CUDAAccelerator, "is_available", staticmethod(lambda: True))
    assert isinstance(select_accelerator("auto"), CUDAAccelerator)
    assert isinstance(select_accelerator("gpu"), CUDAAccelerator)
    monkeypatch.setattr(CUDAAccelerator, "is_available", staticmethod(lambda: False))
    monkeypatch.setattr(MPSAccelerator, "is_available", staticmethod(lambda: False))
    assert isinstance(select_accelerator("auto"), CPUAccelerator)


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("name", ["cuda", "CUDA"])
def test_cuda_where_unavailable_is_a_clear_error(name: str) -> None:
    with pytest.raises(MisconfigurationError, match=rf"`accelerator='{name}'` is not valid: this process sees no CUDA"):
        fk.Trainer(accelerator=name)


@pytest.mark.skipif(HAS_CUDA or HAS_MPS, reason="this machine has a GPU")
def test_gpu_where_unavailable_is_a_clear_error() -> None:
    with pytest.raises(
        MisconfigurationError, match="`accelerator='gpu'` is not valid: this process sees no CUDA or MPS"
    ):
        fk.Trainer(accelerator="gpu")


@pytest.mark.skipif(HAS_MPS, reason="this machine has MPS")
def test_mps_where_unavailable_is_a_clear_error() -> None:
    with pytest.raises(MisconfigurationError, match="`accelerator='mps'` is not valid: MPS needs Apple silicon"):
        fk.Trainer(accelerator="mps")


@pytest.mark.parametrize("value", ["ipu", 3, None])
def test_unknown_accelerator_lists_the_choices(value: Any) -> None:
    with pytest.raises(MisconfigurationError, match="'auto', 'cpu', 'cuda', 'gpu', 'mps'"):
        select_accelerator(value)


# -- a user's own Accelerator ------------------------------------------------------------------
class RecordingCPU(Accelerator):
    """A user accelerator: trains on the CPU and records the calls fitkit makes."""

    name = "recording_cpu"

    def __init__(self) -> None:
        self.calls: list[str] = []

    @staticmethod
    def is_available() -> bool:
        return True

    @staticmethod
    def auto_device_count() -> int:
        return 1

    def parse_devices(self, devices: Any) -> int:
        self.calls.append(f"parse_devices({devices!r})")
        return 1

    def get_device(self, local_rank: int) -> torch.device:
        self.calls.append(f"get_device({local_rank})")
        return torch.device("cpu")

    def setup_device(self, device: torch.device) -> None:
        self.calls.append(f"setup_device({device})")

    def teardown(self) -> None:
        self.calls.append("teardown")


def test_a_custom_accelerator_instance_is_used_as_given() -> None:
    acc = RecordingCPU()
    trainer = quiet_trainer(accelerator=acc, devices=1, max_epochs=1, limit_train_batches=2, limit_val_batches=0)
    assert trainer.strategy.accelerator is acc
    trainer.fit(BoringModule())
    assert acc.calls == ["parse_devices(1)", "get_device(0)", "setup_device(cpu)", "teardown"]
    assert acc.device_indices(1) == [0]


def test_an_unavailable_custom_accelerator_is_refused() -> None:
    class Missing(RecordingCPU):
        @staticmethod
        def is_available() -> bool:
            return False

    with pytest.raises(MisconfigurationError, match="`accelerator='Missing'` is not valid: its is_available"):
        fk.Trainer(accelerator=Missing())


# -- batches reach the device ----------------------------------------------------------------------
def test_cpu_batches_are_not_walked() -> None:
    batch = {"x": torch.ones(2), "y": [torch.zeros(1)]}
    assert SingleDeviceStrategy("cpu").batch_to_device(batch) is batch


def test_batches_move_to_a_non_cpu_device() -> None:
    # The meta device needs no hardware: the non-CPU path runs for real.
    strategy = SingleDeviceStrategy("meta")
    assert not strategy._non_blocking  # only CUDA copies asynchronously
    moved = strategy.batch_to_device({"x": torch.ones(2), "y": (torch.zeros(1), 3)})
    assert moved["x"].device.type == "meta" and moved["y"][0].device.type == "meta" and moved["y"][1] == 3
