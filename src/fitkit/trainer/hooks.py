"""Resolving, once per run, which callbacks and module methods each hook calls.

The Trainer fires hooks through the table built here; a hook that no callback and
not the module overrides has an empty entry and costs one dict lookup.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from fitkit.callbacks.callback import HOOKS, Callback, suggest_hooks
from fitkit.callbacks.checkpoint import Checkpoint
from fitkit.module import Module
from fitkit.utilities.exceptions import FitkitTypeError, MisconfigurationError, invalid
from fitkit.utilities.rank_zero import rank_zero_warn

# The table key of the checkpoint callbacks' on_train_epoch_end (they run last, apart).
CHECKPOINT_EPOCH_END = "on_train_epoch_end:checkpoint"

# Module hooks the Trainer fires (step methods and configure_* are called directly).
MODULE_HOOKS: tuple[str, ...] = tuple(
    name for name in vars(Module) if name.startswith("on_") or name in ("setup", "teardown", "prepare_data")
)

# Lightning Module hooks fitkit does not call (yet). Overriding one would silently do
# nothing, so the Trainer warns instead.
UNSUPPORTED_MODULE_HOOKS: tuple[str, ...] = (
    "optimizer_step",
    "optimizer_zero_grad",
    "backward",
    "lr_scheduler_step",
    "on_before_batch_transfer",
    "transfer_batch_to_device",
    "on_after_batch_transfer",
    "on_validation_model_eval",
    "on_validation_model_train",
    "on_test_model_eval",
    "on_test_model_train",
    "on_predict_model_eval",
    "configure_callbacks",
    "configure_model",
)


def warn_unsupported_module_hooks(module: Module) -> None:
    """Warn about Lightning hooks a module overrides that fitkit will not call."""
    found = [name for name in UNSUPPORTED_MODULE_HOOKS if callable(getattr(type(module), name, None))]
    if found:
        rank_zero_warn(
            f"{type(module).__name__} defines {found}: Lightning hooks that fitkit does not call. "
            "See docs/migrating.md for what to use instead."
        )


def check_callbacks(callbacks: Sequence[Any]) -> list[Callback]:
    """Validate ``Trainer(callbacks=...)``; refuse unknown ``on_*`` methods (typos)."""
    if isinstance(callbacks, (str, bytes)) or not isinstance(callbacks, Sequence):
        raise FitkitTypeError(
            invalid(
                "callbacks", callbacks, "it is not a list of callbacks", "a Callback or a list of Callback instances"
            )
        )
    out = []
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise MisconfigurationError(
                invalid("callbacks", cb, "it is not a fitkit.Callback", "a list of Callback instances")
            )
        for name in dir(type(cb)):
            if name.startswith("on_") and name not in HOOKS and callable(getattr(cb, name, None)):
                close = suggest_hooks(name)
                raise MisconfigurationError(
                    invalid(
                        f"{type(cb).__name__}.{name}",
                        name,
                        "this is not a hook the Trainer fires",
                        f"a known hook, e.g. one of {close}",
                    )
                )
        out.append(cb)
    return out


def overrides(obj: object, base: type, name: str) -> bool:
    method = getattr(type(obj), name, None)
    return method is not None and method is not getattr(base, name, None)


def build_table(
    trainer: Any, module: Module, callbacks: Sequence[Callback]
) -> dict[str, tuple[Callable[..., Any], ...]]:
    """Map each hook name to the callables to run: callbacks in order, then the module."""
    warn_unsupported_module_hooks(module)
    table: dict[str, tuple[Callable[..., Any], ...]] = {}
    idle = [cb._idle_hooks() for cb in callbacks]
    for name in HOOKS | set(MODULE_HOOKS):
        fns: list[Callable[..., Any]] = [
            functools.partial(getattr(cb, name), trainer, module)
            for cb, skip in zip(callbacks, idle, strict=True)
            if overrides(cb, Callback, name) and name not in skip
        ]
        if name in MODULE_HOOKS and overrides(module, Module, name):
            fns.append(getattr(module, name))
        table[name] = tuple(fns)
    # Checkpoint callbacks close the epoch after the module's own hook (see fit_loop).
    ckpt = [f for f in table["on_train_epoch_end"] if isinstance(_owner(f), Checkpoint)]
    table[CHECKPOINT_EPOCH_END] = tuple(ckpt)
    table["on_train_epoch_end"] = tuple(f for f in table["on_train_epoch_end"] if f not in ckpt)
    return table


def describe(table: dict[str, tuple[Callable[..., Any], ...]], order: Sequence[str]) -> str:
    """A printable map of the loop: each hook and who runs at it."""
    lines = []
    for name in order:
        owners = [f"{type(_owner(fn)).__name__}.{name}" for fn in table.get(name, ())]
        lines.append(f"{name:<28} {', '.join(owners) if owners else '-'}")
    return "\n".join(lines)


def _owner(fn: Callable[..., Any]) -> object:
    bound = fn.func if isinstance(fn, functools.partial) else fn
    return getattr(bound, "__self__", None)
