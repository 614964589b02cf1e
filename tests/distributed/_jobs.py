"""Running a distributed job as a subprocess in tests, without leaving processes behind.

Each job starts in its own session; when it outlives its timeout, the whole process
group (the launcher and every rank it started) is killed before the test fails.
"""

from __future__ import annotations

import os
import signal
import subprocess


def start(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )


def finish(proc: subprocess.Popen[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Wait for ``proc``; past ``timeout`` seconds kill its whole group and raise ``TimeoutExpired``."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return finish(start(cmd, env), timeout)


def survivors(session: int, wait_s: float = 3.0) -> list[str]:
    """Processes (zombies too) still in the session of a job :func:`start` began, after up to ``wait_s``.

    ``session`` is the job's pid (it leads its own session). Orphans reparented to init
    keep the session id, so this finds them; the wait lets init reap the last zombies.
    """
    import time

    deadline = time.monotonic() + wait_s
    while True:
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue  # gone meanwhile
            fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp session
            if int(fields[3]) == session:
                found.append(f"{entry} {stat[: stat.rindex(')') + 1]} state={fields[0]}")
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.1)
