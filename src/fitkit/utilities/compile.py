"""``torch.compile`` and fitkit: compiled Modules in the Trainer, clean checkpoint keys.

Two things go wrong without this module (Lightning issue #17415):

* ``torch.compile(model)`` returns an ``OptimizedModule`` that wraps the
  :class:`fitkit.Module` without subclassing it, so hooks, ``self.log`` and
  ``isinstance`` checks miss it. :func:`from_compiled` hands the Trainer the Module
  itself, with its ``forward`` replaced by the compiled one; :func:`to_uncompiled`
  puts the eager ``forward`` back.
* A compiled module, or a module with compiled submodules
  (``self.net = torch.compile(self.net)``), names its weights ``net._orig_mod.0.weight``.
  :func:`clean_state_dict` drops those ``_orig_mod`` segments, so checkpoints hold
  ``net.0.weight`` whatever was compiled, and :func:`load_state_dict` loads clean or
  prefixed names into a module whether or not its parts are compiled.

Nothing here imports ``torch._dynamo``: a model can only be compiled once the user
has imported it, so the checks look it up in ``sys.modules``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from torch import nn

from fitkit.utilities.exceptions import FitkitTypeError, invalid
from fitkit.utilities.rank_zero import rank_zero_warn

if TYPE_CHECKING:
    from fitkit.module import Module

_PREFIX = "_orig_mod"


def _optimized_module_type() -> type | None:
    eval_frame = sys.modules.get("torch._dynamo.eval_frame")
    return getattr(eval_frame, "OptimizedModule", None) if eval_frame is not None else None


def is_compiled(obj: Any) -> bool:
    """Whether ``obj`` is what ``torch.compile(module)`` returns (an ``OptimizedModule``).

    Example::

        >>> is_compiled(nn.Linear(2, 2))
        False
    """
    kind = _optimized_module_type()
    return kind is not None and isinstance(obj, kind)


def from_compiled(model: Any) -> Module:
    """The :class:`fitkit.Module` inside ``torch.compile(module)``, whose ``forward`` now runs compiled.

    The Trainer calls this for you when ``fit``/``validate``/``test``/``predict`` get
    a compiled Module. Only ``forward`` is compiled (``self(x)`` in a step runs the
    compiled graph); the step methods stay eager so ``self.log`` costs no graph break.
    Calling it again on the same model changes nothing.

    Example::

        module = from_compiled(torch.compile(MyModule()))
        isinstance(module, fitkit.Module)  # True; module(x) runs the compiled forward
    """
    from fitkit.module import Module

    if not is_compiled(model):
        raise FitkitTypeError(
            invalid("model", type(model).__name__, "it is not the result of torch.compile", "an OptimizedModule")
        )
    module = model._orig_mod
    if not isinstance(module, Module):
        raise FitkitTypeError(
            invalid(
                "model",
                f"torch.compile({type(module).__name__})",
                "the compiled module does not subclass fitkit.Module",
                "torch.compile(a fitkit.Module)",
            )
        )
    if "_compiler_ctx" in module.__dict__:
        return module
    dynamo_ctx = getattr(model, "dynamo_ctx", None)
    if dynamo_ctx is None:  # a torch whose OptimizedModule no longer keeps its compile context
        rank_zero_warn("Could not read the torch.compile settings of the model: it trains uncompiled.")
        return module
    # `None` records that `forward` came from the class, so undoing deletes the instance attribute.
    module.__dict__["_compiler_ctx"] = {"dynamo_ctx": dynamo_ctx, "forward": module.__dict__.get("forward")}
    module.__dict__["forward"] = dynamo_ctx(module.forward)
    return module


def to_uncompiled(model: Any) -> Module:
    """Undo :func:`from_compiled`: the Module with its eager ``forward`` back.

    Accepts the compiled wrapper or the Module the Trainer trained; a Module that was
    never compiled comes back unchanged.

    Example::

        eager = to_uncompiled(trainer.model)
    """
    module = model._orig_mod if is_compiled(model) else model
    ctx = module.__dict__.pop("_compiler_ctx", None)
    if ctx is not None:
        if ctx["forward"] is None:
            module.__dict__.pop("forward", None)
        else:
            module.__dict__["forward"] = ctx["forward"]
    return module  # type: ignore[no-any-return]


def unwrap_compiled(model: Any) -> Any:
    """``model``, or the fitkit Module inside it when it is ``torch.compile(fitkit_module)``.

    Anything else (including a compiled non-fitkit module) comes back as given, so
    the caller's type check reports it.
    """
    if is_compiled(model):
        from fitkit.module import Module

        if isinstance(model._orig_mod, Module):
            return from_compiled(model)
    return model


def clean_key(key: str) -> str:
    """``key`` without ``_orig_mod`` segments: ``"net._orig_mod.0.weight"`` -> ``"net.0.weight"``.

    Example::

        >>> clean_key("net._orig_mod.0.weight")
        'net.0.weight'
    """
    if _PREFIX not in key:
        return key
    return ".".join(part for part in key.split(".") if part != _PREFIX)


def clean_state_dict(state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """``state_dict`` with every key passed through :func:`clean_key` (order kept)."""
    return {clean_key(k): v for k, v in state_dict.items()}


def load_state_dict(module: nn.Module, state_dict: Mapping[str, Any], strict: bool = True) -> Any:
    """``module.load_state_dict`` that ignores ``torch.compile``'s ``_orig_mod`` segments on both sides.

    Keys from a compiled or an uncompiled model load into a module with or without
    compiled submodules. Returns what ``nn.Module.load_state_dict`` returns.

    Example::

        >>> net = nn.Sequential(nn.Linear(2, 2))
        >>> sd = {"_orig_mod." + k: v for k, v in net.state_dict().items()}
        >>> load_state_dict(net, sd)
        <All keys matched successfully>
    """
    incoming = clean_state_dict(state_dict)
    target = {clean_key(k): k for k in module.state_dict()}
    remapped = {target.get(k, k): v for k, v in incoming.items()}
    return module.load_state_dict(remapped, strict=strict)
