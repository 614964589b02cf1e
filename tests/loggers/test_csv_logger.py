"""CSVLogger on its own: metrics.csv (header, rows, flushing) and hparams.yaml."""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

import pytest
import torch

from fitkit.loggers import CSVLogger
from fitkit.loggers._common import DummyExperiment
from fitkit.loggers.csv_logs import to_yaml
from fitkit.utilities.exceptions import MisconfigurationError


def read_csv(path: str) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def test_header_grows_and_rows_are_keyed_by_step(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path)
    logger.log_metrics({"loss": 0.5, "epoch": 0}, step=2)
    logger.save()
    logger.log_metrics({"loss": 0.25, "epoch": 0}, step=4)
    logger.log_metrics({"val_loss": 0.125, "epoch": 0}, step=4)  # same step: one row
    logger.log_metrics({"loss": torch.tensor(0.0625), "epoch": 1}, step=6)
    logger.finalize("success")
    path = os.path.join(logger.log_dir, "metrics.csv")
    header, rows = read_csv(path)
    assert header == ["step", "loss", "epoch", "val_loss"]
    assert rows == [
        {"step": "2", "loss": "0.5", "epoch": "0", "val_loss": ""},
        {"step": "4", "loss": "0.25", "epoch": "0", "val_loss": "0.125"},
        {"step": "6", "loss": "0.0625", "epoch": "1", "val_loss": ""},
    ]
    assert not os.path.exists(path + ".tmp")


def test_a_conflicting_value_at_the_same_step_gets_its_own_row(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path, prefix="p")
    logger.log_metrics({"loss": 1.0}, step=3)
    logger.log_metrics({"loss": 2.0}, step=3)
    logger.log_metrics({"nan": float("nan")}, step=3)
    logger.log_metrics({"nan": float("nan"), "other": 1.0}, step=3)  # NaN agrees with NaN
    logger.finalize("success")
    header, rows = read_csv(os.path.join(logger.log_dir, "metrics.csv"))
    assert header == ["step", "p-loss", "p-nan", "p-other"]
    assert [r["p-loss"] for r in rows] == ["1.0", "2.0"]
    assert rows[1]["p-nan"] == "nan" and rows[1]["p-other"] == "1.0"


def test_rows_are_flushed_while_training_runs(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path, flush_logs_every_n_steps=10)
    path = os.path.join(logger.log_dir, "metrics.csv")
    for step in range(0, 10, 5):
        logger.log_metrics({"loss": float(step)}, step)
    assert not os.path.exists(path)  # steps 0 and 5: less than 10 apart
    logger.log_metrics({"loss": 10.0}, 10)
    assert [r["step"] for r in read_csv(path)[1]] == ["0", "5"]
    for step in (15, 20):
        logger.log_metrics({"loss": float(step)}, step)
    assert [r["step"] for r in read_csv(path)[1]] == ["0", "5", "10", "15"]
    logger.save()  # what the trainer calls at each epoch end
    assert [r["step"] for r in read_csv(path)[1]] == ["0", "5", "10", "15", "20"]


def test_an_existing_version_is_appended_to(tmp_path: Path) -> None:
    first = CSVLogger(tmp_path, version=0)
    first.log_metrics({"loss": 1.0}, 1)
    first.finalize("success")
    again = CSVLogger(tmp_path, version=0)
    again.log_metrics({"loss": 0.5}, 2)
    again.log_metrics({"acc": 0.5}, 3)
    again.finalize("success")
    header, rows = read_csv(os.path.join(again.log_dir, "metrics.csv"))
    assert header == ["step", "loss", "acc"]
    assert [(r["step"], r["loss"], r["acc"]) for r in rows] == [("1", "1.0", ""), ("2", "0.5", ""), ("3", "", "0.5")]


def test_hparams_yaml(tmp_path: Path) -> None:
    logger = CSVLogger(tmp_path)
    logger.log_hyperparams(argparse.Namespace(lr=1e-5, layers=[64, 32], opt={"name": "adam", "betas": (0.9, 0.99)}))
    logger.log_hyperparams({"note": "two words", "device": None}, metrics={"hp": 1.0})
    logger.finalize("success")
    text = Path(logger.log_dir, "hparams.yaml").read_text()
    assert text == (
        'lr: 1.0e-05\nlayers: [64, 32]\nopt:\n  name: adam\n  betas: [0.9, 0.99]\nnote: "two words"\ndevice: null\n'
    )
    assert read_csv(os.path.join(logger.log_dir, "metrics.csv"))[1] == [{"step": "0", "hp": "1.0"}]


def test_to_yaml_quotes_what_a_reader_would_misread() -> None:
    data = {
        "plain": "adam",
        "words": ["yes", "no", "null", "1e3", "", "a: b", "#x", "é"],
        "numbers": [1, -2, 0.5, float("inf"), float("-inf"), float("nan"), 1e20, True],
        "nested": [{"a": 1, "b": [2, 3]}, [4, [5]]],
        "empty": {"d": {}, "l": []},
        "other": Path("a/b"),
        3: torch.tensor(2.5),
    }
    assert to_yaml(data) == (
        "plain: adam\n"
        'words: ["yes", "no", "null", "1e3", "", "a: b", "#x", "é"]\n'
        "numbers: [1, -2, 0.5, .inf, -.inf, .nan, 1.0e+20, true]\n"
        "nested:\n"
        "  - a: 1\n"
        "    b: [2, 3]\n"
        "  - - 4\n"
        "    - [5]\n"
        "empty:\n"
        "  d: {}\n"
        "  l: []\n"
        "other: a/b\n"
        '"3": 2.5\n'
    )
    assert to_yaml({}) == "{}\n"
    yaml = pytest.importorskip("yaml")
    loaded = yaml.safe_load(to_yaml(data))
    assert loaded["words"] == data["words"] and loaded["numbers"][:3] == [1, -2, 0.5]


def test_other_ranks_write_nothing(tmp_path: Path) -> None:
    os.environ["RANK"] = "1"  # the conftest restores the environment
    logger = CSVLogger(tmp_path)
    logger.log_hyperparams({"lr": 0.1})
    logger.log_metrics({"loss": 1.0}, 1)
    assert isinstance(logger.experiment, DummyExperiment)
    logger.finalize("success")
    assert os.listdir(tmp_path) == []


def test_bad_flush_interval_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MisconfigurationError, match="flush_logs_every_n_steps"):
        CSVLogger(tmp_path, flush_logs_every_n_steps=0)
