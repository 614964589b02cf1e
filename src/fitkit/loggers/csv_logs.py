"""``CSVLogger``: ``metrics.csv`` and ``hparams.yaml`` in ``<save_dir>/<name>/version_N``.

Needs nothing beyond the standard library: ``hparams.yaml`` is written by
:func:`to_yaml` (plain types only; anything else is written as its ``str``).
``metrics.csv`` has one row per step (a ``step`` column first, then each metric in
the order it first appeared); when a new metric appears, the file is rewritten
with the wider header. Rows are written every ``flush_logs_every_n_steps`` steps and
at each epoch end, so the file can be read while training runs.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
from collections.abc import Mapping
from typing import Any

import torch

from fitkit.loggers._common import DummyExperiment, FileLogger, is_rank_zero, merge_into, to_mapping
from fitkit.utilities.exceptions import MisconfigurationError, invalid


class CSVLogger(FileLogger):
    """Log metrics to ``metrics.csv`` and hyperparameters to ``hparams.yaml``.

    Args:
        save_dir: the root folder.
        name: the experiment's folder under ``save_dir``; ``""`` for none.
        version: an int (folder ``version_N``), a str (the folder's name), or ``None``
            for the next free ``version_N``.
        prefix: put in front of every metric name, joined with ``-``.
        flush_logs_every_n_steps: write buffered rows once the steps logged span this
            many (they are also written at each epoch end and when the run ends).

    Example::

        >>> import fitkit
        >>> from fitkit.loggers import CSVLogger
        >>> trainer = fitkit.Trainer(max_epochs=3, logger=CSVLogger("runs"))
        >>> # trainer.fit(model, loader); then: pandas.read_csv(trainer.log_dir + "/metrics.csv")
    """

    def __init__(
        self,
        save_dir: str | os.PathLike[str],
        name: str | None = "fitkit_logs",
        version: int | str | None = None,
        prefix: str = "",
        flush_logs_every_n_steps: int = 100,
    ) -> None:
        super().__init__(save_dir, name, version, prefix)
        n = flush_logs_every_n_steps
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise MisconfigurationError(
                invalid("flush_logs_every_n_steps", n, "it must be a positive int", "an int >= 1")
            )
        self._flush_every = n
        self._experiment: CSVWriter | None = None

    @property
    def experiment(self) -> Any:
        """The :class:`CSVWriter` (created on first use); a do-nothing stand-in on ranks other than zero."""
        if self._experiment is not None:
            return self._experiment
        if not is_rank_zero():
            return DummyExperiment()
        self._experiment = CSVWriter(self.log_dir, self._flush_every)
        return self._experiment

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        if is_rank_zero():
            self.experiment.log_metrics(self._with_prefix(metrics), step)

    def log_hyperparams(self, params: Any, metrics: Mapping[str, float] | None = None) -> None:
        """Write ``params`` to ``hparams.yaml``; ``metrics``, if given, become a row at step 0."""
        if not is_rank_zero():
            return
        self.experiment.log_hparams(params)
        if metrics:
            self.log_metrics(metrics, 0)

    def save(self) -> None:
        if self._experiment is not None and is_rank_zero():
            self._experiment.save()

    def finalize(self, status: str) -> None:
        self.save()


class CSVWriter:
    """Buffers metric rows and writes ``metrics.csv``; writes ``hparams.yaml``.

    Rows logged at the same step merge into one while no metric in them disagrees.
    A folder that already holds ``metrics.csv`` (an explicit ``version`` reused, e.g.
    when resuming) is appended to.

    Example::

        writer = CSVWriter("runs/version_0", flush_every=100)
        writer.log_metrics({"loss": 0.5}, step=10)
        writer.save()
    """

    METRICS_FILE = "metrics.csv"
    HPARAMS_FILE = "hparams.yaml"

    def __init__(self, log_dir: str, flush_every: int = 100) -> None:
        os.makedirs(log_dir, exist_ok=True)
        self.log_dir = log_dir
        self.metrics_file_path = os.path.join(log_dir, self.METRICS_FILE)
        self.hparams: dict[str, Any] = {}
        self._flush_every = flush_every
        self._flush_at: int | None = None
        self._rows: list[dict[str, Any]] = []
        self._columns: list[str] = []
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                self._columns = next(csv.reader(f), [])

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Buffer one row; write the buffer first if it spans ``flush_every`` steps."""
        rows = self._rows
        if step is None:
            step = rows[-1]["step"] + 1 if rows else 0
        row: dict[str, Any] = {"step": step}
        for k, v in metrics.items():
            row[k] = v.item() if isinstance(v, torch.Tensor) else v
        if rows and rows[-1]["step"] == step and merge_into(rows[-1], row):
            return
        if self._flush_at is not None and step >= self._flush_at:
            self.save()
        if self._flush_at is None:
            self._flush_at = step + self._flush_every
        self._rows.append(row)  # not `rows`: save() replaced the list

    def log_hparams(self, params: Any) -> None:
        """Add ``params`` to what ``hparams.yaml`` holds and rewrite it."""
        self.hparams.update(to_mapping(params))
        _atomic_write(os.path.join(self.log_dir, self.HPARAMS_FILE), to_yaml(self.hparams))

    def save(self) -> None:
        """Write the buffered rows: appended, or the whole file rewritten if the header grew."""
        if not self._rows:
            return
        rows, self._rows, self._flush_at = self._rows, [], None
        columns = list(self._columns)
        seen = set(columns)
        for row in rows:
            for k in row:
                if k not in seen:
                    seen.add(k)
                    columns.append(k)
        if columns == self._columns and os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, "a", newline="") as f:
                csv.DictWriter(f, columns, restval="").writerows(rows)
            return
        old: list[dict[str, str]] = []
        if os.path.isfile(self.metrics_file_path):
            with open(self.metrics_file_path, newline="") as f:
                old = list(csv.DictReader(f))
        tmp = self.metrics_file_path + ".tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, columns, restval="")
            writer.writeheader()
            writer.writerows(old)
            writer.writerows(rows)
        os.replace(tmp, self.metrics_file_path)  # readers see the old file or the new one, never half
        self._columns = columns


