"""Progress bars: the :class:`ProgressBar` base class and :class:`TQDMProgressBar`.

The Trainer adds a ``TQDMProgressBar`` when ``enable_progress_bar=True`` (the
default) and the user passed no ``ProgressBar`` of their own. This module owns what
the bars show and when they redraw; it does not own the metrics (``self.log`` with
``prog_bar=True`` puts them in ``trainer.progress_bar_metrics``).

Cost per batch: one integer increment and one comparison. A bar redraws when at least
``refresh_rate`` batches *and* ``refresh_interval_s`` seconds have passed since its last
draw. The clock is read a few times per interval, not per batch: after a read that was
too early, the next one waits for half the batches the measured batch rate says the
interval still needs. Reading the metrics (a host sync for device tensors) happens only
on a redraw. ``tqdm`` is imported when the first bar is drawn.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TYPE_CHECKING, Any

from fitkit.callbacks.callback import Callback
from fitkit.utilities.exceptions import MisconfigurationError, invalid

if TYPE_CHECKING:
    from fitkit.module import Module
    from fitkit.trainer.trainer import Trainer

_NEVER = math.inf


class ProgressBar(Callback):
    """Base class of progress bars; the Trainer adds none of its own when you pass one.

    Subclasses draw whatever they like from the hooks; this class holds the switch
    (:meth:`enable` / :meth:`disable`) and :meth:`get_metrics`, what a bar shows.

    Example::

        >>> import fitkit
        >>> from fitkit.callbacks import ProgressBar
        >>> class EpochPrinter(ProgressBar):
        ...     def on_train_epoch_end(self, trainer, module):
        ...         if self.is_enabled:
        ...             print(trainer.current_epoch, self.get_metrics(trainer, module))
        >>> trainer = fitkit.Trainer(max_epochs=1, callbacks=[EpochPrinter()], logger=False)
    """

    def __init__(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    @property
    def is_disabled(self) -> bool:
        return not self.is_enabled

    def disable(self) -> None:
        """Stop drawing (``setup`` calls this on every process but global rank zero)."""
        self._enabled = False

    def enable(self) -> None:
        """Draw again, from the next stage (epoch, validation, test or predict run) on."""
        self._enabled = True

    def setup(self, trainer: Trainer, module: Module, stage: str) -> None:
        if not trainer.is_global_zero:
            self.disable()

    def get_metrics(self, trainer: Trainer, module: Module) -> dict[str, int | float | str]:
        """What the bar shows beside the count: ``v_num`` (the logger's version) and the ``prog_bar`` metrics.

        Reading ``trainer.progress_bar_metrics`` turns device tensors into floats, a host
        sync: call this when the bar redraws, not per batch.
        """
        metrics: dict[str, int | float | str] = {}
        logger = trainer.logger
        version = getattr(logger, "version", None) if logger is not None else None
        if version is not None:
            metrics["v_num"] = version[-4:] if isinstance(version, str) else version
        metrics.update(trainer.progress_bar_metrics)
        return metrics


class _Bar:
    """One tqdm bar plus the counters the per-batch path touches (kept apart from tqdm's)."""

    __slots__ = ("dataloader_idx", "last_n", "last_time", "metrics", "n", "next", "tqdm")

    def __init__(self, metrics: bool) -> None:
        self.tqdm: Any = None
        self.metrics = metrics  # whether the postfix shows get_metrics() (the training bar only)
        self.n = 0
        self.next: float = _NEVER  # the count at which to look at the clock again
        self.last_time = -_NEVER  # when it was last drawn, and at which count
        self.last_n = 0
        self.dataloader_idx = -1


def _total(count: int | float) -> int | None:
    return None if count == math.inf else int(count)


class TQDMProgressBar(ProgressBar):
    """Train, validation (and sanity check), test and predict bars drawn with ``tqdm`` on stderr.

    Args:
        refresh_rate: redraw at most every this many batches; ``0`` disables the bar.
        process_position: shift the bars down this many pairs of lines (to stack the bars
            of several trainers run side by side).
        leave: keep each finished epoch's training bar on screen (``False``: one bar is
            reused across epochs).
        refresh_interval_s: redraw at most once per this many seconds of wall time, however
            small ``refresh_rate`` is; ``0`` redraws every ``refresh_rate`` batches.

    The training bar shows the epoch, ``v_num`` and the ``prog_bar`` metrics (validation
    metrics join it when validation ends); the evaluation bars show counts only. A bar
    always redraws when its epoch or loop ends, so the final count and metrics are
    exact. Loaders without ``__len__`` get a bar without a total.

    Example::

        >>> import fitkit
        >>> from fitkit.callbacks import TQDMProgressBar
        >>> trainer = fitkit.Trainer(max_epochs=3, callbacks=[TQDMProgressBar(refresh_rate=10)], logger=False)
    """

    def __init__(
        self,
        refresh_rate: int = 1,
        process_position: int = 0,
        leave: bool = False,
        refresh_interval_s: float = 0.1,
    ) -> None:
        super().__init__()
        for name, value in (("refresh_rate", refresh_rate), ("process_position", process_position)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise MisconfigurationError(invalid(name, value, "it must be a whole number >= 0", "an int >= 0"))
        if not isinstance(leave, bool):
            raise MisconfigurationError(invalid("leave", leave, "it must be a bool", "True or False"))
        if (
            isinstance(refresh_interval_s, bool)
            or not isinstance(refresh_interval_s, (int, float))
            or not refresh_interval_s >= 0
        ):
            raise MisconfigurationError(
                invalid("refresh_interval_s", refresh_interval_s, "it must be a number >= 0", "a float >= 0")
            )
        self.refresh_rate = refresh_rate
        self.process_position = process_position
        self.leave = leave
        self.refresh_interval_s = float(refresh_interval_s)
        self._now = time.monotonic  # an attribute so that tests can drive the clock
        self._train = _Bar(metrics=True)
        self._val = _Bar(metrics=False)
        self._test = _Bar(metrics=False)
        self._predict = _Bar(metrics=False)

    @property
    def is_enabled(self) -> bool:
        return self._enabled and self.refresh_rate > 0

    @property
    def train_progress_bar(self) -> Any:
        """The training bar's ``tqdm`` object while one is shown, else None."""
        return self._train.tqdm

    @property
    def val_progress_bar(self) -> Any:
        return self._val.tqdm

    @property
    def test_progress_bar(self) -> Any:
        return self._test.tqdm

    @property
    def predict_progress_bar(self) -> Any:
        return self._predict.tqdm

    def print(self, *args: Any, sep: str = " ", **kwargs: Any) -> None:
        """Print a line (to stdout, like ``print``) above the bars without breaking them."""
        bars = (self._val, self._test, self._predict, self._train)
        active = next((b.tqdm for b in bars if b.tqdm is not None), None)
        if active is None:
            print(*args, sep=sep, **kwargs)
        else:
            active.write(sep.join(map(str, args)), **kwargs)

    # -- drawing -------------------------------------------------------------------------------
    def _open(self, bar: _Bar, desc: str, total: int | float, position: int, leave: bool) -> None:
        """(Re)start ``bar`` at zero; create its tqdm if this bar is enabled."""
        self._close(bar)
        # Evaluation bars open on their first loader's count; _next_loader handles the rest.
        bar.n, bar.last_n, bar.dataloader_idx = 0, 0, 0
        if self.is_disabled:
            return
        from tqdm.auto import tqdm

        bar.tqdm = tqdm(
            desc=desc,
            total=_total(total),
            position=2 * self.process_position + position,
            leave=leave,
            dynamic_ncols=True,
            file=sys.stderr,
            smoothing=0,
        )
        bar.next = self.refresh_rate
        bar.last_time = self._now()  # creating the bar drew it: the next draw is one interval away

    def _reset(self, bar: _Bar, total: int | float, desc: str | None = None) -> None:
        """Restart an open bar at zero with a new total (the next loader, the next epoch)."""
        bar.n = bar.last_n = 0
        if bar.tqdm is not None:
            if desc is not None:
                bar.tqdm.set_description(desc, refresh=False)
            bar.tqdm.total = _total(total)  # tqdm.reset(total=None) would keep the old total
            bar.tqdm.reset()  # draws the bar at zero
            bar.next = self.refresh_rate
            bar.last_time = self._now()

    def _tick(self, trainer: Trainer, bar: _Bar) -> None:
        """Reached every ``refresh_rate`` batches: redraw if ``refresh_interval_s`` passed too."""
        if bar.tqdm is None or not self._enabled:
            bar.next = _NEVER
            return
        now = self._now()
        elapsed = now - bar.last_time
        if elapsed >= self.refresh_interval_s:
            self._draw(trainer, bar, now)
            bar.next = bar.n + self.refresh_rate
            return
        # Too early. Batches arrive at about (n - last_n) / elapsed per second: look again after
        # half the batches that should fill the interval, so the clock is read a few times per
        # interval rather than once per batch (halving, so a slowdown is noticed soon).
        wait = (self.refresh_interval_s - elapsed) * (bar.n - bar.last_n) / elapsed / 2 if elapsed > 0 else 0
        bar.next = bar.n + max(self.refresh_rate, int(wait))

    def _draw(self, trainer: Trainer, bar: _Bar, now: float | None = None) -> None:
        if bar.tqdm is None or not self._enabled:
            return
        bar.last_time = self._now() if now is None else now
        bar.last_n = bar.tqdm.n = bar.n
        if bar.metrics and trainer.module is not None:
            bar.tqdm.set_postfix(self.get_metrics(trainer, trainer.module), refresh=False)
        bar.tqdm.refresh()

    def _close(self, bar: _Bar) -> None:
        if bar.tqdm is not None:
            bar.tqdm.close()
            bar.tqdm = None
        bar.next = _NEVER

    # -- training ------------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: Trainer, module: Module) -> None:
        bar, desc = self._train, f"Epoch {trainer.current_epoch}"
        # With leave=True a new bar per epoch (the finished one stays on screen), else one reused bar.
        if bar.tqdm is None or self.leave:
            self._open(bar, desc, trainer.num_training_batches, 0, leave=True)
        else:
            self._reset(bar, trainer.num_training_batches, desc)

    def on_train_batch_end(self, trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int) -> None:
        # The whole per-batch cost of the bar: an increment and a comparison.
        bar = self._train
        bar.n += 1
        if bar.n >= bar.next:
            self._tick(trainer, bar)

    def on_train_epoch_end(self, trainer: Trainer, module: Module) -> None:
        self._draw(trainer, self._train)

    def on_train_end(self, trainer: Trainer, module: Module) -> None:
        self._close(self._train)

    # -- validation (and the sanity check) -----------------------------------------------------
    def on_validation_start(self, trainer: Trainer, module: Module) -> None:
        sanity = trainer.sanity_checking
        in_fit = sanity or self._train.tqdm is not None
        desc = "Sanity Checking" if sanity else "Validation"
        counts = trainer.num_sanity_val_batches if sanity else trainer.num_val_batches
        self._open_eval(self._val, desc, counts, 1 if in_fit else 0, leave=not in_fit)

    def on_validation_batch_end(
        self, trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        bar = self._val
        if dataloader_idx != bar.dataloader_idx:
            counts = trainer.num_sanity_val_batches if trainer.sanity_checking else trainer.num_val_batches
            desc = "Sanity Checking" if trainer.sanity_checking else "Validation"
            self._next_loader(trainer, bar, counts, dataloader_idx, desc)
        bar.n += 1
        if bar.n >= bar.next:
            self._tick(trainer, bar)

    def on_validation_end(self, trainer: Trainer, module: Module) -> None:
        self._close_eval(trainer, self._val)
        if self._train.tqdm is not None:  # the validation metrics now join the training bar's
            self._draw(trainer, self._train)

    # -- test and predict ----------------------------------------------------------------------
    def on_test_start(self, trainer: Trainer, module: Module) -> None:
        self._open_eval(self._test, "Testing", trainer.num_test_batches, 0, leave=True)

    def on_test_batch_end(
        self, trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        bar = self._test
        if dataloader_idx != bar.dataloader_idx:
            self._next_loader(trainer, bar, trainer.num_test_batches, dataloader_idx, "Testing")
        bar.n += 1
        if bar.n >= bar.next:
            self._tick(trainer, bar)

    def on_test_end(self, trainer: Trainer, module: Module) -> None:
        self._close_eval(trainer, self._test)

    def on_predict_start(self, trainer: Trainer, module: Module) -> None:
        self._open_eval(self._predict, "Predicting", trainer.num_predict_batches, 0, leave=True)

    def on_predict_batch_end(
        self, trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        bar = self._predict
        if dataloader_idx != bar.dataloader_idx:
            self._next_loader(trainer, bar, trainer.num_predict_batches, dataloader_idx, "Predicting")
        bar.n += 1
        if bar.n >= bar.next:
            self._tick(trainer, bar)

    def on_predict_end(self, trainer: Trainer, module: Module) -> None:
        self._close_eval(trainer, self._predict)

    # -- shared by the evaluation bars ---------------------------------------------------------
    def _open_eval(self, bar: _Bar, desc: str, counts: list[int | float], position: int, leave: bool) -> None:
        if len(counts) > 1:
            desc = f"{desc} DataLoader 0"
        self._open(bar, desc, counts[0] if counts else 0, position, leave)

    def _next_loader(
        self, trainer: Trainer, bar: _Bar, counts: list[int | float], dataloader_idx: int, desc: str
    ) -> None:
        """A new loader starts: finish the previous one's count on screen, restart at zero."""
        self._draw(trainer, bar)
        bar.dataloader_idx = dataloader_idx
        total = counts[dataloader_idx] if dataloader_idx < len(counts) else math.inf
        self._reset(bar, total, f"{desc} DataLoader {dataloader_idx}" if len(counts) > 1 else None)

    def _close_eval(self, trainer: Trainer, bar: _Bar) -> None:
        self._draw(trainer, bar)
        self._close(bar)

    def _close_all(self) -> None:
        for bar in (self._val, self._test, self._predict, self._train):
            self._close(bar)

    def on_exception(self, trainer: Trainer, module: Module, exception: BaseException) -> None:
        self._close_all()

    def teardown(self, trainer: Trainer, module: Module, stage: str) -> None:
        self._close_all()
