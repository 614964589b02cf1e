"""What needs a fresh interpreter: the launch path, and the order XLA must start in.

The multi-process launch (``torch_xla.launch``, i.e. ``xmp.spawn``) runs with one
replica: torch_xla 2.9's CPU backend cannot reduce across several (see docs/tpu.md), so
a real spawned process trains with the one CPU device, and the weights, progress and
callback states come back to the calling process. torch_xla refuses to launch once its
runtime runs in the caller, hence a fresh interpreter. So for the second test: a CPU
backward before XLA starts must give fitkit's clear error, not torch's internal assert.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.xla, pytest.mark.slow]
pytest.importorskip("torch_xla")

HERE = Path(__file__).resolve().parent


def test_xla_launcher_trains_in_a_spawned_process_and_returns_its_state() -> None:
    env = {**os.environ, "PJRT_DEVICE": "CPU", "PYTHONPATH": str(HERE)}
    env.pop("CPU_NUM_DEVICES", None)
    proc = subprocess.run(
        [sys.executable, str(HERE / "_launch_script.py")], env=env, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["worker"] != result["pid"]  # trained in another process
    assert result["step"] == 8  # progress came back
    assert result["changed"]  # and so did the trained weights


def test_a_backward_before_xla_starts_gives_a_clear_error() -> None:
    # The autograd engine counts devices at the first backward of a process; XLA must be up by then.
    code = (
        "import torch\n"
        "torch.nn.Linear(2, 1)(torch.randn(3, 2)).sum().backward()  # a CPU backward first\n"
        "from _xla_helpers import Regressor, loader, trainer\n"
        "from fitkit.utilities.exceptions import FitkitRuntimeError\n"
        "try:\n"
        "    trainer(max_epochs=1).fit(Regressor(), loader(8))\n"
        "except FitkitRuntimeError as err:\n"
        "    print('CLEAR:', err)\n"
    )
    env = {**os.environ, "PJRT_DEVICE": "CPU", "PYTHONPATH": str(HERE)}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "CLEAR: backward on the XLA device failed because this process ran a backward pass" in proc.stdout
