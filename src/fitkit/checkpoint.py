"""The checkpoint file: its format version, atomic writes, and safe loading.

A checkpoint is one flat dict of tensors and plain Python values (no pickled
objects), so it always loads with ``torch.load(weights_only=True)``. What goes into
it is decided by the Trainer (``trainer/checkpointing.py``); this module only makes
sure it is plain data, writes it so the final path never holds a partial file, and
refuses files it cannot trust.
"""

from __future__ import annotations

import errno
import os
import pickle
import platform
import re
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


class CheckpointWriteError(FitkitRuntimeError, OSError):
    """A checkpoint could not be written: the disk is full or read-only, or the path is unusable.

    The message names the path and the cause; the ``OSError`` behind it is
    ``__cause__`` and its ``errno`` is copied, so both ``except FitkitRuntimeError``
    and ``except OSError`` catch it. The file that was at the path before is unchanged
    and the temporary file is gone.

    Example::

        >>> try:
        ...     trainer.save_checkpoint("/read-only/model.ckpt")
        ... except CheckpointWriteError as err:
        ...     print(err.errno == errno.EROFS, err)
        True Could not write checkpoint '/read-only/model.ckpt': Read-only file system (EROFS). ...
    """


_ELSEWHERE = "save to another folder (ModelCheckpoint(dirpath=...), Trainer(default_root_dir=...))"
_HINTS = {
    "ENOSPC": f"The disk is full: free space, or {_ELSEWHERE}.",
    "EDQUOT": f"Your disk quota is used up: free space, or {_ELSEWHERE}.",
    "EROFS": f"The file system is mounted read-only: {_ELSEWHERE}.",
    "EACCES": f"This user may not write there: fix the folder's permissions, or {_ELSEWHERE}.",
    "EPERM": f"This user may not write there: fix the folder's permissions, or {_ELSEWHERE}.",
    "EFBIG": f"The file is larger than the file-size limit (`ulimit -f`) or the file system allows: {_ELSEWHERE}.",
    "ENOTDIR": "A part of the path is a file, not a folder: fix the path.",
    "EEXIST": "A part of the path is a file, not a folder: fix the path.",
}


def write_error(path: str | os.PathLike[str], cause: OSError) -> CheckpointWriteError:
    """The :class:`CheckpointWriteError` for an ``OSError`` met while writing ``path`` (raise it ``from cause``)."""
    code = errno.errorcode.get(cause.errno) if isinstance(cause.errno, int) else None
    reason = cause.strerror or str(cause) or type(cause).__name__
    if code:
        reason = f"{reason} ({code})"
    hint = _HINTS.get(code or "", f"Check that the folder exists, is writable and has free space, or {_ELSEWHERE}.")
    error = CheckpointWriteError(
        f"Could not write checkpoint {os.fspath(path)!r}: {reason}. {hint} "
        "The file that was at this path, if any, is unchanged."
    )
    error.errno = cause.errno  # not passed to the constructor: OSError would then rewrite the message
    return error


def _os_error(err: BaseException) -> OSError | None:
    """The ``OSError`` behind ``err``: torch.save reports a failed write as a RuntimeError raised while handling it."""
    seen: BaseException | None = err
    for _ in range(8):
        if seen is None or isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


# Temporary files are named `.{name}.{host}.{pid}.{random}.tmp`, so that a later run can tell
# one left by a killed process (same host, pid gone) from one another process is still writing.
_HOST = re.sub(r"[^A-Za-z0-9-]", "-", platform.node())[:40] or "host"
_TEMP_NAME = re.compile(r"\.(?P<name>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp")


def temp_prefix(name: str) -> str:
    """How the name of a temporary file that will become file ``name`` starts (see :func:`remove_stale_temp_files`)."""
    return f".{name}.{_HOST}.{os.getpid()}."


def remove_stale_temp_files(folder: str | os.PathLike[str], suffix: str = ".ckpt") -> list[str]:
    """Delete the temporary files of writes of ``*{suffix}`` files in ``folder`` that died; return their paths.

    A file is stale when its name says it was written on this host by a process that
    no longer exists (a run killed mid-write). Files of live processes, of other hosts,
    and of other names are left alone. Nothing is removed on Windows, where a process
    cannot be probed without being terminated.

    Example::

        >>> remove_stale_temp_files("checkpoints")  # after a run was killed while saving
        ['checkpoints/.last.ckpt.node1.4242.k2j1x9z0.tmp']
    """
    if os.name != "posix":
        return []
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    removed = []
    for name in names:
        match = _TEMP_NAME.fullmatch(name)
        if match is None or match["host"] != _HOST or not match["name"].endswith(suffix):
            continue
        if _alive(int(match["pid"])):
            continue
        path = os.path.join(folder, name)
        try:
            os.remove(path)
        except OSError:  # gone already, or not ours to delete: leave it
            continue
        removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OverflowError, ValueError):  # not a valid pid, so no process has it
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def atomic_save(checkpoint: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write ``checkpoint`` to ``path`` so that ``path`` is either the old file or the whole new one.

    The data goes to a temporary file in the same directory (``.{name}.{host}.{pid}.*.tmp``),
    is flushed and fsynced, then renamed over ``path``; the directory is fsynced so the
    rename itself survives a crash. If the write fails (disk full, read-only file system,
    file-size limit, bad path) the temporary file is removed and a
    :class:`CheckpointWriteError` naming the path and the cause is raised from the ``OSError``.
    A process killed mid-write leaves its temporary file behind (see
    :func:`remove_stale_temp_files`), never a partial ``path``.

    Example::

        >>> atomic_save({**header(), "w": torch.zeros(2)}, "model.ckpt")
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        _replace(tmp, path)
        tmp = None
    except BaseException as err:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:  # already gone; the error that matters is `err`
                pass
        cause = _os_error(err) if isinstance(err, Exception) else None
        if cause is None or isinstance(err, CheckpointWriteError):
            raise
        raise write_error(path, cause) from cause
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
    """Load a fitkit checkpoint with ``weights_only=True``; refuse newer or foreign files.

    Nothing in the file is executed: torch's restricted unpickler refuses any
    object that is not a tensor or plain data *before* calling anything, and this
    function turns that refusal into a :class:`FitkitRuntimeError` (see the trust
    model in ``docs/checkpointing.md``).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise FitkitTypeError(invalid("ckpt_path", path, "it is not a path", "a str or os.PathLike path"))
    path = Path(path)
    if not path.is_file():
        raise MisconfigurationError(invalid("ckpt_path", str(path), "no such file", "the path of a checkpoint file"))
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:  # an object that would have to be built by code from the file
        named = re.search(r"GLOBAL ([\w.]+)", str(err))
        what = f" ({named.group(1)})" if named else ""
        raise FitkitRuntimeError(
            f"Refusing to load {str(path)!r}: it holds a pickled object{what} that loading would have to "
            "construct by running code named in the file, and fitkit loads plain data only "
            "(torch.load(weights_only=True)). Nothing from the file was run. Use torch.load(weights_only=False) "
            "yourself only for a file whose maker you trust."
        ) from err
    except Exception as err:  # truncated, empty, or not a torch.save file at all
        first = (str(err).splitlines() or [""])[0][:200]
        raise FitkitRuntimeError(
            f"Refusing to load {str(path)!r}: it is not a complete torch.save file (truncated, empty, or "
            f"another format; {type(err).__name__}: {first}). Expected a checkpoint written by fitkit."
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
