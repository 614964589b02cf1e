"""The checkpoint file: its format version, atomic writes, and safe loading.

A checkpoint is one flat dict of tensors and plain Python values (no pickled
objects), so it always loads with ``torch.load(weights_only=True)``. What goes into
it is decided by the Trainer (``trainer/checkpointing.py``); this module only makes
sure it is plain data, writes it so the final path never holds a partial file, and
refuses files it cannot trust.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any

import torch

from fitkit._version import __version__
from fitkit.utilities.exceptions import FitkitRuntimeError, FitkitTypeError, MisconfigurationError, invalid

FORMAT_VERSION = 1
_PLAIN = (str, int, float, bool, bytes, type(None))
_PLAIN_TYPES = frozenset(_PLAIN)


def check_plain(obj: Any, where: str = "checkpoint") -> None:
    """Raise if ``obj`` holds anything but tensors and plain Python data.

    Example::

        >>> check_plain({"lr": 0.1, "w": torch.zeros(2), "sizes": [1, 2]})
        >>> check_plain({"fn": print})
        Traceback (most recent call last):
        ...
        fitkit.utilities.exceptions.FitkitTypeError: `checkpoint['fn']=<built-in function print>` is not valid: ...
    """
    if isinstance(obj, (torch.Tensor, *_PLAIN)) or isinstance(obj, (torch.dtype, torch.device, torch.Size)):
        return
    if isinstance(obj, Enum):
        raise FitkitTypeError(
            invalid(
                where,
                obj,
                "enums are pickled objects",
                "plain data: str, int, float, bool, None, tensors, lists, tuples and dicts of those",
            )
        )
    if isinstance(obj, (list, tuple)):
        if all(type(item) in _PLAIN_TYPES for item in obj):  # e.g. an RNG state: 625 ints
            return
        for i, item in enumerate(obj):
            check_plain(item, f"{where}[{i}]")
        return
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            if not isinstance(key, (str, int, float, bool, type(None))):
                raise FitkitTypeError(invalid(f"{where} key", key, "only plain keys can be saved", "str or int keys"))
            check_plain(value, f"{where}[{key!r}]")
        return
    raise FitkitTypeError(
        invalid(
            where,
            obj,
            f"a {type(obj).__name__} would have to be pickled, and fitkit checkpoints hold plain data only",
            "tensors, str, int, float, bool, None, and lists, tuples and dicts of those "
            "(convert it, or leave it out with save_hyperparameters(ignore=[...]))",
        )
    )


def atomic_save(checkpoint: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write ``checkpoint`` to ``path`` so that ``path`` is either the old file or the whole new one.

    The data goes to a temporary file in the same directory, is flushed and
    fsynced, then renamed over ``path``; the directory is fsynced so the rename
    itself survives a crash.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        _replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _replace(src: str, dst: Path) -> None:
    # A separate function so tests can simulate a crash between write and rename.
    os.replace(src, dst)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load(path: str | os.PathLike[str], map_location: Any = None) -> dict[str, Any]:
    """Load a fitkit checkpoint with ``weights_only=True``; refuse newer or foreign files."""
    path = Path(path)
    if not path.is_file():
        raise MisconfigurationError(invalid("ckpt_path", str(path), "no such file", "the path of a checkpoint file"))
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises UnpicklingError for anything but plain data
        raise FitkitRuntimeError(
            f"Refusing to load {str(path)!r}: it is not a plain-data checkpoint that loads with "
            f"torch.load(weights_only=True) ({type(err).__name__}: {str(err).splitlines()[0]})."
        ) from err
    if not isinstance(checkpoint, dict) or "format_version" not in checkpoint:
        raise FitkitRuntimeError(f"{str(path)!r} is not a fitkit checkpoint (no 'format_version' key).")
    version = checkpoint["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise FitkitRuntimeError(
            f"{str(path)!r} has checkpoint format {version!r}, written by fitkit "
            f"{checkpoint.get('fitkit_version', '?')}; this fitkit ({__version__}) reads formats up to "
            f"{FORMAT_VERSION}. Upgrade fitkit to load it."
        )
    return checkpoint


def header() -> dict[str, Any]:
    """The keys every checkpoint starts with."""
    return {"fitkit_version": __version__, "format_version": FORMAT_VERSION}
