"""Callbacks shipped with fitkit. The base class is :class:`Callback`."""

from fitkit.callbacks.callback import Callback

__all__ = ["Callback"]
