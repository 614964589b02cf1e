"""CUDA accelerator on a real GPU: device parsing, placement, parity, checkpoints, stats.

Every test here is marked ``gpu`` and skipped without CUDA; the two-GPU tests also
skip unless two GPUs are visible. Run them with ``tests/gpu/run.sh`` (or
``pytest -m gpu tests/gpu``).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fitkit as fk
from fitkit.accelerators import CUDAAccelerator
from fitkit.accelerators.select import select_accelerator
from fitkit.strategies import SingleDeviceStrategy
from fitkit.testing import quiet_trainer
from fitkit.utilities.exceptions import MisconfigurationError

COUNT = torch.cuda.device_count()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(COUNT < 1, reason="needs a CUDA GPU")]
two_gpus = pytest.mark.skipif(COUNT < 2, reason="needs two CUDA GPUs")

SEED = 7
EPOCHS = 2


class Net(fk.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))
        self.batch_devices: set[torch.device] = set()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        self.batch_devices.add(x.device)
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)


def loader(pin_memory: bool = False) -> DataLoader:
    g = torch.Generator().manual_seed(SEED)
    data = TensorDataset(torch.randn(256, 16, generator=g), torch.randint(0, 4, (256,), generator=g))
    return DataLoader(data, batch_size=32, shuffle=False, pin_memory=pin_memory)


def trainer(**kwargs: Any) -> fk.Trainer:
    return quiet_trainer(**{"accelerator": "cuda", "devices": 1, "max_epochs": EPOCHS, **kwargs})


# -- parsing against the real device count ---------------------------------------------------
def test_cuda_is_selected_and_parses_the_real_count() -> None:
    assert isinstance(select_accelerator("auto"), CUDAAccelerator)
    assert isinstance(select_accelerator("gpu"), CUDAAccelerator)
    acc = CUDAAccelerator()
    assert acc.is_available() and acc.auto_device_count() == COUNT
    assert acc.device_indices("auto") == acc.device_indices(-1) == list(range(COUNT))
    assert acc.device_indices(1) == [0] and acc.device_indices(f"{COUNT - 1},") == [COUNT - 1]
    with pytest.raises(MisconfigurationError, match=f"`devices={COUNT + 1}` is not valid"):
        acc.parse_devices(COUNT + 1)
    with pytest.raises(MisconfigurationError, match=f"cuda device {COUNT} does not exist"):
        acc.parse_devices([COUNT])


def test_single_gpu_strategy_and_placement() -> None:
    t = trainer()
    assert isinstance(t.strategy, SingleDeviceStrategy)
    assert t.strategy.root_device == torch.device("cuda", 0)
    model = Net()
    t.fit(model, loader(pin_memory=True))
    assert model.device == torch.device("cuda", 0)
    assert model.batch_devices == {torch.device("cuda", 0)}
    assert t.global_step == EPOCHS * 8


def test_non_blocking_batch_transfer_is_correct() -> None:
    strategy = SingleDeviceStrategy(torch.device("cuda", 0))
    assert strategy._non_blocking
    x = torch.arange(1 << 16, dtype=torch.float32).pin_memory()
    moved = strategy.batch_to_device({"x": x, "rest": [x + 1, "tag"]})
    torch.cuda.synchronize()
    assert moved["x"].is_cuda and moved["rest"][1] == "tag"
    assert torch.equal(moved["x"].cpu(), x) and torch.equal(moved["rest"][0].cpu(), x + 1)


# -- parity with a raw loop on the GPU ----------------------------------------------------------
def test_single_gpu_fit_matches_a_raw_loop_in_32_true() -> None:
    torch.manual_seed(SEED)
    model = Net()
    initial = {k: v.clone() for k, v in model.net.state_dict().items()}
    raw = copy.deepcopy(model.net).cuda()
    opt = torch.optim.SGD(raw.parameters(), lr=0.1, momentum=0.9)
    for _ in range(EPOCHS):
        for x, y in loader():
            x, y = x.cuda(non_blocking=True), y.cuda(non_blocking=True)
            loss = F.cross_entropy(raw(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    trainer(precision="32-true").fit(model, loader())
    changed = False
    for (name, ours), theirs in zip(model.net.state_dict().items(), raw.state_dict().values(), strict=True):
        assert ours.device == theirs.device
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6, msg=name)
        changed = changed or not torch.equal(ours.cpu(), initial[name])
    assert changed


# -- checkpoints move between devices -----------------------------------------------------------
def test_checkpoint_saved_on_gpu_loads_on_cpu() -> None:
    model = Net()
    t = trainer()
    t.fit(model, loader())
    t.save_checkpoint("gpu.ckpt")
    expected = {k: v.cpu() for k, v in model.state_dict().items()}

    on_cpu = Net.load_from_checkpoint("gpu.ckpt", map_location="cpu")
    assert on_cpu.device == torch.device("cpu")
    for k, v in on_cpu.state_dict().items():
        assert torch.equal(v, expected[k]), k

    resumed = Net()
    t_cpu = quiet_trainer(accelerator="cpu", max_epochs=EPOCHS + 1)
    t_cpu.fit(resumed, loader(), ckpt_path="gpu.ckpt")
    assert resumed.device == torch.device("cpu") and t_cpu.global_step == (EPOCHS + 1) * 8


def test_device_stats_report_cuda_memory() -> None:
    acc = CUDAAccelerator()
    model = Net()
    trainer(accelerator=acc).fit(model, loader())
    stats = acc.get_device_stats(torch.device("cuda", 0))
    for key in ("allocated_bytes.all.current", "allocated_bytes.all.peak", "reserved_bytes.all.current"):
        assert key in stats and isinstance(stats[key], int)
    assert stats["allocated_bytes.all.peak"] > 0


# -- two GPUs ----------------------------------------------------------------------------------------
@two_gpus
def test_devices_index_selects_the_second_gpu() -> None:
    for devices in ([1], "1,"):
        t = trainer(devices=devices, max_epochs=1)
        assert t.strategy.root_device == torch.device("cuda", 1)
        model = Net()
        t.fit(model, loader())
        assert model.device == torch.device("cuda", 1)
        assert model.batch_devices == {torch.device("cuda", 1)}


@two_gpus
def test_two_devices_map_to_two_gpus() -> None:
    acc = CUDAAccelerator()
    assert acc.device_indices("1, 0") == [1, 0]
    assert [acc.get_device(r) for r in (0, 1)] == [torch.device("cuda", 1), torch.device("cuda", 0)]
    t = fk.Trainer(accelerator="cuda", devices=2, enable_progress_bar=False, logger=False)
    devices = getattr(t.strategy, "parallel_devices", None)
    assert devices == [torch.device("cuda", 0), torch.device("cuda", 1)]
