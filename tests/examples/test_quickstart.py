"""Smoke and accuracy checks for ``examples/quickstart.py`` (digits CNN)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import _examples
import pytest

pytest.importorskip("sklearn")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "quickstart.py"


@pytest.fixture(scope="module")
def quickstart() -> Iterator[ModuleType]:
    with _examples.loaded(EXAMPLE, "fitkit_example_quickstart") as module:
        yield module


def test_split_is_seeded_and_disjoint(quickstart: ModuleType) -> None:
    a, b = quickstart.DigitsDataModule(seed=3), quickstart.DigitsDataModule(seed=3)
    a.setup("fit")
    b.setup("fit")
    sizes = (len(a.train_set), len(a.val_set), len(a.test_set))
    assert sizes == (1259, 269, 269)
    assert a.test_set.indices == b.test_set.indices
    assert not set(a.train_set.indices) & set(a.test_set.indices)
    assert not set(a.val_set.indices) & set(a.test_set.indices)


def test_smoke_one_epoch(quickstart: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    accuracy = quickstart.main(["--max-epochs", "1"])
    assert isinstance(accuracy, float)
    assert 0.0 <= accuracy <= 1.0
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert last_line == f"test accuracy: {accuracy:.4f}"


def test_common_options_reach_the_trainer(quickstart: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    args = quickstart.parse_args(["--fast-dev-run", "2", "--accelerator", "cpu", "--precision", "bf16-mixed"])
    assert (args.max_epochs, args.batch_size, args.seed, args.num_threads) == (15, 64, 42, 1)  # its defaults
    accuracy = quickstart.main(["--fast-dev-run", "2", "--accelerator", "cpu", "--precision", "bf16-mixed"])
    assert 0.0 <= accuracy <= 1.0
    out = capsys.readouterr().out
    assert "after 1 epochs (2 steps)" in out  # fast_dev_run=2: two training batches, one epoch


def test_full_run_reaches_95_percent(quickstart: ModuleType) -> None:
    # The default run (15 epochs) takes a few seconds on 2 CPU cores, so it stays in the main lane.
    accuracy = quickstart.main([])
    assert accuracy >= 0.95, accuracy
