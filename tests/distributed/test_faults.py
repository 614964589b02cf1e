"""Distributed faults with real processes (gloo on CPU): a rank raises, a rank is killed,
the rendezvous port is taken, the world size is wrong.

Each case is one run of ``_fault_script.py`` (two processes, a 30 s process-group
timeout) in its own session, under fitkit's launcher (``python script.py``),
``torchrun`` or ``ddp_spawn``. The runs are independent, so a module fixture starts
them a few at a time and the tests read the outcomes: this keeps the module's wall
time near that of its slowest runs. ``test_ddp.py`` covers a raising rank 1 under
fitkit's launcher; here are the other launch modes and the other faults.

Every case checks that the job ended non-zero within the timeout of the fault, said
what happened once, and left no process of its session behind.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).parent
SCRIPT = HERE / "_fault_script.py"
sys.path.insert(0, str(HERE))
import _jobs  # noqa: E402

# DDPStrategy(timeout=...) in every run. A job that noticed its fault ends well before
# it (0.3-6 s on an idle machine, up to 13 s with three jobs at once on two busy cores);
# one whose ranks waited for a collective to time out would take longer. No case here
# waits for it, so it costs nothing unless something hangs.
TIMEOUT_S = 30
JOB_LIMIT_S = 120  # past this a run counts as hung: its session is killed and the test fails
PARALLEL_RUNS = 3

pytestmark = pytest.mark.slow


@dataclass
class Outcome:
    proc: subprocess.CompletedProcess[str]
    wall_s: float  # from the start of the run to its end
    after_fault_s: float | None  # from the failing rank's fault to the end of the run
    survivors: list[str]  # processes of the run's session still there after it ended

    @property
    def out(self) -> str:
        return self.proc.stdout + self.proc.stderr


def _cmd(cfg: dict[str, Any], torchrun: int = 0) -> list[str]:
    prefix = [sys.executable]
    if torchrun:
        prefix += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}"]
    return [*prefix, str(SCRIPT), json.dumps({"timeout_s": TIMEOUT_S, **cfg})]


def _clean_env(**extra: str) -> dict[str, str]:
    drop = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT", "MASTER_ADDR", "NODE_RANK", "GROUP_RANK")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    return {**env, **extra}


def _execute(cmd: list[str], env: dict[str, str], stamp: Path) -> Outcome:
    start = time.monotonic()
    proc = _jobs.start(cmd, env)
    try:
        done = _jobs.finish(proc, timeout=JOB_LIMIT_S)
    except subprocess.TimeoutExpired:
        done = subprocess.CompletedProcess(cmd, None, "", f"HUNG: killed after {JOB_LIMIT_S} s")  # type: ignore[arg-type]
    end_wall, end = time.time(), time.monotonic()
    fault = float(stamp.read_text()) if stamp.is_file() else None
    return Outcome(done, end - start, None if fault is None else end_wall - fault, _jobs.survivors(proc.pid))


@pytest.fixture(scope="module")
def busy_port() -> Iterator[int]:
    """A port a test socket listens on (and never answers): what another program would look like."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield int(s.getsockname()[1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, busy_port: int) -> Iterator[dict[str, Outcome]]:
    tmp = tmp_path_factory.mktemp("faults")
    port = str(busy_port)
    on_busy_port = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
    alone_as_rank_1 = {**on_busy_port, "RANK": "1", "LOCAL_RANK": "1", "WORLD_SIZE": "2"}
    cases: dict[str, tuple[dict[str, Any], int, dict[str, str]]] = {
        # name: (script config, torchrun's --nproc_per_node or 0, extra environment)
        "raise/torchrun": ({"fail_rank": 1}, 2, {}),
        "raise/spawn": ({"fail_rank": 1, "strategy": "ddp_spawn"}, 0, {}),
        "kill/popen": ({"fail_rank": 1, "fault": "kill"}, 0, {}),
        "kill/popen/rank0": ({"fail_rank": 0, "fault": "kill"}, 0, {}),
        "kill/torchrun": ({"fail_rank": 1, "fault": "kill"}, 2, {}),
        "kill/spawn": ({"fail_rank": 1, "fault": "kill", "strategy": "ddp_spawn"}, 0, {}),
        "port/popen": ({}, 0, on_busy_port),
        "port/rank1": ({"timeout_s": 2}, 0, alone_as_rank_1),
        "world/env": ({}, 0, {"WORLD_SIZE": "3"}),
        "world/torchrun": ({}, 3, {}),
    }
    jobs = {}
    for name, (cfg, torchrun, env) in cases.items():
        stamp = tmp / (name.replace("/", "_") + ".stamp")
        jobs[name] = (_cmd({**cfg, "stamp": str(stamp)}, torchrun), _clean_env(**env), stamp)
    with ThreadPoolExecutor(PARALLEL_RUNS) as pool:
        futures = {name: pool.submit(_execute, *job) for name, job in jobs.items()}
        outcomes = {name: f.result() for name, f in futures.items()}
    report = {
        name: (o.proc.returncode, round(o.wall_s, 1), None if o.after_fault_s is None else round(o.after_fault_s, 2))
        for name, o in outcomes.items()
    }
    print("\nfault: [exit status, wall s, s from the fault to the end]", json.dumps(report, indent=1))
    yield outcomes
    left = subprocess.run(["pgrep", "-f", SCRIPT.name], capture_output=True, text=True).stdout.split()
    assert left == [], f"processes of {SCRIPT.name} left behind: {left}"


