"""Exact resume on XLA: shuffled data and dropout on the device continue where they stopped.

torch's generators do not drive XLA's random ops: torch_xla keeps a seed per device
(101 in every new process). Checkpoints therefore carry that seed
(``Strategy.rng_state()``), and ``seed_everything`` reaches it when the XLA strategy
sets up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from _xla_helpers import IN, OUT, LossRecorder, Regressor, data, trainer
from torch import nn
from torch.utils.data import DataLoader

pytestmark = pytest.mark.xla
pytest.importorskip("torch_xla")

import fitkit as fk  # noqa: E402

STEPS_PER_EPOCH = 8


class DropoutRegressor(Regressor):
    """The regressor with dropout on the device: its losses depend on XLA's generator."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.net = nn.Sequential(nn.Linear(IN, 16), nn.Tanh(), nn.Dropout(0.5), nn.Linear(16, OUT))


def shuffled() -> DataLoader[Any]:
    return DataLoader(data(32), batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(3))


def _fit(tmp: Path, *, ckpt_path: str | None = None, save_every: int | None = None) -> tuple[LossRecorder, Regressor]:
    recorder = LossRecorder()
    callbacks: list[fk.Callback] = [recorder]
    if save_every:
        callbacks.append(
            fk.callbacks.ModelCheckpoint(
                dirpath=tmp, filename="{step}", every_n_train_steps=save_every, save_top_k=-1, every_n_epochs=None
            )
        )
    model = DropoutRegressor()
    trainer(max_epochs=2, callbacks=callbacks, enable_checkpointing=bool(save_every)).fit(
        model, shuffled(), ckpt_path=ckpt_path
    )
    return recorder, model


def test_mid_epoch_resume_on_xla_continues_the_device_random_stream(tmp_path: Path) -> None:
    fk.seed_everything(7)
    straight, straight_model = _fit(tmp_path, save_every=3)
    path = tmp_path / "step=3.ckpt"  # three steps into the first epoch
    checkpoint = torch.load(path, weights_only=True)
    assert isinstance(checkpoint["loops"]["rng"]["device"]["xla"], int)

    fk.seed_everything(7)  # the resumed run must not depend on the seed: the checkpoint sets it
    resumed, resumed_model = _fit(tmp_path, ckpt_path=str(path))
    assert len(resumed.losses) == 2 * STEPS_PER_EPOCH - 3
    assert resumed.values() == straight.values()[3:]
    for a, b in zip(resumed_model.parameters(), straight_model.parameters(), strict=True):
        assert torch.equal(a.detach().cpu(), b.detach().cpu())

    # Without the saved XLA seed the dropout masks differ: the check above would catch it.
    del checkpoint["loops"]["rng"]["device"]
    torch.save(checkpoint, tmp_path / "no_device_rng.ckpt")
    fk.seed_everything(7)
    without, _ = _fit(tmp_path, ckpt_path=str(tmp_path / "no_device_rng.ckpt"))
    assert without.values() != straight.values()[3:]


def test_seed_everything_seeds_the_xla_generator(tmp_path: Path) -> None:
    runs = []
    for seed in (5, 5, 6):
        fk.seed_everything(seed)
        recorder, _ = _fit(tmp_path)
        runs.append(recorder.values())
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_a_second_fit_without_reseeding_continues_the_stream(tmp_path: Path) -> None:
    fk.seed_everything(5)
    first, _ = _fit(tmp_path)
    second, _ = _fit(tmp_path)  # not reseeded: new dropout masks, as torch's generators would give
    assert first.values() != second.values()


def test_the_device_random_stream_matches_a_plain_torch_xla_loop() -> None:
    """With one graph cut per batch, fitkit's per-batch seed is the one torch_xla itself uses."""
    import torch_xla
    import torch_xla.core.xla_model as xm
    from torch_xla.distributed.parallel_loader import MpDeviceLoader

    device = torch_xla.device()
    raw_model = DropoutRegressor().to(device)
    optimizer = raw_model.configure_optimizers()
    xm.set_rng_state(11, str(device))
    raw_losses = []
    for x, y in MpDeviceLoader(DataLoader(data(32), batch_size=4), device):
        loss = nn.functional.mse_loss(raw_model(x), y)
        loss.backward()
        xm.optimizer_step(optimizer)
        optimizer.zero_grad()
        raw_losses.append(loss.detach())

    fk.seed_everything(11)
    recorder = LossRecorder()
    trainer(max_epochs=1, callbacks=[recorder]).fit(DropoutRegressor(), DataLoader(data(32), batch_size=4))
    assert recorder.values() == pytest.approx([float(v.cpu()) for v in raw_losses], rel=1e-6)
