"""Two replicas on torch_xla's CPU backend, for real: SPMD over ``CPU_NUM_DEVICES=2``.

One process per device cannot reduce on torch_xla 2.9's CPU backend (docs/tpu.md), but
one SPMD program over two CPU devices can: the batch is split in two, and the compiled
program's all-reduce (read from XLA's own dump of the optimized HLO) sums the halves'
gradients. The losses must match a one-device CPU run step for step.
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


def test_spmd_over_two_cpu_devices_all_reduces_and_matches_one_device(tmp_path: Path) -> None:
    dump = tmp_path / "hlo"
    env = {
        **os.environ,
        "PJRT_DEVICE": "CPU",
        "CPU_NUM_DEVICES": "2",
        "PYTHONPATH": str(HERE),
        "XLA_FLAGS": f"--xla_dump_to={dump} --xla_dump_hlo_as_text",
    }
    proc = subprocess.run(
        [sys.executable, str(HERE / "_spmd_script.py")], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["world_size"] == 1  # one process drives both devices
    assert result["spec"].startswith("{devices=[2,1]")  # each batch split in two along dim 0
    assert len(result["xla"]) == len(result["cpu"]) == 8
    assert result["xla"] == pytest.approx(result["cpu"], rel=1e-4, abs=1e-5)
    for a, b in zip(result["cpu_params"], result["xla_params"], strict=True):
        assert b == pytest.approx(a, rel=1e-4, abs=1e-5)
    optimized = "".join(p.read_text() for p in dump.glob("*cpu_after_optimizations.txt"))
    assert "all-reduce(" in optimized and "replica_groups={{0,1}}" in optimized
