"""``OnExceptionCheckpoint``: save a checkpoint when a run dies, so it can be resumed.

It owns only the decision to save on an exception (``KeyboardInterrupt`` included)
and the file's path; what the checkpoint holds and the atomic write are
``trainer.save_checkpoint``'s.
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

    The file is overwritten by each exception. Resume from it with
    ``trainer.fit(model, ckpt_path=callback.ckpt_path)``. If the save itself fails, a
    warning says why and the original exception still propagates.

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
