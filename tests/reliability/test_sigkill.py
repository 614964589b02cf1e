"""SIGKILL at random moments of a run that checkpoints every step; then resume in a fresh process.

Each trial is a real process (forked by ``_sigkill_script.py``, which imports torch
once) killed with a real SIGKILL at a time drawn from a seeded RNG (the seed is printed;
set ``FITKIT_SIGKILL_SEED`` to choose it). After each kill: every ``*.ckpt`` on disk loads
with ``torch.load(weights_only=True)``, the temporary files of a killed write are never
taken for checkpoints, and a fresh process resuming with ``ckpt_path="last"`` picks the
newest checkpoint, cleans the temporary files up, keeps top-k bookkeeping that names
existing files, and ends with weights bitwise equal to an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from fitkit import checkpoint as ckpt_io

SCRIPT = Path(__file__).with_name("_sigkill_script.py")
SEED = int(os.environ.get("FITKIT_SIGKILL_SEED", "20261127"))
KILLS = 20
TIMEOUT_S = 60.0

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="the trial server forks")


class Server:
    """The fork server: ``start`` a training child, ``wait`` for it; SIGKILL is the test's to send."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )

    def ask(self, **request: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the trial server died (exit code {self.proc.wait()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def start(self, folder: Path, out: Path, ckpt_path: str | None = None) -> int:
        return int(self.ask(cmd="start", dir=str(folder), out=str(out), ckpt_path=ckpt_path)["pid"])

    def wait(self, pid: int) -> int:
        return int(self.ask(cmd="wait", pid=pid)["returncode"])

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """A folder on tmpfs (/dev/shm) where there is one: the trials write about 3 GB in all."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="fitkit-sigkill-", dir=shm))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def outcome(out: Path) -> dict[str, Any]:
    if not out.with_suffix(".json").exists():
        log = out.with_suffix(".log")
        pytest.fail(f"run {out.name} wrote no report; its log:\n{log.read_text() if log.exists() else '(none)'}")
    report: dict[str, Any] = json.loads(out.with_suffix(".json").read_text())
    report["weights"] = torch.load(out.with_suffix(".weights"), weights_only=True)
    return report


def wait_for(path: Path) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not path.exists():
        if time.monotonic() > deadline:
            pytest.fail(f"{path} did not appear within {TIMEOUT_S} s")
        time.sleep(0.002)


def names_of(paths: str | list[str]) -> list[str]:
    return sorted(Path(p).name for p in ([paths] if isinstance(paths, str) else paths))


def step_of(path: Path) -> int:
    """Every file a kill leaves under a checkpoint's name must load (``torch.load(weights_only=True)`` inside)."""
    return int(ckpt_io.load(path, map_location="cpu")["global_step"])


@pytest.mark.slow
def test_sigkill_at_random_moments_never_costs_a_usable_checkpoint(scratch: Path) -> None:
    rng = random.Random(SEED)
    print(f"FITKIT_SIGKILL_SEED={SEED}")
    server = Server()
    try:
        reference_pid = server.start(scratch / "ref", scratch / "ref")
        assert server.wait(reference_pid) == 0, (scratch / "ref.log").read_text()
        reference = outcome(scratch / "ref")
        train_s = reference["ended"] - reference["train_start"]

        killed, trials, in_write, resumes = 0, 0, 0, []
        # A run that ends before its kill arrives does not count. The reference ran first and
        # cold, so it can be slower than the trials: each such run's own training time
        # becomes the window the next kills are drawn from.
        while killed < KILLS and trials < KILLS + 12:
            trial, trials = trials, trials + 1
            folder = scratch / f"t{trial}"
            pid = server.start(folder / "ck", folder / "killed")
            wait_for(folder / "killed.started")
            time.sleep(rng.uniform(0.0, train_s))  # a random moment of its training
            os.kill(pid, signal.SIGKILL)
            code = server.wait(pid)
            if code != -signal.SIGKILL:  # it finished before the kill arrived
                assert code == 0, (folder / "killed.log").read_text()
                finished = outcome(folder / "killed")
                train_s = min(train_s, finished["ended"] - finished["train_start"])
                continue
            killed += 1
            names = sorted(os.listdir(folder / "ck")) if (folder / "ck").exists() else []
            temps = [n for n in names if n.endswith(".tmp")]
            in_write += bool(temps)
            steps = {n: step_of(folder / "ck" / n) for n in names if n.endswith(".ckpt")}
            resume = server.start(folder / "ck", folder / "resumed", "last" if steps else None)
            resumes.append((trial, resume, folder, steps))

        print(f"{killed} runs killed in {trials} trials, {in_write} of them inside a checkpoint write")
        orphans = kept_resumed = 0
        for trial, resume, folder, steps in resumes:
            assert server.wait(resume) == 0, (folder / "resumed.log").read_text()
            report = outcome(folder / "resumed")
            for name, tensor in reference["weights"].items():
                assert torch.equal(report["weights"][name], tensor), f"trial {trial}: {name} differs"
            if steps:  # resumed from the newest complete checkpoint, never from a temporary file
                resumed_from = Path(report["resumed_from"])
                assert resumed_from.name in steps, (trial, resumed_from, steps)
                assert steps[resumed_from.name] == max(steps.values()), (trial, resumed_from, steps)
            else:
                assert report["resumed_from"] is None
            left = sorted(os.listdir(folder / "ck"))
            assert not [n for n in left if n.endswith(".tmp")], f"trial {trial}: temporary files kept: {left}"
            tracked = {*report["best_k_models"], report["best_model_path"], report["last_model_path"]}
            for key in ("best_k_models", "best_model_path", "last_model_path"):  # the bookkeeping carried on
                assert names_of(report[key]) == names_of(reference[key]), (trial, key, report[key])
            for path in tracked:
                assert step_of(Path(path)) <= reference["global_step"]
            # Untracked but complete: the file resumed from (never deleted), and the top-k file a kill
            # caught between writing its replacement and deleting it.
            untracked = {n for n in left if str(folder / "ck" / n) not in tracked}
            kept_resumed += bool(steps) and Path(report["resumed_from"]).name in untracked
            orphans += len(untracked - {Path(report["resumed_from"] or "").name})
            assert len(untracked) <= 2, f"trial {trial}: more files than a kill can orphan: {untracked}"
            shutil.rmtree(folder)
        print(f"untracked files left: {kept_resumed} resumed-from files, {orphans} replaced files not yet deleted")
    finally:
        server.close()
    assert killed == KILLS
    assert in_write >= 3, f"only {in_write} of {killed} kills landed inside a write (seed {SEED})"
