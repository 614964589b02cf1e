"""``OnExceptionCheckpoint``: save a checkpoint when a run dies, so it can be resumed.

It owns the decision to save on an exception (``KeyboardInterrupt`` and the
interruptions of ``trainer/signals.py`` included), the file's path, and what
``ckpt_path="last"`` means once such a file exists (:func:`newest_last_checkpoint`).
What the checkpoint holds and the atomic write are ``trainer.save_checkpoint``'s.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from fitkit.callbacks.checkpoint import Checkpoint
from fitkit.utilities.exceptions import FitkitTypeError, MisconfigurationError, invalid
from fitkit.utilities.rank_zero import rank_zero_warn

if TYPE_CHECKING:
    from fitkit.module import Module
    from fitkit.trainer.trainer import Trainer


class OnExceptionCheckpoint(Checkpoint):
    """Save ``<dirpath>/<filename>.ckpt`` when ``fit``, ``validate``, ``test`` or ``predict`` raises.

    This includes Ctrl-C and SIGTERM: the Trainer lets the current optimizer step finish,
    then runs ``on_exception``, so the checkpoint is taken at a step boundary and a
    resumed run continues exactly as the uninterrupted one would have (bitwise, in the
    middle of an epoch too). A second signal stops at once and saves nothing: a
    checkpoint from the middle of a step would not resume exactly.

    The file is overwritten by each exception. Resume from it with
    ``trainer.fit(model, ckpt_path=callback.ckpt_path)``, or with ``ckpt_path="last"``,
    which picks the newer of this file and what ``"last"`` finds otherwise (a
    ``ModelCheckpoint``'s ``last.ckpt``). If the save itself fails, a warning says why
    and the original exception still propagates.

    Args:
        dirpath: folder for the file.
        filename: file name without the ``.ckpt`` extension.

    Example::

        >>> import fitkit
        >>> trainer = fitkit.Trainer(callbacks=[OnExceptionCheckpoint("checkpoints")])
        >>> # Ctrl-C during trainer.fit(model) leaves checkpoints/on_exception.ckpt
    """

    FILE_EXTENSION = ".ckpt"

    def __init__(self, dirpath: str | os.PathLike[str], filename: str = "on_exception") -> None:
        if not isinstance(dirpath, (str, os.PathLike)):
            raise FitkitTypeError(invalid("dirpath", dirpath, "it is not a path", "a str or a pathlib.Path"))
        if not isinstance(filename, str) or not filename:
            raise MisconfigurationError(
                invalid("filename", filename, "it must be a non-empty str", "a file name without extension")
            )
        self.dirpath = os.path.abspath(os.path.expanduser(os.fspath(dirpath)))
        self.filename = filename

    @property
    def ckpt_path(self) -> str:
        """Where the checkpoint goes."""
        return os.path.join(self.dirpath, self.filename + self.FILE_EXTENSION)

    def on_exception(self, trainer: Trainer, module: Module, exception: BaseException) -> None:
        try:
            trainer.save_checkpoint(self.ckpt_path)
        except Exception as err:  # never hide the exception that ended the run
            rank_zero_warn(f"OnExceptionCheckpoint could not save {self.ckpt_path!r}: {type(err).__name__}: {err}")


def newest_last_checkpoint(trainer: Trainer) -> str | None:
    """What ``ckpt_path="last"`` resolves to once an ``OnExceptionCheckpoint`` file exists.

    The newest file (by modification time) among every ``OnExceptionCheckpoint`` file of
    ``trainer`` and the checkpoint ``"last"`` resolves to without them (a
    ``ModelCheckpoint``'s ``last_model_path``, or the newest file in its ``dirpath``).
    None when no such file exists: then ``"last"`` resolves as before. As in Lightning,
    "last" means the most recent state, whichever callback wrote it.

    Example::

        >>> trainer = fitkit.Trainer(callbacks=[ModelCheckpoint("ckpts", save_last=True),
        ...                                     OnExceptionCheckpoint("ckpts")])  # doctest: +SKIP
        >>> trainer.fit(model, ckpt_path="last")  # the newer of last.ckpt and on_exception.ckpt  # doctest: +SKIP
    """
    files = [
        cb.ckpt_path
        for cb in trainer.callbacks
        if isinstance(cb, OnExceptionCheckpoint) and os.path.isfile(cb.ckpt_path)
    ]
    if not files:
        return None
    from fitkit.trainer.checkpointing import resolve_path

    try:
        other = resolve_path(trainer, "last")
    except MisconfigurationError:  # nothing else to compare with
        other = None
    if other is not None and os.path.isfile(other):
        files.append(other)
    return max(files, key=os.path.getmtime)
