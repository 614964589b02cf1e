"""Ctrl-C (SIGINT) and SIGTERM during a stage: finish the step, save, leave cleanly.

This module owns the handlers a stage installs, the one flag the loops read per step
(``trainer._signal_check``), how the processes of a distributed run agree to stop, and
:class:`SIGTERMException`. What the interrupted path does (``trainer.state.status``,
the strategy's and callbacks' ``on_exception``, loggers) is ``Trainer._run``'s; what
the exception checkpoint holds is ``OnExceptionCheckpoint``'s.

How a signal travels:

1. The handler only records it and sets ``trainer._signal_check``: nothing is raised in
   the middle of a step. A second signal (or one during the shutdown) raises at once.
2. The fit loop, after a batch that completed its optimizer step (or any batch in
   manual optimization), calls :func:`at_boundary` while the flag is set; the
   validate/test/predict loops of a single process do so after each batch. Under
   several processes the flag is set for the whole of ``fit`` and the ranks agree
   without blocking, at exchange boundaries: at each, :func:`at_boundary` waits on the
   ``max`` all-reduce it started at the previous one (long finished by then: steps ran
   since), acts on its result, and starts a new asynchronous one with this process's
   flag. Every rank thus learns of a signal that reached any of them and all stop at
   the same boundary, one exchange later than a blocking all-reduce would. The
   all-reduce runs on a gloo group (the default group under gloo, a gloo subgroup made
   at install otherwise) so that reading its result is a host read of a CPU tensor,
   never a device sync. Exchanges are spaced about ``FITKIT_SIGNAL_AGREEMENT_S``
   seconds apart (default 0.05; 0 exchanges at every boundary): each rank proposes how
   many boundaries fit in that time from its own step time, the all-reduce carries the
   proposals too, and every rank takes the smallest, so all exchange at the same
   boundaries. A signal thus takes effect within about two such intervals (and at least
   one step) after it arrived, and a fast step pays for one exchange in many, not one
   per step.
3. :func:`at_boundary` raises ``KeyboardInterrupt`` (SIGINT) or
   :class:`SIGTERMException` (SIGTERM) on every rank; ``Trainer._run`` takes the
   interrupted path. After SIGINT the stage returns (``trainer.interrupted`` is True);
   SIGTERMException is a ``SystemExit`` with status 143, so the process ends.

Handlers are installed only in the main thread (elsewhere Python cannot) and the
previous ones come back when the stage ends. The last all-reduce a stage started is
waited for in :meth:`SignalGuard.restore`, before the strategy destroys the process
group, when the stage ended normally (every rank started the same ones, so the wait is
short; a SIGTERM it reveals ends every rank with 143); after an error it is waited for
at most 2 s, then abandoned.
"""

from __future__ import annotations

import datetime
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

import torch

from fitkit.trainer.state import TrainerStatus
from fitkit.utilities.exceptions import MisconfigurationError, invalid
from fitkit.utilities.rank_zero import rank_zero_print

if TYPE_CHECKING:
    from fitkit.trainer.trainer import Trainer

#: The exit status after SIGTERM: 128 + 15, the shell's convention for "ended by SIGTERM".
SIGTERM_EXIT_CODE = 128 + int(signal.SIGTERM)

# What a process received, ordered so that the all-reduce's max picks SIGTERM over SIGINT.
_NONE, _SIGINT, _SIGTERM = 0, 1, 2
_NAMES = {_SIGINT: "SIGINT", _SIGTERM: "SIGTERM"}
# After an error, how long the stage's end waits for its last flag all-reduce (gloo's Work.wait timeout).
_ABANDON_AFTER = datetime.timedelta(seconds=2)
# How long a rank that finished fit waits for its peers in the flag exchange at the end.
_FINAL_WAIT = datetime.timedelta(seconds=60)
# Under several processes: the time between two flag exchanges the ranks aim for, and the
# most boundaries between two exchanges (a bound on the delay when steps suddenly slow down).
_AGREEMENT_ENV = "FITKIT_SIGNAL_AGREEMENT_S"
_DEFAULT_AGREEMENT_S = 0.05
_MAX_INTERVAL = 256


def _agreement_seconds() -> float:
    """``$FITKIT_SIGNAL_AGREEMENT_S`` as seconds >= 0 (the default when unset)."""
    raw = os.environ.get(_AGREEMENT_ENV, "")
    if not raw:
        return _DEFAULT_AGREEMENT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # also NaN
        raise MisconfigurationError(
            invalid(_AGREEMENT_ENV, raw, "it spaces the ranks' signal exchanges", "seconds >= 0, such as 0.05 or 0")
        )
    return value


