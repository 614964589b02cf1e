"""Running the user's script once per process, as ``torchrun`` would (``strategy="ddp"``).

The process the user started becomes global rank 0 of its node. It starts the other
``devices - 1`` processes by re-running the same command line with the same
interpreter and torchrun-style variables (``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR``, ``MASTER_PORT``...), so each copy builds the same Trainer, finds
its ranks in the environment, and joins the group. A watcher thread ends the job
when a copy dies with an error or is killed, so a failure on one rank never leaves
the others waiting in a collective (up to the process group's ``timeout``). Exactly
one line names the process that ended the job, whichever of the watcher and rank 0's
own failure notices it first; the failing process's traceback is its own, printed once.
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

from fitkit.strategies.launchers.errors import is_peer_failure, process_exit_message
from fitkit.strategies.launchers.launcher import Launcher, rank_env, rendezvous_env
from fitkit.utilities.exceptions import FitkitRuntimeError

_POLL_S = 0.1
_TERMINATE_GRACE_S = 3.0
_ECHO_WAIT_S = 1.0  # how long a failing rank 0 waits to learn whether a copy failed first
# A copy that exits with this status stopped for SIGTERM (trainer/signals.py): all ranks
# agreed to stop at the same step and save, so it is not a failure that ends the others.
_SIGTERM_EXIT = 128 + int(signal.SIGTERM)
_SIGTERM_WAIT_S = 60.0  # how long rank 0, stopping for SIGTERM, waits for the copies to finish theirs


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
        self._node_rank = 0
        # The watcher thread and the main thread may both see a copy fail: one reports it.
        self._report_lock = threading.Lock()
        self._reported = False

    def launch(self, function: Callable[..., Any], *args: Any, trainer: Any = None, **kwargs: Any) -> Any:
        if not self.launched:
            self._start_children()
        try:
            return function(*args, **kwargs)
        except BaseException as exc:
            if isinstance(exc, SystemExit) and exc.code == _SIGTERM_EXIT:
                # Every rank stops at the same step for SIGTERM: let the copies finish
                # their own shutdown (loggers, teardown) rather than signal them again.
                self._wait_children(_SIGTERM_WAIT_S)
                self.stop_children()
                raise
            # A copy that died first breaks this process's collectives: then its error
            # (printed above, by the copy) is the one to show, not this echo of it.
            failed = self._first_failure(wait_s=_ECHO_WAIT_S) if is_peer_failure(exc) else None
            # Stop the copies now rather than leave them to time out in a collective,
            # and keep the watcher from reporting their deaths.
            self.stop_children()
            if failed is None:
                raise
            rank, code = failed
            self._report(rank, code)  # no-op when the watcher already did
            raise SystemExit(1) from None

    def _report(self, local_rank: int, code: int) -> bool:
        """Print the line naming the copy that ended the job, once per job; False if already printed."""
        with self._report_lock:
            if self._reported:
                return False
            self._reported = True
        sys.stdout.flush()
        global_rank = self._node_rank * self.num_processes + local_rank
        sys.stderr.write(process_exit_message(global_rank, local_rank, code))
        sys.stderr.flush()
        return True

    def _on_child_failure(self, local_rank: int, code: int) -> None:
        """The watcher saw a copy fail: end the other copies and this process (rank 0) at once."""
        with self._report_lock:
            if self._reported:
                return  # the main thread is already on its way out
        _terminate([p for i, p in enumerate(self.procs, start=1) if i != local_rank])
        if self._report(local_rank, code):
            os._exit(1)

    def _first_failure(self, wait_s: float) -> tuple[int, int] | None:
        """(local rank, exit code) of a copy that exited with an error, waiting up to ``wait_s``."""
        deadline = time.monotonic() + wait_s
        while True:
            for rank, proc in enumerate(self.procs, start=1):
                code = proc.poll()
                if code not in (None, 0, _SIGTERM_EXIT):
                    return rank, code  # type: ignore[return-value]
            if time.monotonic() >= deadline:
                return None
            time.sleep(_POLL_S / 2)

    def _start_children(self) -> None:
        command = script_command()
        base = rendezvous_env(self.num_processes, self.num_nodes)
        self._node_rank = int(base["NODE_RANK"])
        for local_rank in range(1, self.num_processes):
            env = {**os.environ, **rank_env(base, local_rank, self.num_processes)}
            self.procs.append(subprocess.Popen(command, env=env, preexec_fn=_die_with_parent))
        # This process is local rank 0: set its own variables last, so that the children
        # were started from the user's environment, not from rank 0's.
        os.environ.update(rank_env(base, 0, self.num_processes))
        self._watcher = _Watcher(self.procs, self._on_child_failure)
        self._watcher.start()
        atexit.register(self._wait_at_exit)

    def stop_children(self) -> None:
        """End every copy (SIGTERM, then SIGKILL after a grace period)."""
        if self._watcher is not None:
            self._watcher.stop()
        _terminate(self.procs)

    def _wait_children(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for proc in self.procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                return

    def _wait_at_exit(self) -> None:
        # The copies run the rest of the script too; the job ends when all of them have.
        for proc in self.procs:
            proc.wait()
        failed = [p.returncode for p in self.procs if p.returncode not in (0, None)]
        if self._watcher is not None:
            self._watcher.stop()
        if failed:
            sys.stderr.flush()
            # Copies that stopped for SIGTERM and nothing worse: the job's status is SIGTERM's.
            os._exit(_SIGTERM_EXIT if all(code == _SIGTERM_EXIT for code in failed) else 1)


class _Watcher(threading.Thread):
    """Polls the copies; when one exits with an error or a signal, calls ``on_failure(local_rank, code)``."""

    def __init__(self, procs: list[subprocess.Popen[bytes]], on_failure: Callable[[int, int], None]) -> None:
        super().__init__(name="fitkit-ddp-watcher", daemon=True)
        self.procs = procs
        self.on_failure = on_failure
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        while not self._stop_event.wait(_POLL_S):
            for rank, proc in enumerate(self.procs, start=1):
                code = proc.poll()
                if code is None or code == 0 or code == _SIGTERM_EXIT:
                    continue
                if self._stop_event.is_set():
                    return
                self.on_failure(rank, code)
                return


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
