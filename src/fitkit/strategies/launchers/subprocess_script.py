"""Running the user's script once per process, as ``torchrun`` would (``strategy="ddp"``).

The process the user started becomes global rank 0 of its node. It starts the other
``devices - 1`` processes by re-running the same command line with the same
interpreter and torchrun-style variables (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``...), so each copy builds the same Trainer, finds
its ranks in the environment, and joins the group. A watcher thread ends the job
when a copy dies with an error, so a failure on one rank never leaves the others
waiting in a collective.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from fitkit.strategies.launchers.launcher import Launcher, rank_env, rendezvous_env
from fitkit.utilities.exceptions import FitkitRuntimeError

_POLL_S = 0.1
_TERMINATE_GRACE_S = 3.0
_ECHO_WAIT_S = 1.0  # how long a failing rank 0 waits to learn whether a copy failed first


def script_command() -> list[str]:
    """The command line that started this process, to run again in the other processes."""
    import __main__

    spec = getattr(__main__, "__spec__", None)
    if spec is not None and spec.name not in ("__main__", None):  # python -m package.module
        name = spec.name[: -len(".__main__")] if spec.name.endswith(".__main__") else spec.name
        return [sys.executable, "-m", name, *sys.argv[1:]]
    script = sys.argv[0] if sys.argv else ""
    if not script or script == "-c" or not os.path.isfile(script):
        raise FitkitRuntimeError(
            'strategy="ddp" starts the other processes by running this script again, but this process '
            f"was not started from a script file (sys.argv[0]={script!r}: an interactive session, a notebook "
            'or `python -c`). Use strategy="ddp_spawn", or run the script with `torchrun`.'
        )
    return [sys.executable, os.path.abspath(script), *sys.argv[1:]]


class SubprocessScriptLauncher(Launcher):
    """Starts ``num_processes - 1`` copies of the running script on this node; this process is local rank 0.

    Example::

        >>> launcher = SubprocessScriptLauncher(num_processes=2, num_nodes=1)
        >>> # launcher.launch(trainer._run, ...)  # inside Trainer.fit
    """

    def __init__(self, num_processes: int, num_nodes: int = 1) -> None:
        self.num_processes = num_processes
        self.num_nodes = num_nodes
        self.procs: list[subprocess.Popen[bytes]] = []
        self._watcher: _Watcher | None = None

    def launch(self, function: Callable[..., Any], *args: Any, trainer: Any = None, **kwargs: Any) -> Any:
        if not self.launched:
            self._start_children()
        try:
            return function(*args, **kwargs)
        except BaseException as exc:
            # A copy that died first breaks this process's collectives: then its error
            # (printed above, by the copy) is the one to show, not this echo of it.
            failed = self._first_failure(wait_s=_ECHO_WAIT_S) if _is_peer_failure(exc) else None
            # Stop the copies now rather than leave them to time out in a collective,
            # and keep the watcher from reporting their deaths.
            self.stop_children()
            if failed is None:
                raise
            rank, code = failed
            sys.stderr.write(
                f"fitkit: the process of local rank {rank} exited with code {code} (its error is above); "
                "the other processes of this node were stopped.\n"
            )
            raise SystemExit(1) from None

    def _first_failure(self, wait_s: float) -> tuple[int, int] | None:
        """(local rank, exit code) of a copy that exited with an error, waiting up to ``wait_s``."""
        deadline = time.monotonic() + wait_s
        while True:
            for rank, proc in enumerate(self.procs, start=1):
                code = proc.poll()
                if code not in (None, 0):
                    return rank, code  # type: ignore[return-value]
            if time.monotonic() >= deadline:
                return None
            time.sleep(_POLL_S / 2)

    def _start_children(self) -> None:
        command = script_command()
        base = rendezvous_env(self.num_processes, self.num_nodes)
        for local_rank in range(1, self.num_processes):
            env = {**os.environ, **rank_env(base, local_rank, self.num_processes)}
            self.procs.append(subprocess.Popen(command, env=env, preexec_fn=_die_with_parent))
        # This process is local rank 0: set its own variables last, so that the children
        # were started from the user's environment, not from rank 0's.
        os.environ.update(rank_env(base, 0, self.num_processes))
        self._watcher = _Watcher(self.procs)
        self._watcher.start()
        atexit.register(self._wait_at_exit)

    def stop_children(self) -> None:
        """End every copy (SIGTERM, then SIGKILL after a grace period)."""
        if self._watcher is not None:
            self._watcher.stop()
        _terminate(self.procs)

    def _wait_at_exit(self) -> None:
        # The copies run the rest of the script too; the job ends when all of them have.
        for proc in self.procs:
            proc.wait()
        failed = [p.returncode for p in self.procs if p.returncode not in (0, None)]
        if self._watcher is not None:
            self._watcher.stop()
        if failed:
            sys.stderr.flush()
            os._exit(1)


class _Watcher(threading.Thread):
    """Polls the copies; when one exits with an error, ends the others and this process."""

    def __init__(self, procs: list[subprocess.Popen[bytes]]) -> None:
        super().__init__(name="fitkit-ddp-watcher", daemon=True)
        self.procs = procs
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        while not self._stop_event.wait(_POLL_S):
            for rank, proc in enumerate(self.procs, start=1):
                code = proc.poll()
                if code is None or code == 0:
                    continue
                if self._stop_event.is_set():
                    return
                _terminate([p for p in self.procs if p is not proc])
                sys.stdout.flush()
                sys.stderr.write(
                    f"fitkit: the process of local rank {rank} exited with code {code} "
                    "(its error is above); the other processes of this node were stopped.\n"
                )
                sys.stderr.flush()
                os._exit(1)


def _is_peer_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is what a collective raises when another process went away."""
    import torch.distributed as dist

    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(w in text for w in _PEER_FAILURE_WORDS)


_PEER_FAILURE_WORDS = ("Connection closed", "Connection reset", "Broken pipe", "gloo", "NCCL", "remote worker")


def _terminate(procs: list[subprocess.Popen[bytes]]) -> None:
    alive = [p for p in procs if p.poll() is None]
    for p in alive:
        p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + _TERMINATE_GRACE_S
    for p in alive:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _die_with_parent() -> None:
    """In the child, before exec: get SIGKILL if rank 0 dies without cleaning up (Linux only)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
