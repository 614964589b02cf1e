"""How data flows through the Trainer: nested batch structures (and the recursive device
move), what ``validate``/``test``/``predict`` return, the DataModule's hooks, and
``seed_everything``.
"""

from __future__ import annotations

import dataclasses
import random
from collections import namedtuple
from typing import Any

import numpy as np
import pytest
import torch
from _trainer_helpers import (
    FEATURES,
    Model,
    Steps,
    loader,
    trainer,
)
from torch.utils.data import DataLoader

import fitkit as fk
from fitkit.strategies import SingleDeviceStrategy
from fitkit.testing import RandomDataset
from fitkit.utilities.apply_func import move_data_to_device
from fitkit.utilities.seed import worker_init_function

# -- batch structures ----------------------------------------------------------------------------------------

Pair = namedtuple("Pair", ["x", "y"])


@dataclasses.dataclass
class Batch:
    x: torch.Tensor
    y: torch.Tensor
    name: str = "batch"


STRUCTURES: dict[str, tuple[Any, Any]] = {
    # name: (build from (x, y), read x back)
    "tensor": (lambda x, y: x, lambda b: b),
    "list": (lambda x, y: [x, y], lambda b: b[0]),
    "tuple": (lambda x, y: (x, y), lambda b: b[0]),
    "dict": (lambda x, y: {"x": x, "y": y, "meta": {"ids": [1, 2]}}, lambda b: b["x"]),
    "namedtuple": (lambda x, y: Pair(x, y), lambda b: b.x),
    "dataclass": (lambda x, y: Batch(x, y), lambda b: b.x),
    "nested": (lambda x, y: {"inputs": [Pair(x, y)], "extra": (y,)}, lambda b: b["inputs"][0].x),
}


@pytest.mark.parametrize("kind", list(STRUCTURES))
def test_batch_structures_reach_every_step_intact(kind: str) -> None:
    build, read = STRUCTURES[kind]
    data = torch.randn(4, FEATURES)
    collate = lambda items: build(torch.stack(items), torch.zeros(len(items)))  # noqa: E731
    seen: list[Any] = []

    class Structured(Model):
        def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
            seen.append(batch)
            return self.loss(self(read(batch)))

        def validation_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
            seen.append(batch)

        def predict_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
            return self(read(batch))

    t = trainer(max_epochs=1)
    batches = lambda: DataLoader(data, batch_size=2, collate_fn=collate)  # noqa: E731
    t.fit(Structured(), batches(), batches())
    expected = [build(data[:2], torch.zeros(2)), build(data[2:], torch.zeros(2))]
    assert len(seen) == 4
    for got, want in zip(seen, expected * 2, strict=True):
        assert type(got) is type(want)
        torch.testing.assert_close(read(got), read(want))
    if kind == "dict":
        assert seen[0]["meta"] == {"ids": [1, 2]}
    if kind == "dataclass":
        assert seen[0].name == "batch"
    predictions = t.predict(dataloaders=batches())
    assert predictions is not None and [p.shape for p in predictions] == [torch.Size([2, 2])] * 2


class HasTo:
    def __init__(self) -> None:
        self.moved_to: torch.device | None = None

    def to(self, device: torch.device) -> HasTo:
        self.moved_to = device
        return self


@dataclasses.dataclass
class WithPost:
    x: torch.Tensor
    derived: int = dataclasses.field(init=False, default=0)

    def __post_init__(self) -> None:
        self.derived = 7


@pytest.mark.parametrize("device", [torch.device("cpu"), torch.device("meta")], ids=["cpu", "meta"])
def test_move_data_to_device_is_recursive(device: torch.device) -> None:
    t = torch.ones(2)
    custom = HasTo()
    batch = {
        "tensor": t,
        "list": [t, (t, "text", 3)],
        "pair": Pair(t, [t]),
        "dataclass": Batch(t, t, name="n"),
        "post": WithPost(t),
        "custom": custom,
        "none": None,
        "scalar": 1.5,
    }
    moved = move_data_to_device(batch, device)
    assert moved["tensor"].device == device
    assert [x.device for x in (moved["list"][0], moved["list"][1][0])] == [device, device]
    assert moved["list"][1][1:] == ("text", 3) and type(moved["list"][1]) is tuple
    assert type(moved["pair"]) is Pair and moved["pair"].x.device == device and moved["pair"].y[0].device == device
    assert type(moved["dataclass"]) is Batch and moved["dataclass"].name == "n"
    assert moved["dataclass"].x.device == device and moved["dataclass"].y.device == device
    assert moved["post"].x.device == device and moved["post"].derived == 7
    assert custom.moved_to == device
    assert moved["none"] is None and moved["scalar"] == 1.5
    assert t.device == torch.device("cpu")  # the input batch is left alone


