"""SIGTERM under fitkit's own DDP launcher (``strategy="ddp"`` run as a plain script).

The script's process is rank 0 and starts rank 1 itself. Whichever rank the scheduler
signals, both stop at the same step, rank 0 saves, and the job's exit status is
SIGTERM's (143), not the "a copy failed" status 1: a rank that exits 143 stopped on
purpose, so the launcher neither kills the other ranks mid-shutdown nor reports it as
a failure.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from test_signals import _cfg, _ckpt, _finish, _kill, _result, _start, _wait_for_line

RANK_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "NODE_RANK", "MASTER_PORT")


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids += [int(k) for k in (task / "children").read_text().split()]
    return kids


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds rank 1's pid through /proc (Linux)")
@pytest.mark.parametrize("signalled_rank", [0, 1])
def test_sigterm_to_either_rank_ends_the_job_with_143(tmp_path: Path, signalled_rank: int) -> None:
    signal_at = 3
    env = {k: v for k, v in os.environ.items() if k not in RANK_VARS}
    env["FITKIT_SIGNAL_AGREEMENT_S"] = "0"  # a flag exchange at every boundary: the stop is exactly one step later
    cfg = _cfg(tmp_path, ddp=True, signal_at=signal_at, pause_rank=signalled_rank)
    proc = _start(cfg, tmp_path / "stderr.txt", env)
    try:
        _wait_for_line(proc, b"REACHED")  # rank 1 writes to the same stdout as rank 0
        target = proc.pid if signalled_rank == 0 else _children(proc.pid)[0]
        os.kill(target, signal.SIGTERM)
        code = _finish(proc, timeout=90)
    finally:
        if proc.poll() is None:
            _kill(proc)
    log = (tmp_path / "stderr.txt").read_text()
    assert code == 143, log
    assert "exited" not in log, log  # no "local rank 1 exited with code ..." failure line
    stop = signal_at + 1  # the ranks agree through an all-reduce read one boundary later (signals.py)
    for rank in (0, 1):
        result = _result(cfg, rank)
        assert result["exit_code"] == 143 and result["received_sigterm"] and result["interrupted"], result
        assert result["global_step"] == stop and result["logger_status"] == "interrupted", result
    assert torch.load(_ckpt(tmp_path), weights_only=True)["global_step"] == stop
