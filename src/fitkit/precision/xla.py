"""Precision on XLA devices: ``"32-true"``, ``"bf16-true"`` and ``"bf16-mixed"``.

TPUs compute in bfloat16 natively, so these three are the formats XLA runs well;
float16 (and its gradient scaler) and float64 are refused when the run is built.
``"bf16-mixed"`` is ``torch.autocast("xla", dtype=torch.bfloat16)`` around each step
(float32 weights); ``"bf16-true"`` converts the module and the floating inputs to
bfloat16, as :class:`~fitkit.precision.half.HalfPrecision` does.

Every format also guards the step against ``torch.inference_mode``: XLA tensors cannot
be created under it (matrix products raise "Cannot set version_counter for inference
tensor"), so where the evaluation loop runs its steps in inference mode the step runs
under ``torch.no_grad`` instead, which computes the same values.

Owns the number format only; gradient reduction across replicas and graph cuts are the
strategy's (:mod:`fitkit.strategies.xla`).
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn

from fitkit.precision.dtype import convert_floats
from fitkit.precision.precision import Precision
from fitkit.utilities.exceptions import MisconfigurationError, invalid

XLA_PRECISIONS = ("32-true", "bf16-true", "bf16-mixed")


class _XLAStepContext(contextlib.AbstractContextManager[None]):
    """The step's context: no inference mode (XLA refuses it), then the format's own context.

    One object per plug-in, re-entrant (a stack of what each ``__enter__`` opened).
    """

    __slots__ = ("_autocast", "_dtype", "_stack")

    def __init__(self, dtype: torch.dtype | None, autocast: bool) -> None:
        self._dtype = dtype  # made the default dtype while the step runs ("bf16-true")
        self._autocast = autocast
        self._stack: list[contextlib.ExitStack] = []

    def __enter__(self) -> None:
        stack = contextlib.ExitStack()
        if torch.is_inference_mode_enabled():
            stack.enter_context(torch.inference_mode(False))
            stack.enter_context(torch.no_grad())
        if self._autocast:
            stack.enter_context(torch.autocast("xla", dtype=torch.bfloat16))
        if self._dtype is not None:
            previous = torch.get_default_dtype()
            torch.set_default_dtype(self._dtype)
            stack.callback(torch.set_default_dtype, previous)
        self._stack.append(stack)

    def __exit__(self, *exc: object) -> None:
        self._stack.pop().close()


class _FastGuard(contextlib.AbstractContextManager[None]):
    """``"32-true"``'s context: one flag read per step, an ExitStack only under inference mode."""

    __slots__ = ("_opened",)

    def __init__(self) -> None:
        self._opened: list[contextlib.ExitStack | None] = []

    def __enter__(self) -> None:
        if torch.is_inference_mode_enabled():
            stack = contextlib.ExitStack()
            stack.enter_context(torch.inference_mode(False))
            stack.enter_context(torch.no_grad())
            self._opened.append(stack)
        else:
            self._opened.append(None)

    def __exit__(self, *exc: object) -> None:
        stack = self._opened.pop()
        if stack is not None:
            stack.close()


class XLAPrecision(Precision):
    """The number format of a run on XLA devices.

    The Trainer builds it for ``accelerator="xla"`` from ``precision="32-true"``,
    ``"bf16-true"`` or ``"bf16-mixed"`` (and the aliases ``32``, ``"32"``, ``"bf16"``).

    Args:
        precision: one of ``"32-true"``, ``"bf16-true"``, ``"bf16-mixed"``.

    Example::

        >>> XLAPrecision("bf16-true").dtype
        torch.bfloat16
    """

    def __init__(self, precision: str = "32-true") -> None:
        if precision not in XLA_PRECISIONS:
            raise MisconfigurationError(
                invalid(
                    "precision",
                    precision,
                    "XLA devices train in float32 or bfloat16 (float16 has no gradient scaler on XLA, "
                    "and TPUs have no float64)",
                    f"one of {XLA_PRECISIONS} with accelerator='xla'",
                )
            )
        self.name = precision
        self.dtype: torch.dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float32
        self._true_dtype = precision == "bf16-true"
        self._context: contextlib.AbstractContextManager[Any]
        if precision == "32-true":
            self._context = _FastGuard()
        else:
            self._context = _XLAStepContext(torch.bfloat16 if self._true_dtype else None, precision == "bf16-mixed")

    def convert_module(self, module: nn.Module) -> nn.Module:
        """``"bf16-true"``: the module's floating parameters and buffers in bfloat16 (others: as they are)."""
        return module.to(dtype=torch.bfloat16) if self._true_dtype else module

    def convert_input(self, batch: Any) -> Any:
        """``"bf16-true"``: the batch's floating tensors in bfloat16 (others: as they are)."""
        return convert_floats(batch, torch.bfloat16) if self._true_dtype else batch

    def forward_context(self) -> contextlib.AbstractContextManager[Any]:
        """Autocast (``"bf16-mixed"``) or the default dtype (``"bf16-true"``), never inference mode."""
        return self._context
