"""``fitkit.DataModule``: which hooks the Trainer calls, when, and where loaders come from."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

import fitkit as fk
from fitkit.testing import BoringModule, RandomDataset, quiet_trainer


def _trainer(**kwargs: Any) -> fk.Trainer:
    defaults: dict[str, Any] = dict(
        max_epochs=1,
        num_sanity_val_steps=0,
        limit_train_batches=2,
        limit_val_batches=1,
        limit_test_batches=1,
        limit_predict_batches=1,
    )
    return quiet_trainer(**{**defaults, **kwargs})


class RecordingDataModule(fk.DataModule):
    """Records every hook the Trainer calls on it, in order."""

    def __init__(self, batch_size: int = 2, length: int = 8) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.calls: list[str] = []
        self.steps = 0

    def prepare_data(self) -> None:
        self.calls.append("prepare_data")

    def setup(self, stage: str) -> None:
        self.calls.append(f"setup:{stage}")
        self.data = RandomDataset(32, self.hparams.length)

    def teardown(self, stage: str) -> None:
        self.calls.append(f"teardown:{stage}")

    def _loader(self, name: str) -> DataLoader[torch.Tensor]:
        self.calls.append(name)
        return DataLoader(self.data, batch_size=self.hparams.batch_size)

    def train_dataloader(self) -> DataLoader[torch.Tensor]:
        return self._loader("train_dataloader")

    def val_dataloader(self) -> DataLoader[torch.Tensor]:
        return self._loader("val_dataloader")

    def test_dataloader(self) -> DataLoader[torch.Tensor]:
        return self._loader("test_dataloader")

    def predict_dataloader(self) -> DataLoader[torch.Tensor]:
        return self._loader("predict_dataloader")

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.steps = state_dict["steps"]


class RecordingModule(BoringModule):
    """Records the module's own set-up hooks into the DataModule's list, to check interleaving."""

    def __init__(self, calls: list[str]) -> None:
        super().__init__()
        self.calls = calls

    def prepare_data(self) -> None:
        self.calls.append("module.prepare_data")

    def setup(self, stage: str) -> None:
        self.calls.append(f"module.setup:{stage}")

    def teardown(self, stage: str) -> None:
        self.calls.append(f"module.teardown:{stage}")

    def train_dataloader(self) -> Any:
        raise AssertionError("the DataModule's loader must be used")


def test_hooks_during_fit() -> None:
    dm = RecordingDataModule()
    t = _trainer()
    t.fit(RecordingModule(dm.calls), datamodule=dm)
    assert dm.calls == [
        "prepare_data",
        "module.prepare_data",
        "setup:fit",
        "module.setup:fit",
        "train_dataloader",
        "val_dataloader",
        "teardown:fit",
        "module.teardown:fit",
    ]
    assert t.datamodule is dm


@pytest.mark.parametrize(
    ("method", "loader"),
    [("validate", "val_dataloader"), ("test", "test_dataloader"), ("predict", "predict_dataloader")],
)
def test_hooks_during_evaluation(method: str, loader: str) -> None:
    dm = RecordingDataModule()
    kwargs = {} if method == "predict" else {"verbose": False}
    getattr(_trainer(), method)(RecordingModule(dm.calls), datamodule=dm, **kwargs)
    assert dm.calls == [
        "prepare_data",
        "module.prepare_data",
        f"setup:{method}",
        f"module.setup:{method}",
        loader,
        f"teardown:{method}",
        f"module.teardown:{method}",
    ]


def test_teardown_runs_when_training_fails() -> None:
    class Fails(RecordingModule):
        def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
            raise KeyError("boom")

    dm = RecordingDataModule()
    with pytest.raises(KeyError, match="boom"):
        _trainer().fit(Fails(dm.calls), datamodule=dm)
    assert dm.calls[-2:] == ["teardown:fit", "module.teardown:fit"]


def test_evaluation_after_fit_reuses_the_datamodule() -> None:
    dm = RecordingDataModule()
    model = RecordingModule(dm.calls)
    t = _trainer()
    t.fit(model, datamodule=dm)
    dm.calls.clear()
    (result,) = t.validate(verbose=False)
    assert "val_dataloader" in dm.calls and "setup:validate" in dm.calls
    assert set(result) == {"val_loss"}


def test_evaluation_with_a_new_model_forgets_the_datamodule() -> None:
    dm = RecordingDataModule()
    t = _trainer()
    t.fit(RecordingModule(dm.calls), datamodule=dm)
    dm.calls.clear()
    t.validate(BoringModule(), verbose=False)  # BoringModule brings its own val_dataloader
    assert dm.calls == []
    assert t.datamodule is None


def test_loaders_the_datamodule_lacks_come_from_the_module() -> None:
    class TrainOnly(fk.DataModule):
        def train_dataloader(self) -> DataLoader[torch.Tensor]:
            return DataLoader(RandomDataset(32, 4), batch_size=2)

    val_batches: list[int] = []

    class CountsVal(BoringModule):
        def validation_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
            val_batches.append(batch_idx)

    _trainer(limit_val_batches=3).fit(CountsVal(), datamodule=TrainOnly())
    assert val_batches == [0, 1, 2]  # from BoringModule.val_dataloader


def test_datamodule_hparams() -> None:
    dm = RecordingDataModule(batch_size=4)
    assert dm.hparams == {"batch_size": 4, "length": 8}
    assert dm.hparams.batch_size == 4


def test_datamodule_state_dict() -> None:
    assert fk.DataModule().state_dict() == {}
    fk.DataModule().load_state_dict({})  # the default accepts its own state

    dm = RecordingDataModule()
    dm.steps = 7
    other = RecordingDataModule()
    other.load_state_dict(dm.state_dict())
    assert other.steps == 7


def test_default_hooks_are_no_ops() -> None:
    dm = fk.DataModule()
    assert dm.prepare_data() is None
    assert dm.setup("fit") is None
    assert dm.teardown("fit") is None
    assert not hasattr(dm, "train_dataloader")
