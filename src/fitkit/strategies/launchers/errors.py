"""What the processes of a job say when the job breaks.

This module owns the wording of distributed failures, so that every launch mode says
the same thing: the rendezvous that could not happen (the port is taken, a rank never
came), a process that exited or was killed (which rank, by what, where its error is),
and the note a surviving rank adds to the error a collective raised when a peer went
away. It decides nothing about who stops whom: the launchers and
``ParallelStrategy`` do that.
"""

from __future__ import annotations

import datetime
import re
import signal

from fitkit.utilities.exceptions import FitkitError, FitkitRuntimeError, invalid

# Words in the errors gloo / NCCL / c10d raise in a collective whose peer went away.
_PEER_FAILURE_WORDS = ("Connection closed", "Connection reset", "Broken pipe", "gloo", "NCCL", "remote worker")


def is_peer_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is what a collective raises when another process of the job went away."""
    if isinstance(exc, FitkitError):
        return False  # fitkit's own errors (a translated rendezvous failure) are never an echo
    import torch.distributed as dist

    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and any(w in text for w in _PEER_FAILURE_WORDS)


def describe_exit(code: int) -> str:
    """How a process ended, from its exit status (negative: the signal that killed it).

    Example::

        >>> describe_exit(-9).split(";")[0]
        'was killed by SIGKILL'
        >>> describe_exit(1)
        'exited with code 1 (its error is above)'
    """
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return (
            f"was killed by {name}; it could print nothing, so look for the out-of-memory killer "
            "(`dmesg`), a job scheduler or a `kill`"
        )
    return f"exited with code {code} (its error is above)"


def process_exit_message(global_rank: int, local_rank: int, code: int) -> str:
    """The one line a launcher prints when one of its processes ended the job."""
    return (
        f"fitkit: global rank {global_rank}: the process of local rank {local_rank} {describe_exit(code)}. "
        "The other processes of this node were stopped.\n"
    )


def peer_failure_note(global_rank: int, world_size: int) -> str:
    """The note a surviving rank adds to the error its collective raised when a peer went away."""
    return (
        f"fitkit: rank {global_rank} of {world_size} stopped because another process of this job went away "
        "during a collective. This error is an echo: the root cause is the first process that failed "
        "(its own traceback, or the launcher's line naming its rank and exit status; under torchrun, the "
        '"Root Cause" section of its summary).'
    )


def rendezvous_error(
    exc: BaseException, *, rank: int, world_size: int, addr: str, port: str, timeout: datetime.timedelta
) -> FitkitRuntimeError | None:
    """A clear error for a failed ``init_process_group``; None when ``exc`` is nothing we recognise.

    Rank 0 listens on ``MASTER_ADDR:MASTER_PORT`` (the TCPStore) and waits for the other
    ranks; they connect to it. So a taken port fails on rank 0 at once (EADDRINUSE), while
    a rank that cannot reach rank 0, or a rank 0 waiting for processes that never start,
    fails when ``timeout`` runs out.
    """
    text = str(exc)
    cause = _first_line(text)
    if "EADDRINUSE" in text or "address already in use" in text.lower():
        return FitkitRuntimeError(
            invalid(
                "MASTER_PORT",
                port,
                f"rank 0 could not listen on {addr}:{port} because another program already uses that port ({cause})",
                "a free port: unset MASTER_PORT so that fitkit picks a free one (when it starts the processes "
                "itself), or export a port nothing listens on (`ss -ltn` lists the ones in use)",
            )
        )
    joined = re.search(r"(\d+)/(\d+) clients joined", text)
    timed_out = joined is not None or any(w in text.lower() for w in ("timed out", "timeout", "did not return"))
    if not timed_out:
        return None
    if rank == 0:
        count = joined.group(1) if joined is not None else "not all"
        return FitkitRuntimeError(
            f"Rank 0 waited {_seconds(timeout)} (DDPStrategy(timeout=...)) at {addr}:{port} for the job's "
            f"WORLD_SIZE={world_size} processes, and {count} joined. A process did not start or failed before "
            "it joined (its error is in its own output), or WORLD_SIZE counts more processes than were started. "
            f"({cause})"
        )
    return FitkitRuntimeError(
        f"Rank {rank} of {world_size} could not join the rendezvous at MASTER_ADDR={addr} MASTER_PORT={port} "
        f"within {_seconds(timeout)} (DDPStrategy(timeout=...)). Rank 0 did not start or failed before it "
        "listened (its error is in its own output), MASTER_ADDR does not reach rank 0's machine, or another "
        f"program listens on port {port}: then unset MASTER_PORT so that fitkit picks a free port, or "
        f"export a free one. ({cause})"
    )


def _first_line(text: str) -> str:
    for line in text.splitlines():
        line = line.strip()
        if line:
            return line[:300]
    return text[:300]


def _seconds(timeout: datetime.timedelta) -> str:
    return f"{timeout.total_seconds():g} s"