def test_strategy_batch_to_device_moves_nested_batches() -> None:
    strategy = SingleDeviceStrategy(torch.device("meta"))
    moved = strategy.batch_to_device({"a": [torch.ones(1), Pair(torch.ones(1), torch.ones(1))]})
    assert moved["a"][0].is_meta and moved["a"][1].x.is_meta and moved["a"][1].y.is_meta
    cpu_batch = [torch.ones(1)]
    assert SingleDeviceStrategy(torch.device("cpu")).batch_to_device(cpu_batch)[0] is cpu_batch[0]


# -- what validate / test / predict return -------------------------------------------------------------------


class Constant(Model):
    def validation_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        self.log("val_metric", float(batch_idx))

    def test_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        self.log("test_metric", 2.0)
        self.log("test_sum", 1.0, reduce_fx="sum")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> Any:
        return torch.full((batch.shape[0],), float(10 * dataloader_idx + batch_idx))


def test_validate_returns_a_list_with_one_dict_of_floats(capsys: pytest.CaptureFixture[str]) -> None:
    results = trainer().validate(Constant(), loader(3), verbose=False)
    assert results == [{"val_metric": 1.0}]  # the epoch mean of 0, 1, 2
    assert isinstance(results[0]["val_metric"], float)
    assert capsys.readouterr().out == ""


def test_test_returns_reduced_metrics_and_prints_when_verbose(capsys: pytest.CaptureFixture[str]) -> None:
    results = trainer().test(Constant(), loader(4))
    assert results == [{"test_metric": 2.0, "test_sum": 4.0}]
    out = capsys.readouterr().out
    assert "test_metric" in out and "test_sum" in out


def test_validate_and_test_reuse_the_fitted_model() -> None:
    model = Constant()
    t = trainer(max_epochs=1)
    t.fit(model, loader(1))
    assert t.test(dataloaders=loader(1), verbose=False) == [{"test_metric": 2.0, "test_sum": 1.0}]
    assert t.validate(dataloaders=loader(2), verbose=False) == [{"val_metric": 0.5}]


def test_predict_returns_one_output_per_batch() -> None:
    predictions = trainer().predict(Constant(), loader(3))
    assert predictions is not None and len(predictions) == 3
    for i, p in enumerate(predictions):
        torch.testing.assert_close(p, torch.full((2,), float(i)))


def test_predict_with_several_loaders_returns_a_list_per_loader() -> None:
    predictions = trainer().predict(Constant(), [loader(2), loader(3)])
    assert predictions is not None
    assert [[float(p[0]) for p in loader_preds] for loader_preds in predictions] == [[0.0, 1.0], [10.0, 11.0, 12.0]]


def test_predict_without_return_predictions_still_runs_every_step() -> None:
    seen: list[int] = []

    class Record(Constant):
        def on_predict_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
            seen.append(batch_idx)

    assert trainer().predict(Record(), loader(3), return_predictions=False) is None
    assert seen == [0, 1, 2]


def test_predict_default_step_calls_forward() -> None:
    model = Model()
    data = torch.randn(4, FEATURES)
    predictions = trainer().predict(model, DataLoader(data, batch_size=4))
    assert predictions is not None
    torch.testing.assert_close(predictions[0], model(data).detach())


# -- DataModule ----------------------------------------------------------------------------------------------------


class RecordingDataModule(fk.DataModule):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def prepare_data(self) -> None:
        self.calls.append("prepare_data")

    def setup(self, stage: str) -> None:
        self.calls.append(f"setup:{stage}")

    def teardown(self, stage: str) -> None:
        self.calls.append(f"teardown:{stage}")

    def train_dataloader(self) -> Any:
        self.calls.append("train_dataloader")
        return loader(2)

    def val_dataloader(self) -> Any:
        self.calls.append("val_dataloader")
        return loader(1)

    def test_dataloader(self) -> Any:
        self.calls.append("test_dataloader")
        return loader(1)

    def predict_dataloader(self) -> Any:
        self.calls.append("predict_dataloader")
        return loader(1)


