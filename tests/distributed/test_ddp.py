"""DDP with real processes (gloo on CPU): torchrun, fitkit's own launcher, and ddp_spawn.

Each run is ``_ddp_script.py`` (two processes, a few seconds); the single-process
reference runs the same ``main`` in this process with a batch twice as large.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

HERE = Path(__file__).parent
SCRIPT = HERE / "_ddp_script.py"
sys.path.insert(0, str(HERE))
import _ddp_script  # noqa: E402
import _jobs  # noqa: E402

TIMEOUT_S = 120


def _run(cfg: dict[str, Any], torchrun: bool = False) -> subprocess.CompletedProcess[str]:
    prefix = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        if torchrun
        else [sys.executable]
    )
    return _jobs.run([*prefix, str(SCRIPT), json.dumps(cfg)], timeout=TIMEOUT_S)


def _ok(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _reference(**cfg: Any) -> dict[str, Any]:
    return _ddp_script.main({"devices": 1, "batch_size": 16, **cfg})


def _assert_same_weights(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for k in got:
        torch.testing.assert_close(got[k], want[k], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("launch", ["torchrun", "spawn"])  # popen: in the two-jobs test
def test_ddp_matches_one_process(tmp_path: Path, launch: str) -> None:
    """Two ranks x batch 8 == one process x batch 16: weights, sync_dist metrics, all_gather."""
    out = tmp_path / "out.pt"
    strategy = "ddp_spawn" if launch == "spawn" else "ddp"
    _ok(_run({"strategy": strategy, "out": str(out)}, torchrun=launch == "torchrun"))
    got = torch.load(out, weights_only=False)
    want = _reference()
    assert got["world_size"] == 2 and got["global_step"] == want["global_step"] == 8
    _assert_same_weights(got["weights"], want["weights"])
    m, ref = got["metrics"], want["metrics"]
    assert m["train_loss_epoch"] == pytest.approx(ref["train_loss_epoch"], rel=1e-5)
    # 21 validation samples, shards of 11 and 10: weighted, nothing padded or counted twice.
    assert m["val_loss"] == pytest.approx(ref["val_loss"], rel=1e-5)
    assert m["val_count"] == ref["val_count"] == 21.0
    assert m["batches"] == 2 * ref["batches"] == 8.0  # reduce_fx="sum" over ranks
    assert m["top_rank"] == 1.0  # reduce_fx="max" over ranks
    if launch != "spawn":  # ddp_spawn's caller keeps the module, not what on_train_end stored
        assert got["gathered"].tolist() == [[0.0], [1.0]]


def test_ddp_accumulation_uses_no_sync_and_matches(tmp_path: Path) -> None:
    out = tmp_path / "out.pt"
    _ok(_run({"strategy": "ddp", "out": str(out), "accumulate": 2, "batch_size": 4}, torchrun=True))
    got = torch.load(out, weights_only=False)
    want = _reference(accumulate=2, batch_size=8)
    _assert_same_weights(got["weights"], want["weights"])


def test_checkpoint_from_rank_zero_resumes_on_one_and_two_processes(tmp_path: Path) -> None:
    ckpt = tmp_path / "two.ckpt"
    _ok(_run({"strategy": "ddp", "max_epochs": 1, "ckpt_out": str(ckpt)}))
    assert ckpt.is_file()
    out = tmp_path / "resumed.pt"
    _ok(_run({"strategy": "ddp", "max_epochs": 2, "ckpt_in": str(ckpt), "out": str(out)}))
    on_two = torch.load(out, weights_only=False)
    on_one = _reference(max_epochs=2, ckpt_in=str(ckpt))
    straight = _reference(max_epochs=2)
    assert on_two["global_step"] == on_one["global_step"] == 8
    _assert_same_weights(on_two["weights"], straight["weights"])
    _assert_same_weights(on_one["weights"], straight["weights"])


def test_one_rank_raising_ends_the_job() -> None:
    """fitkit's launcher (torchrun does the same for its own jobs): quick non-zero exit, the error once."""
    start = time.monotonic()
    proc = _run({"strategy": "ddp", "fail_rank": 1})
    assert time.monotonic() - start < 60
    assert proc.returncode != 0
    assert proc.stderr.count("RuntimeError: boom on rank 1") == 1, proc.stderr
    assert "local rank 1 exited with code 1" in proc.stderr


def test_ranks_logging_different_names_get_an_error_not_a_hang() -> None:
    proc = _run({"strategy": "ddp", "mismatch": True})
    assert proc.returncode != 0
    assert "logged different names" in proc.stderr and "only_rank_1" in proc.stderr, proc.stderr[-3000:]


def test_two_jobs_on_one_machine_do_not_collide(tmp_path: Path) -> None:
    """fitkit's own launcher (`python script.py`, devices=2), twice at once: free ports, both right."""
    outs = [tmp_path / f"{i}.pt" for i in range(2)]
    cmds = [[sys.executable, str(SCRIPT), json.dumps({"strategy": "ddp", "out": str(out)})] for out in outs]
    procs = [_jobs.start(c) for c in cmds]
    for p in procs:
        done = _jobs.finish(p, timeout=TIMEOUT_S)
        assert done.returncode == 0, done.stderr[-3000:]
    want = _reference()
    for out in outs:
        got = torch.load(out, weights_only=False)
        _assert_same_weights(got["weights"], want["weights"])
        assert got["metrics"]["val_loss"] == pytest.approx(want["metrics"]["val_loss"], rel=1e-5)
        assert got["gathered"].tolist() == [[0.0], [1.0]]
