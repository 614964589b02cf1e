"""Turning the Trainer's ``precision`` argument into a Precision object."""

from __future__ import annotations

from typing import Any

from fitkit.accelerators.accelerator import Accelerator
from fitkit.precision.precision import Precision
from fitkit.utilities.exceptions import MisconfigurationError, invalid

# Lightning's aliases map onto the canonical names.
PRECISION_ALIASES = {"32": "32-true", 32: "32-true", "32-true": "32-true"}
PRECISIONS = ("32-true", "32")


def select_precision(precision: Any, accelerator: Accelerator | None = None) -> Precision:
    """``precision`` for a run on ``accelerator`` (autocast needs the device kind)."""
    if isinstance(precision, Precision):
        return precision
    # An unhashable value (a list, say) is simply not a known name.
    name = PRECISION_ALIASES.get(precision) if isinstance(precision, (str, int)) else None
    if name == "32-true":
        return Precision()
    raise MisconfigurationError(
        invalid("precision", precision, "no such precision", f"one of {PRECISIONS} or a Precision instance")
    )
