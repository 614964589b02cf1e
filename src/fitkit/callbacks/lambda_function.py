"""``LambdaCallback``: a callback made of plain functions, one per hook, given as keywords.

This file owns turning ``LambdaCallback(on_train_epoch_end=fn, ...)`` into a callback
whose class overrides exactly those hooks (so the Trainer, which resolves once per
run which hooks a callback overrides, calls only them), and refusing names that are
not hooks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fitkit.callbacks.callback import HOOKS, Callback, suggest_hooks
from fitkit.utilities.exceptions import FitkitTypeError, MisconfigurationError, invalid


def _forwarder(name: str) -> Callable[..., Any]:
    def hook(self: LambdaCallback, *args: Any, **kwargs: Any) -> Any:
        return self.hooks[name](*args, **kwargs)

    hook.__name__ = hook.__qualname__ = name
    return hook


class LambdaCallback(Callback):
    """Build a callback from functions: each keyword is a hook name, each value its function.

    The functions receive what the hook receives, ``(trainer, module, ...)``. Any hook
    of :class:`fitkit.Callback` may be given (``setup``, ``on_train_batch_end``,
    ``on_exception``, ...); other names are refused with the closest hook names.

    Example::

        >>> import fitkit
        >>> epochs = []
        >>> cb = fitkit.callbacks.LambdaCallback(
        ...     on_train_epoch_end=lambda trainer, module: epochs.append(trainer.current_epoch)
        ... )
        >>> sorted(cb.hooks)
        ['on_train_epoch_end']
    """

    def __init__(self, **hooks: Callable[..., Any]) -> None:
        for name, fn in hooks.items():
            if name not in HOOKS:
                close = suggest_hooks(name)
                raise MisconfigurationError(
                    invalid("LambdaCallback keyword", name, "this is not a hook the Trainer fires", f"one of {close}")
                )
            if not callable(fn):
                raise FitkitTypeError(
                    invalid(
                        f"LambdaCallback({name}=...)", fn, "it is not callable", "a function of (trainer, module, ...)"
                    )
                )
        self.hooks: dict[str, Callable[..., Any]] = dict(hooks)
        if hooks:
            # The Trainer looks for hooks on the class, so each instance gets a subclass
            # (same name) that defines exactly the given hooks.
            base = type(self)
            namespace: dict[str, Any] = {name: _forwarder(name) for name in hooks}
            namespace.update(__module__=base.__module__, __qualname__=base.__qualname__)
            self.__class__ = type(base.__name__, (base,), namespace)

    def __reduce__(self) -> Any:
        # Recreate through __init__ (copy.deepcopy and pickling see the public class).
        return (_rebuild, (type(self).__mro__[1] if self.hooks else type(self), self.hooks, self.__dict__))


def _rebuild(cls: type[LambdaCallback], hooks: dict[str, Callable[..., Any]], state: dict[str, Any]) -> LambdaCallback:
    obj = cls(**hooks)
    obj.__dict__.update({k: v for k, v in state.items() if k != "hooks"})
    return obj
