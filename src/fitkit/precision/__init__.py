"""Precision plug-ins: the number format a run trains in."""

from fitkit.precision.precision import Precision

__all__ = ["Precision"]
