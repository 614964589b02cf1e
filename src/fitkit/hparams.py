"""``save_hyperparameters()`` and ``hparams``, shared by Module and DataModule, and the
rule for reading them back from a checkpoint: as data only.

A checkpoint's ``hyper_parameters`` become keyword arguments of the class's
``__init__`` and nothing else: no key names something to import or call. The
instantiation keys other tools give that meaning to (Lightning's ``_instantiator``
and ``_class_path``, Hydra's ``_target_``) are refused with an error rather than
passed on, so a checkpoint cannot smuggle them into an ``__init__(**kwargs)`` that
forwards them to such a tool.
"""

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


# Keys that some tool reads as "import and call this": never meaningful to fitkit.
RESERVED_KEYS = frozenset({"_instantiator", "_class_path", "_target_", "__target__"})


def saved_hparams(checkpoint: Mapping[str, Any], key: str = "hyper_parameters") -> dict[str, Any]:
    """The ``__init__`` keyword arguments stored under ``checkpoint[key]``, checked to be plain data.

    Raises :class:`~fitkit.utilities.exceptions.FitkitTypeError` when the entry is not
    a dict with str keys, and :class:`~fitkit.utilities.exceptions.MisconfigurationError`
    for a key in :data:`RESERVED_KEYS`.

    Example::

        >>> saved_hparams({"hyper_parameters": {"lr": 0.1}})
        {'lr': 0.1}
    """
    saved = checkpoint.get(key, {})
    if not isinstance(saved, Mapping):
        raise FitkitTypeError(
            invalid(f"checkpoint[{key!r}]", type(saved).__name__, "it is not a mapping", "a dict of __init__ arguments")
        )
    bad = [k for k in saved if not isinstance(k, str)]
    if bad:
        raise FitkitTypeError(
            invalid(f"checkpoint[{key!r}] keys", bad, "__init__ arguments are named by str", "str keys only")
        )
    check_reserved(saved, f"checkpoint[{key!r}]")
    return dict(saved)


def check_reserved(kwargs: Mapping[str, Any], where: str) -> None:
    """Refuse instantiation keys (:data:`RESERVED_KEYS`): fitkit never imports or calls what they name."""
    reserved = sorted(k for k in kwargs if k in RESERVED_KEYS)
    if reserved:
        raise MisconfigurationError(
            invalid(
                f"{where}[{reserved[0]!r}]",
                kwargs[reserved[0]],
                "fitkit never imports or calls anything a checkpoint names, and this key asks for exactly that",
                "plain __init__ arguments; rebuild the object yourself and load its weights "
                "(module.load_state_dict(fitkit.checkpoint.load(path)['state_dict']))",
            )
        )
