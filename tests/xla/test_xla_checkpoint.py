"""Checkpoints written on XLA (``xm.save`` by the master ordinal) load on the CPU and continue."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from _xla_helpers import LossRecorder, Regressor, loader, trainer

pytestmark = pytest.mark.xla
pytest.importorskip("torch_xla")

import fitkit as fk  # noqa: E402


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _tensors(v)]
    return []


def test_checkpoint_saved_on_xla_loads_on_cpu_and_continues(tmp_path: Path) -> None:
    model = Regressor()
    t = trainer(max_epochs=2, enable_checkpointing=True, default_root_dir=tmp_path)
    t.fit(model, loader(), loader(8, seed=1))
    path = tmp_path / "xla.ckpt"
    t.save_checkpoint(path)
    assert not list(tmp_path.glob(".xla.ckpt.*.tmp"))  # written atomically: no temporary left over

    checkpoint = torch.load(path, weights_only=True)  # no map_location: every tensor must be a CPU one
    tensors = _tensors(checkpoint)
    assert tensors and {x.device.type for x in tensors} == {"cpu"}
    for (name, saved), param in zip(checkpoint["state_dict"].items(), model.parameters(), strict=True):
        torch.testing.assert_close(saved, param.detach().cpu(), msg=name)
    assert checkpoint["optimizer_states"][0]["state"]  # the momentum buffers came along
    assert list((tmp_path / "checkpoints").glob("*.ckpt"))  # ModelCheckpoint wrote through the strategy too

    # Continue on the CPU for two more epochs; compare with four uninterrupted CPU epochs.
    resumed, straight = LossRecorder(), LossRecorder()
    cpu = trainer(accelerator="cpu", max_epochs=4, callbacks=[resumed])
    cpu.fit(Regressor(), loader(), ckpt_path=str(path))
    assert cpu.global_step == 32 and len(resumed.losses) == 16
    trainer(accelerator="cpu", max_epochs=4, callbacks=[straight]).fit(Regressor(), loader())
    assert resumed.values() == pytest.approx(straight.values()[16:], rel=1e-4, abs=1e-5)


def test_a_cpu_checkpoint_resumes_on_xla(tmp_path: Path) -> None:
    cpu = trainer(accelerator="cpu", max_epochs=1)
    cpu.fit(Regressor(), loader())
    path = tmp_path / "cpu.ckpt"
    cpu.save_checkpoint(path)
    t = trainer(max_epochs=2)
    model = Regressor()
    t.fit(model, loader(), ckpt_path=str(path))
    assert t.global_step == 16
    assert next(model.parameters()).device.type == "xla"
    assert isinstance(t.strategy, fk.strategies.XLAStrategy)
