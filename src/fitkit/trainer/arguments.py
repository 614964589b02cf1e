"""Validation of the Trainer's constructor arguments.

Each check raises before any work starts, with a message that names the argument,
echoes its value and lists what is allowed.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

from fitkit.trainer.nonfinite import POLICIES
from fitkit.utilities.exceptions import FitkitTypeError, MisconfigurationError, invalid


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(name: str, value: Any, minimum: int, expected: str, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if not _is_int(value) or value < minimum:
        raise MisconfigurationError(invalid(name, value, f"it must be an int >= {minimum}", expected))
    return value


def check_bool(name: str, value: Any, allow_none: bool = False) -> Any:
    if value is None and allow_none:
        return None
    if not isinstance(value, bool):
        raise FitkitTypeError(invalid(name, value, "it must be a bool", "True or False"))
    return value


def check_limit(name: str, value: Any) -> int | float:
    """``limit_*_batches``: an int count >= 0, or a fraction in [0.0, 1.0]."""
    if _is_int(value) and value >= 0:
        return value
    if isinstance(value, float) and 0.0 <= value <= 1.0:
        return value
    raise MisconfigurationError(
        invalid(
            name, value, "it is neither a batch count nor a fraction", "an int >= 0 (batches) or a float in [0.0, 1.0]"
        )
    )


def check_val_check_interval(value: Any) -> int | float:
    if _is_int(value) and value >= 1:
        return value
    if isinstance(value, float) and 0.0 < value <= 1.0:
        return value
    raise MisconfigurationError(
        invalid(
            "val_check_interval",
            value,
            "it is neither a batch count nor a fraction of the epoch",
            "an int >= 1 (training batches) or a float in (0.0, 1.0]",
        )
    )


def check_fast_dev_run(value: Any) -> int:
    """Returns the number of batches to run (0: off)."""
    if isinstance(value, bool):
        return int(value)
    if _is_int(value) and value >= 0:
        return value
    raise MisconfigurationError(
        invalid("fast_dev_run", value, "it must be a bool or a count", "True/False or an int >= 0")
    )


def check_overfit_batches(value: Any) -> int | float:
    if _is_int(value) and value >= 0:
        return value
    if isinstance(value, float) and 0.0 <= value <= 1.0:
        return value
    raise MisconfigurationError(
        invalid(
            "overfit_batches",
            value,
            "it is neither a batch count nor a fraction",
            "an int >= 0 or a float in [0.0, 1.0]",
        )
    )


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> Any:
    if value not in choices:
        raise MisconfigurationError(invalid(name, value, "unknown value", f"one of {choices}"))
    return value


def check_nonfinite_loss(value: Any) -> str:
    """``Trainer(nonfinite_loss=...)``: what a NaN or infinite training loss does (a fitkit addition).

    Example::

        >>> check_nonfinite_loss("skip")
        'skip'
    """
    expected = "'raise' (stop with an error), 'skip' (drop that loss) or 'ignore' (no check)"
    if not isinstance(value, str):
        raise FitkitTypeError(invalid("nonfinite_loss", value, "it must be a str", expected))
    if value not in POLICIES:
        raise MisconfigurationError(invalid("nonfinite_loss", value, "unknown policy", expected))
    return value


_TIME_RE = re.compile(r"^(\d+):(\d{1,2}):(\d{1,2}):(\d{1,2})$")


def parse_duration(argument: str, value: Any, allow_zero: bool = False) -> float | None:
    """A duration in seconds from ``"DD:HH:MM:SS"``, a ``timedelta``, or a dict of timedelta keywords.

    Example::

        >>> parse_duration("max_time", "00:01:30:00")
        5400.0
    """
    if value is None:
        return None
    expected = '"DD:HH:MM:SS", a datetime.timedelta, a dict such as {"hours": 1}, or None'
    if isinstance(value, dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str):
        match = _TIME_RE.match(value.strip())
        if not match:
            raise MisconfigurationError(invalid(argument, value, "the string is not DD:HH:MM:SS", expected))
        d, h, m, s = (int(g) for g in match.groups())
        seconds = dt.timedelta(days=d, hours=h, minutes=m, seconds=s).total_seconds()
    elif isinstance(value, Mapping):
        try:
            seconds = dt.timedelta(**value).total_seconds()
        except TypeError as err:
            raise MisconfigurationError(invalid(argument, value, str(err), expected)) from err
    else:
        raise FitkitTypeError(invalid(argument, value, "unsupported type", expected))
    if seconds < 0 or (seconds == 0 and not allow_zero):
        why = "the duration must not be negative" if allow_zero else "the duration must be positive"
        raise MisconfigurationError(invalid(argument, value, why, expected))
    return seconds


def parse_max_time(value: Any) -> float | None:
    """``Trainer(max_time=...)`` in seconds (see :func:`parse_duration`)."""
    return parse_duration("max_time", value)