class RecordingModel(Model):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def prepare_data(self) -> None:
        self.calls.append("prepare_data")

    def setup(self, stage: str) -> None:
        self.calls.append(f"setup:{stage}")

    def teardown(self, stage: str) -> None:
        self.calls.append(f"teardown:{stage}")


def test_datamodule_hooks_for_each_method() -> None:
    dm, model = RecordingDataModule(), RecordingModel()
    t = trainer(max_epochs=1)
    t.fit(model, datamodule=dm)
    assert dm.calls == ["prepare_data", "setup:fit", "train_dataloader", "val_dataloader", "teardown:fit"]
    assert model.calls == ["prepare_data", "setup:fit", "teardown:fit"]
    assert t.datamodule is dm
    for method, loader_hook in (
        ("validate", "val_dataloader"),
        ("test", "test_dataloader"),
        ("predict", "predict_dataloader"),
    ):
        dm.calls.clear()
        model.calls.clear()
        kwargs = {} if method == "predict" else {"verbose": False}
        getattr(t, method)(model, datamodule=dm, **kwargs)
        assert dm.calls == ["prepare_data", f"setup:{method}", loader_hook, f"teardown:{method}"], method
        assert model.calls == ["prepare_data", f"setup:{method}", f"teardown:{method}"], method


def test_datamodule_teardown_runs_after_a_failure() -> None:
    class Boom(Model):
        def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
            raise ValueError("boom")

    dm = RecordingDataModule()
    with pytest.raises(ValueError, match="boom"):
        trainer(max_epochs=1).fit(Boom(), datamodule=dm)
    assert dm.calls[-1] == "teardown:fit"


def test_explicit_loaders_win_over_the_datamodule() -> None:
    dm = RecordingDataModule()
    steps = Steps()
    trainer(max_epochs=1, callbacks=[steps]).fit(Model(), train_dataloaders=loader(5), datamodule=dm)
    assert len(steps.batches) == 5
    assert "train_dataloader" not in dm.calls and "val_dataloader" in dm.calls


def test_datamodule_must_be_a_datamodule() -> None:
    with pytest.raises(TypeError, match="datamodule"):
        trainer(max_epochs=1).fit(Model(), datamodule=object())  # type: ignore[arg-type]


# -- seed_everything ------------------------------------------------------------------------------------------------


def _seeded_run(seed: int) -> list[torch.Tensor]:
    assert fk.seed_everything(seed) == seed
    model = Model()
    data = DataLoader(RandomDataset(FEATURES, 12), batch_size=2, shuffle=True)
    trainer(max_epochs=2).fit(model, data)
    return [p.detach().clone() for p in model.parameters()]


def test_seed_everything_makes_two_runs_identical() -> None:
    first, second, other = _seeded_run(3), _seeded_run(3), _seeded_run(4)
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not all(torch.equal(a, c) for a, c in zip(first, other, strict=True))


class Draws(torch.utils.data.Dataset[torch.Tensor]):
    """Each item: draws from Python's, NumPy's and torch's generators in the worker."""

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor([random.random(), float(np.random.rand()), torch.rand(()).item()], dtype=torch.float64)

    def __len__(self) -> int:
        return 4


def _worker_draws(seed: int, workers: bool = True) -> tuple[DataLoader[torch.Tensor], list[torch.Tensor]]:
    fk.seed_everything(seed, workers=workers)
    draws: list[torch.Tensor] = []

    class Record(fk.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            draws.append(batch)
            return self.w * 0

        def configure_optimizers(self) -> Any:
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = DataLoader(Draws(), batch_size=2, num_workers=2)
    trainer(max_epochs=1).fit(Record(), data)
    return data, draws


def test_seed_everything_seeds_dataloader_workers() -> None:
    data, first = _worker_draws(11)
    assert data.worker_init_fn is worker_init_function
    _, second = _worker_draws(11)
    _, other = _worker_draws(12)
    # each worker makes one batch: the two workers draw differently in every generator ...
    assert all(first[0][0, j] != first[1][0, j] for j in range(3))
    # ... and the same seed repeats the run, another seed changes it
    for a, b in zip(first, second, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(first[0], other[0])


def test_seed_everything_without_workers_leaves_loaders_alone() -> None:
    data, _ = _worker_draws(11, workers=False)
    assert data.worker_init_fn is None