class SIGTERMException(SystemExit):
    """Raised at a step boundary after the process received SIGTERM (as in Lightning).

    A ``SystemExit`` with code :data:`SIGTERM_EXIT_CODE` (143): ``except Exception`` in
    user code does not swallow it, and left uncaught it ends the interpreter normally
    (``finally`` blocks and ``atexit`` run) with status 143. Callbacks see it in
    ``on_exception``.

    Example::

        >>> try:
        ...     raise SIGTERMException
        ... except SystemExit as exc:
        ...     exc.code
        143
    """

    def __init__(self) -> None:
        super().__init__(SIGTERM_EXIT_CODE)


class SignalGuard:
    """The signal handling of one stage (``fit``, ``validate``, ``test`` or ``predict``).

    ``Trainer._run`` calls :meth:`install` before the stage and :meth:`restore` after it.

    Args:
        trainer: the Trainer running the stage.
        stage: ``"fit"``, ``"validate"``, ``"test"`` or ``"predict"``.

    Example::

        >>> guard = SignalGuard(trainer, "fit")  # doctest: +SKIP
        >>> guard.install()  # doctest: +SKIP
    """

    def __init__(self, trainer: Trainer, stage: str) -> None:
        self.trainer = trainer
        # Under several processes, fit's steps agree on the flag through an all-reduce.
        self.collective = stage == "fit" and trainer.strategy.world_size > 1
        self.received = _NONE  # the first signal this process received
        self.acted = False  # at_boundary raised: the stage is on its way out
        self.aborted = False  # a second signal raised at once, mid-step
        self._previous: dict[int, Any] = {}
        # Under several processes: the all-reduce started at the last boundary and its tensor.
        self._group: Any = None
        self._work: Any = None
        self._flag: torch.Tensor | None = None
        # When to exchange: boundaries left until the next exchange, the interval all ranks
        # agreed on, the target spacing in seconds, and the time of the last exchange.
        self._countdown = 1
        self._interval = 1
        self._target_s = _agreement_seconds() if self.collective else 0.0
        self._last_exchange: float | None = None

    def install(self) -> None:
        """Attach to the trainer and, in the main thread, handle SIGINT and SIGTERM."""
        trainer = self.trainer
        trainer._signals = self
        trainer._received_sigterm = False
        trainer._signal_check = self.collective
        if self.collective:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                # Every rank runs install at the same point, so new_group's collective matches.
                self._group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
            else:  # no process group (a strategy that fakes several processes): nothing to agree on
                self.collective = trainer._signal_check = False
        if threading.current_thread() is not threading.main_thread():
            return  # Python delivers signals to the main thread only
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous = signal.getsignal(signum)
            if previous is None:  # installed from C: it could not be put back, so leave it
                continue
            signal.signal(signum, self._handle)
            self._previous[signum] = previous

    def restore(self) -> None:
        """Put the previous handlers back, settle the last all-reduce, and detach from the trainer."""
        if self.collective and self.trainer.state.status == TrainerStatus.FINISHED:
            # Every rank finished the same boundaries: settle the outstanding exchange (every
            # rank started it), then share flags once more, so that a signal after the last
            # exchange reaches every rank. finish() honours a SIGTERM either reveals.
            code = max(self._agreed()[0], self._exchange_now(self.received))
            if code == _SIGTERM:
                self.received = _SIGTERM
                self.trainer._received_sigterm = True
        elif self._work is not None:
            # An error: every peer normally started its side within a step, but one stuck
            # elsewhere (or dead) may never do so. Wait briefly, then abandon it.
            try:
                self._work.wait(_ABANDON_AFTER)
            except Exception:  # timed out, or the peer is gone: the process group goes next anyway
                pass
            self._work = self._flag = None
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()
        self.trainer._signal_check = False
        self.trainer._signals = None

    def graceful(self, exc: BaseException) -> bool:
        """Whether the stage should return after ``exc`` rather than re-raise it.

        A first Ctrl-C, or a ``KeyboardInterrupt`` raised by code, ends the stage early
        and quietly, as in Lightning. Not a second signal; and under several processes
        only an interruption all ranks agreed on (one raised on a single rank is an
        error like any other: the other ranks never heard of it).
        """
        if self.aborted or not isinstance(exc, KeyboardInterrupt):
            return False
        trainer = self.trainer
        if not (self.acted or trainer.strategy.world_size == 1):
            return False
        fn = trainer.state.fn.value if trainer.state.fn is not None else "the stage"
        rank_zero_print(
            f"fitkit: {fn} interrupted at global step {trainer.global_step}; on_exception ran, "
            "trainer.interrupted is True.",
            file=sys.stderr,
        )
        return True

    def finish(self) -> None:
        """After a stage that ended normally: honour a SIGTERM that came after its last step boundary."""
        if self.received == _SIGTERM and not self.acted:
            raise SIGTERMException

    def exchange(self, code: int) -> int:
        """At a step boundary: if it is an exchange boundary, the flag agreed at the last one, then share ``code``.

        Returns that agreed flag (``_NONE`` between exchanges and at the first one).
        Unless it asks to stop, starts this exchange's asynchronous ``max`` all-reduce of
        ``code`` and of this rank's proposed interval; every rank counts the same
        boundaries and reads the same agreed interval, so the collectives match in order.
        """
        self._countdown -= 1
        if self._countdown > 0:
            return _NONE
        agreed, interval = self._agreed()
        if agreed != _NONE:
            return agreed  # every rank stops here: start nothing more
        import torch.distributed as dist

        flag = torch.tensor([code, -self._propose()], dtype=torch.int64)
        self._work = dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group, async_op=True)
        self._flag = flag
        self._countdown = self._interval = interval
        return _NONE

    def _propose(self) -> int:
        """Boundaries this rank would leave between exchanges: the target time over its step time."""
        now = time.perf_counter()
        last, self._last_exchange = self._last_exchange, now
        if last is None or self._target_s <= 0:
            return 1
        per_boundary = max((now - last) / self._interval, 1e-9)
        return max(1, min(_MAX_INTERVAL, int(self._target_s / per_boundary)))

    def _agreed(self) -> tuple[int, int]:
        """Wait for the outstanding all-reduce (normally finished already): the agreed flag and interval."""
        work, flag = self._work, self._flag
        if work is None or flag is None:
            return _NONE, 1
        self._work = self._flag = None
        work.wait()
        code, negative_interval = flag.tolist()  # a CPU tensor: no device sync
        return int(code), -int(negative_interval)

    def _exchange_now(self, code: int) -> int:
        """A ``max`` all-reduce of ``code`` at the end of a stage this rank finished, waited for.

        The peers finished the same loop and come here too, after the same end-of-fit
        hooks; one that failed in those hooks never does, so the wait is bounded
        (``_FINAL_WAIT``) and its failure only means no late signal to share.
        """
        import torch.distributed as dist

        flag = torch.tensor([code, 0], dtype=torch.int64)
        try:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group, async_op=True).wait(_FINAL_WAIT)
        except Exception:  # a peer failed after the loop: its own error ends the job
            return _NONE
        return int(flag[0])

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        code = _SIGTERM if signum == signal.SIGTERM else _SIGINT
        if self.received or self.acted:
            # The second signal, or one while the stage is already shutting down: now.
            self.aborted = True
            if code == _SIGTERM:
                raise SIGTERMException
            raise KeyboardInterrupt
        self.received = code
        trainer = self.trainer
        if code == _SIGTERM:
            trainer._received_sigterm = True
        trainer._signal_check = True
        # os.write, not print: a handler that prints while the main thread is inside
        # print on the same stream raises "reentrant call".
        rank = f"[rank {trainer.global_rank}] " if trainer.world_size > 1 else ""
        message = (
            f"fitkit: {rank}{_NAMES[code]} received; stopping after the current step (send it again to stop at once).\n"
        )
        try:
            os.write(2, message.encode())
        except OSError:
            pass


def at_boundary(trainer: Trainer) -> None:
    """At a step boundary: raise if a signal arrived (on any rank, under several processes).

    Called only while ``trainer._signal_check`` is set, so a step without a signal
    costs one attribute read on a single process; under several processes, a wait on
    the previous boundary's (finished) all-reduce and the start of a new one
    (:meth:`SignalGuard.exchange`): a signal takes effect one boundary later.
    """
    guard = trainer._signals
    if guard is None:
        return
    code = guard.received
    if guard.collective:
        code = guard.exchange(code)
    if code == _NONE:
        return
    guard.acted = True
    if code == _SIGTERM:
        trainer._received_sigterm = True  # every rank, also those that did not receive it
        raise SIGTERMException
    raise KeyboardInterrupt
