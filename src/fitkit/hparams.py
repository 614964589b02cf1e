"""``save_hyperparameters()`` and ``hparams``, shared by Module and DataModule."""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from types import FrameType
from typing import Any

from fitkit.utilities.exceptions import FitkitTypeError, MisconfigurationError, invalid


class AttributeDict(dict):  # type: ignore[type-arg]
    """A dict whose keys read as attributes: ``hparams.lr`` is ``hparams["lr"]``."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError as err:
            raise AttributeError(f"No hyperparameter {key!r}; saved: {sorted(self)}") from err

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value


class HyperparametersMixin:
    """Gives a class ``save_hyperparameters()`` and ``hparams``."""

    _hparams: AttributeDict

    @property
    def hparams(self) -> AttributeDict:
        """The saved hyperparameters (an :class:`AttributeDict`)."""
        try:
            return self.__dict__["_hparams"]
        except KeyError:
            hp = AttributeDict()
            self.__dict__["_hparams"] = hp
            return hp

    def save_hyperparameters(
        self, *args: Any, ignore: str | Iterable[str] | None = None, frame: FrameType | None = None
    ) -> None:
        """Store the ``__init__`` arguments in :attr:`hparams`.

        Args:
            *args: nothing (save every ``__init__`` argument), names of the arguments
                to save, or one dict / ``argparse.Namespace`` to save as is.
            ignore: argument names to leave out (e.g. modules passed in).

        Example::

            >>> import fitkit
            >>> class Net(fitkit.Module):
            ...     def __init__(self, lr=0.1, width=8):
            ...         super().__init__()
            ...         self.save_hyperparameters()
            >>> Net(lr=0.5).hparams
            {'lr': 0.5, 'width': 8}
        """
        ignored = {ignore} if isinstance(ignore, str) else set(ignore or ())
        if len(args) == 1 and not isinstance(args[0], str):
            given = args[0]
            values = dict(vars(given)) if not isinstance(given, Mapping) and hasattr(given, "__dict__") else given
            if not isinstance(values, Mapping):
                raise FitkitTypeError(
                    invalid("save_hyperparameters(*args)", given, "it is not a mapping", "names, a dict or a Namespace")
                )
            self.hparams.update({k: v for k, v in values.items() if k not in ignored})
            return
        init_args = _collect_init_args(self, frame or inspect.currentframe().f_back)  # type: ignore[union-attr]
        if args:
            missing = [a for a in args if a not in init_args]
            if missing:
                raise MisconfigurationError(
                    invalid(
                        "save_hyperparameters(*args)",
                        missing,
                        "not __init__ arguments",
                        f"names among {sorted(init_args)}",
                    )
                )
            init_args = {a: init_args[a] for a in args}
        self.hparams.update({k: v for k, v in init_args.items() if k not in ignored})


def _collect_init_args(obj: object, frame: FrameType | None) -> dict[str, Any]:
    """Walk up the ``__init__`` frames that are building ``obj`` and collect their arguments.

    The outermost (most derived) class's values win, since they are what the user
    passed; parents' defaults fill in the rest.
    """
    collected: list[dict[str, Any]] = []
    while frame is not None and frame.f_code.co_name == "__init__":
        info = inspect.getargvalues(frame)
        if not info.args or frame.f_locals.get(info.args[0]) is not obj:
            break
        local = frame.f_locals
        args = {name: local[name] for name in info.args[1:] if name in local}
        if info.keywords and isinstance(local.get(info.keywords), dict):
            args.update(local[info.keywords])
        collected.append(args)
        frame = frame.f_back
    merged: dict[str, Any] = {}
    for args in collected:  # innermost (parent) first, outer (child) overrides
        merged.update(args)
    return merged
