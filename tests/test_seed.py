"""``fitkit.seed_everything``: accepted values, the environment variables, reproducibility."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import fitkit as fk
from fitkit.testing import BoringModule
from fitkit.trainer import data
from fitkit.utilities.seed import worker_init_function


@pytest.fixture(autouse=True)
def _restore_python_and_numpy_rng() -> Iterator[None]:
    py_state, np_state = random.getstate(), np.random.get_state()
    yield
    random.setstate(py_state)
    np.random.set_state(np_state)


def _draw() -> tuple[float, float, list[float]]:
    return random.random(), float(np.random.rand()), torch.rand(3).tolist()


@pytest.mark.parametrize("seed", [0, 1, 42, 2**32 - 1])
def test_returns_the_seed_and_sets_the_environment(seed: int) -> None:
    assert fk.seed_everything(seed) == seed
    assert os.environ["FITKIT_GLOBAL_SEED"] == str(seed)
    assert os.environ["FITKIT_SEED_WORKERS"] == "1"


def test_workers_flag_is_recorded() -> None:
    fk.seed_everything(3, workers=False)
    assert os.environ["FITKIT_SEED_WORKERS"] == "0"


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, True, "42", [1]])
def test_out_of_range_or_wrong_type(seed: Any) -> None:
    with pytest.raises(fk.MisconfigurationError) as info:
        fk.seed_everything(seed)
    message = str(info.value)
    assert f"`seed={seed!r}` is not valid" in message
    assert "[0, 4294967295]" in message
    assert isinstance(info.value, ValueError)


def test_none_reads_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FITKIT_GLOBAL_SEED", "123")
    assert fk.seed_everything() == 123
    first = _draw()
    fk.seed_everything(123)
    assert _draw() == first


def test_none_without_environment_warns_and_uses_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FITKIT_GLOBAL_SEED", raising=False)
    with pytest.warns(UserWarning, match="FITKIT_GLOBAL_SEED"):
        assert fk.seed_everything(None) == 0
    assert os.environ["FITKIT_GLOBAL_SEED"] == "0"


@pytest.mark.parametrize(
    ("env", "fragment"), [("abc", "`FITKIT_GLOBAL_SEED='abc'`"), ("-5", "`seed=-5`"), (str(2**40), f"`seed={2**40}`")]
)
def test_bad_environment_variable(monkeypatch: pytest.MonkeyPatch, env: str, fragment: str) -> None:
    monkeypatch.setenv("FITKIT_GLOBAL_SEED", env)
    with pytest.raises(fk.MisconfigurationError) as info:
        fk.seed_everything()
    assert fragment in str(info.value) and "Expected an int in [0, 4294967295]" in str(info.value)


def test_reproducible_random_numpy_and_torch() -> None:
    fk.seed_everything(7)
    first = _draw()
    fk.seed_everything(7)
    assert _draw() == first
    fk.seed_everything(8)
    assert _draw() != first


def test_reproducible_training() -> None:
    def run() -> list[torch.Tensor]:
        fk.seed_everything(11)
        model = BoringModule()  # initial weights and RandomDataset draw from the seeded RNG
        trainer = fk.Trainer(
            max_epochs=1,
            limit_train_batches=4,
            limit_val_batches=0,
            enable_progress_bar=False,
            logger=False,
            enable_checkpointing=False,
            enable_model_summary=False,
        )
        trainer.fit(model)
        return [p.detach().clone() for p in model.parameters()]

    first, second = run(), run()
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


class _Draws(Dataset[torch.Tensor]):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.tensor([random.random(), float(np.random.rand()), float(torch.rand(()))])


def test_seed_workers_only_when_asked() -> None:
    fk.seed_everything(1, workers=True)
    loader = DataLoader(_Draws(), num_workers=2)
    data.seed_workers(loader)
    assert loader.worker_init_fn is worker_init_function

    own = DataLoader(_Draws(), num_workers=2, worker_init_fn=print)
    data.seed_workers(own)
    assert own.worker_init_fn is print  # the user's own function is kept

    in_process = DataLoader(_Draws(), num_workers=0)
    data.seed_workers(in_process)
    assert in_process.worker_init_fn is None

    fk.seed_everything(1, workers=False)
    not_asked = DataLoader(_Draws(), num_workers=2)
    data.seed_workers(not_asked)
    assert not_asked.worker_init_fn is None


def test_worker_init_function_seeds_from_torch() -> None:
    torch.manual_seed(5)
    worker_init_function(0)
    first = (random.random(), float(np.random.rand()))
    torch.manual_seed(5)
    worker_init_function(0)
    assert (random.random(), float(np.random.rand())) == first


@pytest.mark.slow
def test_seeded_workers_repeat_per_seed_and_differ_per_worker() -> None:
    def draws() -> torch.Tensor:
        fk.seed_everything(21, workers=True)
        loader = DataLoader(_Draws(), batch_size=1, num_workers=2)
        data.seed_workers(loader)
        return torch.cat(list(loader))

    first, second = draws(), draws()
    assert torch.equal(first, second)
    # items 0 and 2 come from worker 0, items 1 and 3 from worker 1: each generator differs per worker
    assert all(first[0, k] != first[1, k] for k in range(3))


def test_rng_snapshot_keeps_python_state_as_a_tensor_and_reads_the_old_list_form() -> None:
    import random

    from fitkit.utilities import rng

    random.seed(7)
    snapshot = rng.capture()
    version, words, gauss = snapshot["python"]
    assert isinstance(words, torch.Tensor) and words.dtype == torch.int64 and words.numel() == 625
    expected = [random.random() for _ in range(3)]
    rng.restore(snapshot)
    assert [random.random() for _ in range(3)] == expected
    rng.restore({"python": [version, words.tolist(), gauss]})  # checkpoints written before the tensor form
    assert [random.random() for _ in range(3)] == expected


def test_take_device_seed_hands_out_the_last_seed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Devices torch.manual_seed misses (XLA) take seed_everything's seed at their next set-up."""
    from fitkit.utilities import seed as seed_module

    monkeypatch.setattr(seed_module, "_device_seed", None)
    monkeypatch.setattr(seed_module, "_env_seed_taken", True)
    assert seed_module.take_device_seed() is None  # never seeded: the device stream goes on
    fk.seed_everything(3)
    fk.seed_everything(4)
    assert seed_module.take_device_seed() == 4
    assert seed_module.take_device_seed() is None  # a second fit continues, as torch's generators do


def test_take_device_seed_follows_the_environment_once_in_a_fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """A launched replica never called seed_everything: it takes the parent's $FITKIT_GLOBAL_SEED, once."""
    from fitkit.utilities import seed as seed_module

    monkeypatch.setattr(seed_module, "_device_seed", None)
    monkeypatch.setattr(seed_module, "_env_seed_taken", False)
    monkeypatch.setenv("FITKIT_GLOBAL_SEED", "17")
    assert seed_module.take_device_seed() == 17
    assert seed_module.take_device_seed() is None
    monkeypatch.setattr(seed_module, "_env_seed_taken", False)
    monkeypatch.setenv("FITKIT_GLOBAL_SEED", "not a number")
    assert seed_module.take_device_seed() is None