def _atomic_write(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


# -- a small YAML writer for plain data -----------------------------------------------------

_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_./-]*$")
_RESERVED = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "none", "nan", "inf"}


def to_yaml(data: Any) -> str:
    """Write a mapping of plain Python data as block-style YAML (what ``yaml.safe_load`` reads back).

    ``None``, bool, int, float, str, lists, tuples and dicts (and ``argparse.Namespace``)
    are written as YAML; a one-element tensor as its number; anything else as its ``str``.

    Example::

        >>> print(to_yaml({"lr": 1e-3, "layers": [64, 32], "opt": {"name": "adam", "betas": (0.9, 0.99)}}), end="")
        lr: 0.001
        layers: [64, 32]
        opt:
          name: adam
          betas: [0.9, 0.99]
    """
    data = _plain(data)
    if not isinstance(data, dict) or not data:
        return _inline(data) + "\n"
    lines: list[str] = []
    _mapping(data, 0, lines)
    return "\n".join(lines) + "\n"


def _plain(value: Any) -> Any:
    if isinstance(value, argparse.Namespace):
        value = vars(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return str(value)


def _is_block(value: Any) -> bool:
    return bool(value) and (
        (isinstance(value, dict)) or (isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value))
    )


def _mapping(data: dict[str, Any], indent: int, lines: list[str]) -> None:
    pad = " " * indent
    for key, value in data.items():
        if _is_block(value):
            lines.append(f"{pad}{_scalar(key)}:")
            (_mapping if isinstance(value, dict) else _sequence)(value, indent + 2, lines)
        else:
            lines.append(f"{pad}{_scalar(key)}: {_inline(value)}")


def _sequence(items: list[Any], indent: int, lines: list[str]) -> None:
    pad = " " * indent
    for item in items:
        if _is_block(item):
            start = len(lines)
            (_mapping if isinstance(item, dict) else _sequence)(item, indent + 2, lines)
            lines[start] = f"{pad}- {lines[start][indent + 2 :]}"
        else:
            lines.append(f"{pad}- {_inline(item)}")


def _inline(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_scalar(k)}: {_inline(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_inline(v) for v in value) + "]"
    return _scalar(value)


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        text = repr(value)
        # YAML 1.1 readers (PyYAML) need a dot in a float: 1e-05 -> 1.0e-05.
        return text.replace("e", ".0e") if "e" in text and "." not in text else text
    text = str(value)
    if _PLAIN.match(text) and text.lower() not in _RESERVED:
        return text
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a valid YAML double-quoted scalar
