"""Rank-zero helpers: print and warn once per job, not once per process."""

from __future__ import annotations

import os
import warnings


def global_rank() -> int:
    """This process's global rank as the launcher announced it (0 when not distributed)."""
    return int(os.environ.get("RANK", "0"))


def rank_zero_warn(message: str, category: type[Warning] = UserWarning, stacklevel: int = 2) -> None:
    """Warn only on global rank zero."""
    if global_rank() == 0:
        warnings.warn(message, category, stacklevel=stacklevel + 1)


def rank_zero_print(*args: object, **kwargs: object) -> None:
    """Print only on global rank zero."""
    if global_rank() == 0:
        print(*args, **kwargs)  # type: ignore[call-overload]
