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
