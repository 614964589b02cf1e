"""Precision plug-ins on a real CUDA GPU: ``"32-true"``, ``"16-mixed"`` and ``"bf16-mixed"``
fits compared with a hand-written CUDA autocast loop.

Every test here is marked ``gpu`` and skipped without CUDA (``pytest -m gpu tests/gpu``).
The CPU suite covers the same plug-ins bitwise in ``tests/precision/``; here the
comparison allows float rounding noise (``rtol=1e-5``) in case a cuBLAS kernel choice
differs between two otherwise identical runs.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fitkit as fk
from fitkit.precision import MixedPrecision, Precision
from fitkit.testing import quiet_trainer

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

SEED = 11
EPOCHS = 2
DTYPES: dict[str, torch.dtype | None] = {"32-true": None, "16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}


def _bf16_ok() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


PRECISIONS = [
    "32-true",
    "16-mixed",
    pytest.param("bf16-mixed", marks=pytest.mark.skipif(not _bf16_ok(), reason="GPU without bfloat16")),
]


class Net(fk.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 4))
        self.hidden: set[torch.dtype] = set()
        self.devices: set[str] = set()

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        hidden = self.net[0](x)
        self.hidden.add(hidden.dtype)
        self.devices.add(hidden.device.type)
        return F.mse_loss(self.net[2](self.net[1](hidden)), y)

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def make_loader() -> DataLoader[Any]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 16, generator=g)
    y = torch.randn(64, 4, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True, generator=torch.Generator().manual_seed(SEED))


def raw_loop(init: nn.Module, precision: str) -> tuple[nn.Module, torch.amp.GradScaler | None]:
    dtype = DTYPES[precision]
    net = copy.deepcopy(init).cuda()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda") if precision == "16-mixed" else None
    loader = make_loader()
    for _ in range(EPOCHS):
        for x, y in loader:
            x, y = x.cuda(), y.cuda()
            with torch.autocast("cuda", dtype=dtype) if dtype is not None else contextlib.nullcontext():
                loss = F.mse_loss(net(x), y)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(opt)
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            opt.zero_grad(set_to_none=True)
    return net, scaler


@pytest.mark.parametrize("precision", PRECISIONS)
def test_single_gpu_fit_matches_a_raw_cuda_autocast_loop(precision: str) -> None:
    torch.manual_seed(SEED)
    model = Net()
    init = copy.deepcopy(model.net)
    trainer = quiet_trainer(accelerator="cuda", devices=1, max_epochs=EPOCHS, precision=precision)
    plugin = trainer.strategy.precision
    if precision == "32-true":
        assert type(plugin) is Precision
    else:
        assert isinstance(plugin, MixedPrecision) and plugin.device == "cuda"
        assert (plugin.scaler is not None) == (precision == "16-mixed")
    trainer.fit(model, make_loader())

    dtype = DTYPES[precision]
    assert model.devices == {"cuda"}
    assert model.hidden == {dtype or torch.float32}
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # master weights stay float32
    assert trainer.global_step == EPOCHS * 8

    raw, scaler = raw_loop(init, precision)
    for (name, p), q, p0 in zip(model.net.named_parameters(), raw.parameters(), init.parameters(), strict=True):
        assert not torch.equal(p.cpu(), p0), f"{name} did not change"
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")
    if scaler is not None:
        assert trainer.strategy.precision.state_dict() == scaler.state_dict()
