"""fitkit's exception types and the one helper that formats user-error messages.

Every user error fitkit raises is a subclass of :class:`FitkitError` *and* of the
built-in type a caller would expect (``ValueError``, ``TypeError`` or
``RuntimeError``), so ``except ValueError`` keeps working.
"""

from __future__ import annotations

from typing import Any


class FitkitError(Exception):
    """Base class of every error fitkit raises on purpose."""


class MisconfigurationError(FitkitError, ValueError):
    """An argument or a user hook's result has a value fitkit cannot use."""


class FitkitTypeError(FitkitError, TypeError):
    """An argument or a user hook's result has a type fitkit cannot use."""


class FitkitRuntimeError(FitkitError, RuntimeError):
    """Something was called at a point of the run where it cannot work."""


def invalid(argument: str, value: Any, why: str, expected: str) -> str:
    """Format the house error message.

    Example::

        >>> invalid("max_epochs", -2, "it must not be below -1", "an int >= -1 (-1: no limit)")
        '`max_epochs=-2` is not valid: it must not be below -1. Expected an int >= -1 (-1: no limit).'
    """
    return f"`{argument}={value!r}` is not valid: {why}. Expected {expected}."
