"""Joining the default process group without raw c10d errors and without an endless wait.

This module owns :func:`join_process_group`, the one call ``ParallelStrategy`` makes to
``torch.distributed.init_process_group``. Around it:

- the errors c10d raises (port taken, a rank that never came, a rank 0 that cannot be
  reached) become one :class:`~fitkit.utilities.exceptions.FitkitRuntimeError` that
  names the rank, ``MASTER_ADDR:MASTER_PORT`` and what to do
  (:func:`fitkit.strategies.launchers.errors.rendezvous_error`);
- a watchdog ends the process when the rendezvous outlives the process group's timeout.
  c10d honours the timeout while a rank connects and while rank 0 waits, but a rank
  whose ``MASTER_PORT`` reaches a program that accepts the connection and never answers
  (another service on that port) waits in the store's handshake forever (torch 2.x).
  The watchdog prints the same clear message and exits with status 1: nothing of the
  run has started yet, so there is nothing to save or finalize.
"""

from __future__ import annotations

import datetime
import os
import threading

from fitkit.strategies.launchers.errors import rendezvous_error

#: Extra time past the process group's timeout before the watchdog gives up on c10d.
GRACE_S = 5.0


def join_process_group(backend: str, *, rank: int, world_size: int, timeout: datetime.timedelta) -> None:
    """``init_process_group`` from the torchrun-style variables, with clear errors and a hard deadline.

    Args:
        backend: ``"gloo"``, ``"nccl"``...
        rank: this process's global rank.
        world_size: processes in the job.
        timeout: how long the rendezvous (and later each collective) may wait; the watchdog
            fires ``timeout * 1.1 + GRACE_S`` seconds after the call started.

    Example::

        >>> join_process_group("gloo", rank=0, world_size=1, timeout=datetime.timedelta(seconds=10))  # doctest: +SKIP
    """
    import torch.distributed as dist

    addr, port = os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]
    done = threading.Event()
    watchdog = threading.Thread(
        target=_watch,
        args=(done, timeout.total_seconds() * 1.1 + GRACE_S, rank, world_size, addr, port, timeout),
        name="fitkit-rendezvous-watchdog",
        daemon=True,
    )
    watchdog.start()
    try:
        dist.init_process_group(backend, rank=rank, world_size=world_size, timeout=timeout)
    except RuntimeError as exc:  # c10d's DistError and friends
        error = rendezvous_error(exc, rank=rank, world_size=world_size, addr=addr, port=port, timeout=timeout)
        if error is None:
            raise
        raise error from None  # the c10d traceback is C++ frames; its first line is in the message
    finally:
        done.set()


def _watch(
    done: threading.Event,
    seconds: float,
    rank: int,
    world_size: int,
    addr: str,
    port: str,
    timeout: datetime.timedelta,
) -> None:
    if done.wait(seconds):
        return
    hung = TimeoutError(f"init_process_group did not return after {seconds:.0f} s")
    error = rendezvous_error(hung, rank=rank, world_size=world_size, addr=addr, port=port, timeout=timeout)
    text = str(error) if error is not None else str(hung)
    # os.write and os._exit: the main thread is stuck inside c10d, holding no lock we need.
    try:
        os.write(2, f"fitkit: {type(error).__name__}: {text}\n".encode())
    finally:
        os._exit(1)
