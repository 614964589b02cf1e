"""What the file-writing loggers share: versioned run folders, rank-zero gating, and
turning hyperparameters into flat, plain values.

:class:`FileLogger` owns ``<save_dir>/<name>/version_N``: the version is worked
out the first time anything asks for it (so building a logger touches no files),
and is the next integer after the highest ``version_N`` folder already there.
Only global rank zero writes; on other ranks ``experiment`` is a stand-in that
accepts every call and does nothing.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

import torch

from fitkit.loggers.logger import Logger
from fitkit.utilities.exceptions import FitkitTypeError, MisconfigurationError, invalid
from fitkit.utilities.rank_zero import global_rank

_VERSION_DIR = re.compile(r"^version_(\d+)$")


class FileLogger(Logger):
    """Base of the loggers that write under ``<save_dir>/<name>/<version>``.

    Args:
        save_dir: the root folder.
        name: the experiment's folder under ``save_dir`` (``""`` or ``None``: none).
        version: an int (folder ``version_N``), a str (the folder's name), or
            ``None`` for the next free ``version_N``.
        prefix: put in front of every metric name, joined with ``-``.

    Example::

        >>> class MyLogger(FileLogger):
        ...     def log_metrics(self, metrics, step=None): ...
        ...     def log_hyperparams(self, params, metrics=None): ...
        >>> MyLogger("runs", name="mnist", version=3).log_dir
        'runs/mnist/version_3'
    """

    def __init__(
        self,
        save_dir: str | os.PathLike[str],
        name: str | None = "fitkit_logs",
        version: int | str | None = None,
        prefix: str = "",
    ) -> None:
        if not isinstance(save_dir, (str, os.PathLike)):
            raise FitkitTypeError(invalid("save_dir", save_dir, "it is not a path", "a str or os.PathLike"))
        if name is not None and not isinstance(name, str):
            raise FitkitTypeError(invalid("name", name, "it is not a str", "a str or None"))
        if version is not None and (isinstance(version, bool) or not isinstance(version, (int, str))):
            raise FitkitTypeError(invalid("version", version, "it is not an int or a str", "an int, a str or None"))
        if isinstance(version, int) and version < 0:
            raise MisconfigurationError(invalid("version", version, "it is negative", "an int >= 0, a str or None"))
        if not isinstance(prefix, str):
            raise FitkitTypeError(invalid("prefix", prefix, "it is not a str", "a str"))
        self._save_dir = os.fspath(save_dir)
        self._name = name or ""
        self._version = version
        self._prefix = prefix

    @property
    def name(self) -> str:
        return self._name

    @property
    def save_dir(self) -> str:
        return self._save_dir

    @property
    def root_dir(self) -> str:
        """``<save_dir>/<name>``: the folder that holds every version of this experiment."""
        return os.path.join(self._save_dir, self._name) if self._name else self._save_dir

    @property
    def version(self) -> int | str:
        """The run's version; the next free one is chosen the first time this is read."""
        if self._version is None:
            self._version = next_version(self.root_dir)
        return self._version

    @property
    def log_dir(self) -> str:
        version = self.version
        return os.path.join(self.root_dir, version if isinstance(version, str) else f"version_{version}")

    def _with_prefix(self, metrics: Mapping[str, Any]) -> Mapping[str, Any]:
        if not self._prefix:
            return metrics
        return {f"{self._prefix}-{k}": v for k, v in metrics.items()}


def next_version(root_dir: str) -> int:
    """One more than the highest ``version_N`` folder in ``root_dir`` (0 if there is none).

    Example::

        >>> next_version("/nonexistent")
        0
    """
    try:
        names = os.listdir(root_dir)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    found = [
        int(m.group(1)) for n in names if (m := _VERSION_DIR.match(n)) and os.path.isdir(os.path.join(root_dir, n))
    ]
    return max(found) + 1 if found else 0


def share_versions(loggers: Iterable[Logger]) -> None:
    """Give file loggers that share a root folder and have no version yet one common version.

    So ``logger=[TensorBoardLogger(d), CSVLogger(d)]`` writes one ``version_N`` folder
    holding both the event file and ``metrics.csv``, instead of two folders.
    """
    groups: dict[str, list[FileLogger]] = {}
    for lg in loggers:
        if isinstance(lg, FileLogger) and lg._version is None:
            groups.setdefault(os.path.abspath(lg.root_dir), []).append(lg)
    for group in groups.values():
        if len(group) > 1:
            version = next_version(group[0].root_dir)
            for lg in group:
                lg._version = version


def is_rank_zero() -> bool:
    return global_rank() == 0


class DummyExperiment:
    """What ``experiment`` is on ranks other than zero: every call is accepted and ignored."""

    def nop(self, *args: Any, **kwargs: Any) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return self.nop

    def __getitem__(self, index: Any) -> DummyExperiment:
        return self

    def __setitem__(self, index: Any, value: Any) -> None:
        pass


def flatten_params(params: Any, delimiter: str = "/") -> dict[str, Any]:
    """Flatten nested dicts (and ``argparse.Namespace``) into ``{"a/b": value}``.

    Example::

        >>> flatten_params({"opt": {"lr": 0.1, "betas": (0.9, 0.99)}, "depth": 3})
        {'opt/lr': 0.1, 'opt/betas': (0.9, 0.99), 'depth': 3}
    """
    params = to_mapping(params)
    flat: dict[str, Any] = {}

    def visit(prefix: str, value: Any) -> None:
        if isinstance(value, argparse.Namespace):
            value = vars(value)
        if isinstance(value, Mapping) and value:
            for k, v in value.items():
                visit(f"{prefix}{delimiter}{k}" if prefix else str(k), v)
        else:
            flat[prefix] = value

    for k, v in params.items():
        visit(str(k), v)
    return flat


def to_mapping(params: Any) -> Mapping[str, Any]:
    if params is None:
        return {}
    if isinstance(params, argparse.Namespace):
        return vars(params)
    if isinstance(params, Mapping):
        return params
    raise FitkitTypeError(invalid("params", params, "hyperparameters must be a mapping", "a dict or a Namespace"))


def plain_scalar(value: Any) -> int | float | str | bool:
    """``value`` as TensorBoard's HPARAMS tab takes it: numbers, str and bool as they are, others as ``str``.

    Example::

        >>> plain_scalar(torch.tensor(0.5)), plain_scalar([1, 2]), plain_scalar(None)
        (0.5, '[1, 2]', 'None')
    """
    if isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return str(value)


def sanitize_params(params: Any) -> dict[str, int | float | str | bool]:
    """Flatten ``params`` and turn every value into a plain scalar."""
    return {k: plain_scalar(v) for k, v in flatten_params(params).items()}


def merge_into(row: MutableMapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Update ``row`` with ``new`` if no shared key has a different value; say whether it did."""
    for k, v in new.items():
        if k in row:
            old = row[k]
            if old != v and not (old != old and v != v):  # NaN equals NaN here
                return False
    row.update(new)
    return True
