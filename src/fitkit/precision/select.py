"""Turning the Trainer's ``precision`` argument into a Precision object.

One readable function, :func:`select_precision`: a Precision instance is used as
given; a name (or one of Lightning's aliases) becomes the matching plug-in, with the
autocast device type taken from the accelerator (on XLA, :mod:`fitkit.precision.xla`'s
plug-in). Unknown names, and combinations
that cannot work (float64 on MPS, a gradient scaler where torch has none), are
refused here, before anything runs.
"""

from __future__ import annotations

from typing import Any

from fitkit.accelerators.accelerator import Accelerator
from fitkit.precision.amp import MixedPrecision, autocast_available
from fitkit.precision.double import DoublePrecision
from fitkit.precision.half import HalfPrecision
from fitkit.precision.precision import Precision
from fitkit.utilities.exceptions import MisconfigurationError, invalid
from fitkit.utilities.rank_zero import rank_zero_warn

# The canonical names, then Lightning's aliases for them (ints are accepted as their string).
PRECISIONS = ("64-true", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true")
PRECISION_ALIASES = {
    **{name: name for name in PRECISIONS},
    "64": "64-true",
    "32": "32-true",
    "16": "16-mixed",
    "bf16": "bf16-mixed",
}
# Aliases that read as "true" but mean "mixed": accepted, with a warning, as in Lightning.
_LEGACY = {"16": "'16-mixed' (or '16-true' for float16 weights)", "bf16": "'bf16-mixed' (or 'bf16-true')"}
_ACCEPTED = (*PRECISIONS, 64, 32, 16, "64", "32", "16", "bf16")
_EXPECTED = f"one of {_ACCEPTED} or a Precision instance"


def canonical_precision(precision: Any) -> str | None:
    """The canonical name for a ``precision`` value, or None if it names none.

    Example::

        >>> canonical_precision(16), canonical_precision("bf16-true"), canonical_precision(16.0)
        ('16-mixed', 'bf16-true', None)
    """
    if type(precision) is int:  # not bool, not 16.0: Lightning accepts ints and their strings only
        precision = str(precision)
    return PRECISION_ALIASES.get(precision) if isinstance(precision, str) else None


def autocast_device_type(accelerator: Accelerator | None) -> str:
    """The ``torch.autocast`` device type for a run on ``accelerator``.

    The accelerator's ``name`` where autocast knows it (``"cpu"``, ``"cuda"``, ``"mps"``);
    otherwise the type of the device it gives local rank 0; otherwise ``"cpu"``.

    Example::

        >>> from fitkit.accelerators.cpu import CPUAccelerator
        >>> autocast_device_type(CPUAccelerator()), autocast_device_type(None)
        ('cpu', 'cpu')
    """
    if accelerator is None:
        return "cpu"
    name = getattr(accelerator, "name", None)
    if autocast_available(name):
        return str(name)
    try:
        # A user's accelerator with a name of its own: ask it where rank 0 would train.
        return accelerator.get_device(0).type
    except Exception:  # its devices may not be parsed yet; the CPU is always there
        return "cpu"


def select_precision(precision: Any, accelerator: Accelerator | None = None) -> Precision:
    """``precision`` for a run on ``accelerator`` (autocast needs the device kind).

    Example::

        >>> type(select_precision("bf16-mixed")).__name__, select_precision(64).name
        ('MixedPrecision', '64-true')
    """
    if isinstance(precision, Precision):
        return precision
    name = canonical_precision(precision)
    if name is None:
        raise MisconfigurationError(invalid("precision", precision, "no such precision", _EXPECTED))
    alias = str(precision)
    if alias in _LEGACY:
        rank_zero_warn(
            f"`precision={precision!r}` is a legacy alias of {name!r}; pass {_LEGACY[alias]} to say which you mean.",
            stacklevel=4,  # the user's Trainer(...) line: select_strategy and Trainer.__init__ sit between
        )
    if getattr(accelerator, "name", None) == "xla":
        from fitkit.precision.xla import XLAPrecision

        return XLAPrecision(name)  # refuses what XLA does not run (float16, float64)
    if name == "32-true":
        return Precision()
    device = autocast_device_type(accelerator)
    if name == "64-true":
        if device == "mps":
            raise MisconfigurationError(
                invalid(
                    "precision",
                    precision,
                    "MPS devices have no float64",
                    "'32-true', '16-mixed', 'bf16-mixed', '16-true' or 'bf16-true' on MPS, or accelerator='cpu'",
                )
            )
        return DoublePrecision()
    if name in ("16-true", "bf16-true"):
        return HalfPrecision(name)
    return MixedPrecision(name, device)