def _ended_cleanly(o: Outcome, within_s: float, faulted: bool = True) -> None:
    """Non-zero, in time, nothing left behind; ``faulted``: the failing rank reached its fault."""
    assert o.proc.returncode not in (0, None), o.out[-4000:]
    assert (o.after_fault_s is not None) == faulted, o.out[-4000:]
    assert o.survivors == [], o.survivors
    elapsed = o.after_fault_s if o.after_fault_s is not None else o.wall_s
    assert elapsed < within_s, (elapsed, o.out[-4000:])


def _fitkit_lines(o: Outcome) -> list[str]:
    return [line for line in o.proc.stderr.splitlines() if line.startswith("fitkit: global rank")]


@pytest.mark.parametrize("name", ["raise/torchrun", "raise/spawn"])  # fitkit's launcher: test_ddp.py
def test_a_raising_rank_ends_every_rank_and_its_traceback_shows_once(runs: dict[str, Outcome], name: str) -> None:
    o = runs[name]
    _ended_cleanly(o, within_s=TIMEOUT_S)
    assert o.out.count("RuntimeError: boom on rank 1") == 1, o.out[-6000:]
    assert "fitkit-fault-script: finished" not in o.out


def test_a_killed_rank_is_named_by_fitkits_launcher(runs: dict[str, Outcome]) -> None:
    o = runs["kill/popen"]
    _ended_cleanly(o, within_s=TIMEOUT_S)
    lines = _fitkit_lines(o)
    assert len(lines) == 1, o.proc.stderr[-4000:]  # once, though the watcher and rank 0 both see it
    assert "global rank 1: the process of local rank 1 was killed by SIGKILL" in lines[0]
    assert o.proc.returncode == 1


def test_a_killed_launcher_takes_its_copies_with_it(runs: dict[str, Outcome]) -> None:
    """Rank 0 is the process the user started: its copies die with it (PR_SET_PDEATHSIG), no orphans."""
    o = runs["kill/popen/rank0"]
    _ended_cleanly(o, within_s=TIMEOUT_S)
    assert o.proc.returncode == -9


def test_a_killed_rank_under_torchrun_fails_the_job_with_its_name(runs: dict[str, Outcome]) -> None:
    o = runs["kill/torchrun"]
    _ended_cleanly(o, within_s=TIMEOUT_S)
    root = o.proc.stderr.split("Root Cause", 1)[-1]
    assert "rank      : 1" in root and "SIGKILL" in root, o.proc.stderr[-4000:]


def test_a_killed_spawn_worker_is_named_in_the_callers_error(runs: dict[str, Outcome]) -> None:
    o = runs["kill/spawn"]
    _ended_cleanly(o, within_s=TIMEOUT_S)
    assert "FitkitRuntimeError: The ddp_spawn worker of global rank 1 (local rank 1) was killed by SIGKILL" in o.out


def test_a_taken_port_is_named_before_training(runs: dict[str, Outcome], busy_port: int) -> None:
    o = runs["port/popen"]
    _ended_cleanly(o, within_s=JOB_LIMIT_S, faulted=False)  # refused before the first step
    assert f"FitkitRuntimeError: `MASTER_PORT='{busy_port}'` is not valid" in o.proc.stderr
    assert "unset MASTER_PORT" in o.proc.stderr
    assert "DistNetworkError" not in o.proc.stderr  # translated, not the raw c10d traceback


def test_a_rank_that_cannot_reach_rank_zero_gives_up_after_the_timeout(
    runs: dict[str, Outcome], busy_port: int
) -> None:
    """A non-zero rank whose MASTER_PORT reaches a program that never answers: c10d alone waits forever."""
    o = runs["port/rank1"]
    _ended_cleanly(o, within_s=JOB_LIMIT_S, faulted=False)
    assert "Rank 1 of 2 could not join the rendezvous" in o.proc.stderr
    assert f"MASTER_PORT={busy_port} within 2 s" in o.proc.stderr


def test_an_exported_world_size_that_does_not_match_is_refused_before_start(runs: dict[str, Outcome]) -> None:
    o = runs["world/env"]
    _ended_cleanly(o, within_s=JOB_LIMIT_S, faulted=False)
    assert "MisconfigurationError: `WORLD_SIZE='3'` is not valid" in o.proc.stderr
    assert "devices=2 x num_nodes=1 makes 2 processes" in o.proc.stderr


def test_torchrun_starting_more_processes_than_devices_stops_every_rank(runs: dict[str, Outcome]) -> None:
    """Every rank checks before it joins, so none waits for a rank that never comes.

    torchrun stops the other ranks when the first one exits, so how many of them print
    the error before that depends on timing: at least one does, and none reaches the
    rendezvous (which would say so, after the timeout).
    """
    o = runs["world/torchrun"]
    _ended_cleanly(o, within_s=JOB_LIMIT_S, faulted=False)
    reported = [r for r in range(3) if f"on rank {r}, devices=2 x num_nodes=1 makes 2 processes" in o.proc.stderr]
    assert reported, o.proc.stderr[-4000:]
    assert "WORLD_SIZE=3 (torchrun's --nproc_per_node" in o.proc.stderr
    assert "could not join the rendezvous" not in o.out and "Rank 0 waited" not in o.out
