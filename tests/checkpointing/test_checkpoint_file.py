"""The checkpoint file: plain data only, safe loading, atomic writes, format versions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fitkit as fk
from fitkit import checkpoint as ckpt_io
from fitkit.testing import quiet_trainer

FIXTURE = Path(__file__).parent / "data" / "v1_checkpoint.ckpt"


class Tiny(fk.Module):
    def __init__(self, width: int = 3, extra: Any = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.layer = nn.Linear(2, width)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        return self.layer(batch[0]).pow(2).mean()

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def fitted(tmp_path: Path, **hparams: Any) -> fk.Trainer:
    torch.manual_seed(0)
    t = quiet_trainer(max_epochs=1, default_root_dir=tmp_path)
    t.fit(Tiny(**hparams), DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=4))
    return t


def test_a_hyperparameter_that_is_not_plain_data_is_refused_at_save(tmp_path: Path) -> None:
    t = fitted(tmp_path, extra=nn.ReLU())
    with pytest.raises(fk.FitkitError) as info:
        t.save_checkpoint(tmp_path / "x.ckpt")
    message = str(info.value)
    assert "hyper_parameters" in message and "extra" in message and "ReLU" in message and "plain data" in message
    assert not (tmp_path / "x.ckpt").exists()


def test_a_pickled_object_payload_is_refused_by_the_loader(tmp_path: Path) -> None:
    evil = tmp_path / "evil.ckpt"

    class Payload:
        def __reduce__(self) -> Any:
            return (os.system, ("echo pwned",))

    torch.save({"format_version": 1, "state_dict": {}, "x": Payload()}, evil)
    with pytest.raises(fk.FitkitError, match="weights_only=True"):
        ckpt_io.load(evil)
    with pytest.raises(fk.FitkitError):
        Tiny.load_from_checkpoint(evil)


def test_a_newer_format_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    path = tmp_path / "future.ckpt"
    torch.save({"format_version": ckpt_io.FORMAT_VERSION + 1, "fitkit_version": "99.0"}, path)
    with pytest.raises(fk.FitkitError, match=r"format 2.*99\.0.*Upgrade fitkit"):
        ckpt_io.load(path)


def test_a_file_that_is_not_a_fitkit_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(1)}, path)
    with pytest.raises(fk.FitkitError, match="not a fitkit checkpoint"):
        ckpt_io.load(path)


def test_an_interrupted_write_leaves_the_previous_checkpoint_intact(tmp_path: Path, monkeypatch: Any) -> None:
    t = fitted(tmp_path)
    path = tmp_path / "model.ckpt"
    t.save_checkpoint(path)
    before = path.read_bytes()

    def crash(src: str, dst: Path) -> None:
        raise OSError("power cut between write and rename")

    monkeypatch.setattr(ckpt_io, "_replace", crash)
    with torch.no_grad():
        t.module.layer.weight.add_(1.0)  # type: ignore[union-attr]
    with pytest.raises(OSError, match="power cut"):
        t.save_checkpoint(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # no temp file left behind


def test_checkpoint_written_by_version_1_still_loads() -> None:
    """A small checkpoint written by fitkit 0.1.0 (format 1) is kept in the repository."""
    if not FIXTURE.exists():  # pragma: no cover - regenerate with `python tests/checkpointing/test_checkpoint_file.py`
        pytest.fail(f"missing fixture {FIXTURE}")
    ckpt = ckpt_io.load(FIXTURE)
    assert ckpt["format_version"] == 1 and ckpt["fitkit_version"] == "0.1.0"
    model = Tiny.load_from_checkpoint(FIXTURE)
    assert model.hparams.width == 3
    assert torch.equal(model.layer.weight, ckpt["state_dict"]["layer.weight"])


if __name__ == "__main__":  # writes the fixture above
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        trainer = fitted(Path(d))
    FIXTURE.parent.mkdir(exist_ok=True)
    trainer.save_checkpoint(FIXTURE)
    print("wrote", FIXTURE, FIXTURE.stat().st_size, "bytes")
