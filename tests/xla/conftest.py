"""Start torch_xla's runtime before any test runs when XLA tests are selected.

torch's autograd engine counts the devices of each kind once, at the first backward
pass of the process. A CPU test that runs backward before the XLA runtime has started
leaves XLA with no device queue, and every later XLA backward fails (an internal assert
in ``autograd/engine.cpp``; fitkit turns it into a FitkitRuntimeError naming the cause).
Starting the runtime after collection, before the first test, makes the XLA tests
independent of which other tests run in the same session and in which order.
"""

from __future__ import annotations

import importlib.util
import os

import pytest


def pytest_collection_finish(session: pytest.Session) -> None:
    if importlib.util.find_spec("torch_xla") is None:
        return
    if not any(item.get_closest_marker("xla") for item in session.items):
        return
    os.environ.setdefault("PJRT_DEVICE", "CPU")
    import torch_xla

    torch_xla.device()
