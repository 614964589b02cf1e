"""``ModelCheckpoint``: when to save, what to call the file, which files to keep.

It owns the *policy* (triggers, file names, top-k bookkeeping, ``last.ckpt``); what a
checkpoint holds and how it is written (atomically, on global rank zero) is
``trainer.save_checkpoint``'s. A file is deleted only after its replacement is
durable, only on global rank zero, and only if this callback wrote it. When a write
fails (disk full, read-only) the error propagates, no older file is deleted, and the
bookkeeping (``best_k_models``, ``best_model_path``, ``last_model_path``) still names
files that exist. At ``setup("fit")`` the temporary files of writes killed in an
earlier run (same host, dead pid) are removed; they are never taken for checkpoints.

When it saves (Lightning 2.x semantics, with one fix):

* ``every_n_epochs`` (the default, 1): at the end of a training epoch, after the
  validation that closes it, so the monitored value is this epoch's. With only
  mid-epoch validation (``val_check_interval`` < 1 or an int) it saves after each
  such validation instead.
* ``every_n_train_steps`` / ``train_time_interval``: at optimizer-step boundaries,
  in ``on_train_batch_end``. When the loop validates right after that batch, the
  save waits until that validation is done, so a monitored validation metric is
  never one validation behind the weights (Lightning bug #20185).
"""

from __future__ import annotations

import math
import os
import shutil
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch

from fitkit import checkpoint as ckpt_io
from fitkit.callbacks import _model_checkpoint_helpers as _h
from fitkit.callbacks.checkpoint import Checkpoint
from fitkit.utilities.exceptions import MisconfigurationError
from fitkit.utilities.rank_zero import rank_zero_print, rank_zero_warn

if TYPE_CHECKING:
    from fitkit.module import Module
    from fitkit.trainer.trainer import Trainer


class ModelCheckpoint(Checkpoint):
    """Save the model periodically, keep the ``save_top_k`` best by ``monitor``, and optionally ``last.ckpt``.

    Args:
        dirpath: folder for the files; default ``<logger.log_dir>/checkpoints`` with a
            logger, else ``<default_root_dir>/checkpoints``.
        filename: name template without extension, e.g. ``"{epoch}-{val_loss:.3f}"``
            (``epoch=3-val_loss=0.123.ckpt``); default ``"epoch={epoch}-step={step}"``.
        monitor: metric to rank checkpoints by (``None``: the newest is the best).
        verbose: print a line per decision.
        save_last: ``True`` also writes ``last.ckpt``; ``"link"`` makes it a symlink to
            the newest checkpoint when one was written at the same step (a copy where
            symlinks fail).
        save_top_k: ``-1`` keeps all, ``0`` none, ``k`` the k best.
        save_weights_only: save only the weights (such a file cannot resume training).
        mode: ``"min"`` or ``"max"``: which direction of ``monitor`` is better.
        auto_insert_metric_name: ``{val_loss}`` becomes ``val_loss=<value>``; a ``/``
            in the metric name becomes ``_`` in the inserted name.
        every_n_train_steps: save every N optimizer steps.
        train_time_interval: save at the first optimizer step after this much time.
        every_n_epochs: save every N epochs (1 when no trigger is given).
        save_on_train_epoch_end: ``True``: epoch saves at training epoch end even when
            validation runs mid-epoch; ``False``: only right after a validation;
            ``None``: decide from the validation schedule.
        enable_version_counter: add ``-v1``, ``-v2``... rather than overwrite a file
            this callback does not own.

    Example::

        >>> import fitkit
        >>> ckpt = ModelCheckpoint(monitor="val_loss", filename="{epoch}-{val_loss:.3f}", save_top_k=2)
        >>> trainer = fitkit.Trainer(max_epochs=5, callbacks=[ckpt])
        >>> # trainer.fit(model); ckpt.best_model_path, ckpt.best_model_score
    """

    CHECKPOINT_JOIN_CHAR = "-"
    CHECKPOINT_EQUALS_CHAR = "="
    CHECKPOINT_NAME_LAST = "last"
    FILE_EXTENSION = ".ckpt"
    STARTING_VERSION = 1

    def __init__(
        self,
        dirpath: str | os.PathLike[str] | None = None,
        filename: str | None = None,
        monitor: str | None = None,
        verbose: bool = False,
        save_last: bool | str | None = None,
        save_top_k: int = 1,
        save_weights_only: bool = False,
        mode: str = "min",
        auto_insert_metric_name: bool = True,
        every_n_train_steps: int | None = None,
        train_time_interval: timedelta | None = None,
        every_n_epochs: int | None = None,
        save_on_train_epoch_end: bool | None = None,
        enable_version_counter: bool = True,
    ) -> None:
        _h.check_args(locals())
        self.dirpath = os.path.abspath(os.path.expanduser(os.fspath(dirpath))) if dirpath is not None else None
        self.filename = filename
        self.monitor = monitor
        self.verbose = verbose
        self.save_last = save_last
        self.save_top_k = save_top_k
        self.save_weights_only = save_weights_only
        self.mode = mode
        self.auto_insert_metric_name = auto_insert_metric_name
        self._save_on_train_epoch_end = save_on_train_epoch_end
        self._enable_version_counter = enable_version_counter
        if every_n_train_steps is None and every_n_epochs is None and train_time_interval is None:
            every_n_epochs = 1
        self._every_n_train_steps = every_n_train_steps or 0
        self._every_n_epochs = every_n_epochs or 0
        self._train_time_interval = train_time_interval
        self._interval_s = train_time_interval.total_seconds() if train_time_interval is not None else 0.0
        self._step_triggers = bool(self._every_n_train_steps or train_time_interval is not None)

        self.best_k_models: dict[str, torch.Tensor] = {}
        self.kth_best_model_path = ""
        self.kth_value = torch.tensor(math.inf if mode == "min" else -math.inf)
        self.best_model_score: torch.Tensor | None = None
        self.best_model_path = ""
        self.last_model_path = ""
        self.current_score: torch.Tensor | None = None
        self._last_global_step_saved = 0  # as in Lightning: nothing is saved before the first step
        self._seen_step = -1
        self._last_time_checked = 0.0
        self._pending = False  # a step/time save waiting for the validation that may follow it
        self._validated_at_epoch_end = False
        self._validated = False  # has validation run in this fit?
        self._newest_topk = ("", -1)  # (path, global_step) of the newest top-k file, for save_last="link"
        self._pending_state: dict[str, Any] | None = None
        self._warned: set[str] = set()

    @property
    def state_key(self) -> str:
        settings = {
            "monitor": self.monitor,
            "mode": self.mode,
            "every_n_train_steps": self._every_n_train_steps,
            "every_n_epochs": self._every_n_epochs,
            "train_time_interval": self._train_time_interval,
        }
        return f"{type(self).__qualname__}{settings!r}"

    # -- hooks ---------------------------------------------------------------------------
    def setup(self, trainer: Trainer, module: Module, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = trainer.strategy.broadcast(_h.default_dirpath(trainer))
        if self._pending_state is not None:
            state, self._pending_state = self._pending_state, None
            self.load_state_dict(state)
        if stage == "fit" and trainer.is_global_zero:
            # A run killed mid-save leaves `.{name}.{host}.{pid}.*.tmp`; never a checkpoint, only clutter.
            for path in ckpt_io.remove_stale_temp_files(self.dirpath, self.FILE_EXTENSION):
                if self.verbose:
                    rank_zero_print(f"Removed {path!r}, left by a checkpoint write that was killed")

    def on_train_start(self, trainer: Trainer, module: Module) -> None:
        # Here rather than in setup: a resumed run has restored its bookkeeping by now.
        ours = self.best_k_models or self.best_model_path or self.last_model_path
        if self.save_top_k != 0 and not ours and self.dirpath and os.path.isdir(self.dirpath):
            if any(not (name.startswith(".") and name.endswith(".tmp")) for name in os.listdir(self.dirpath)):
                rank_zero_warn(f"Checkpoint directory {self.dirpath} exists and is not empty.")
        self._last_time_checked = time.monotonic()
        self._seen_step = trainer.global_step
        self._pending = self._validated_at_epoch_end = self._validated = False

    def on_train_batch_start(self, trainer: Trainer, module: Module, batch: Any, batch_idx: int) -> None:
        if self._pending:  # no validation came after the step that asked for a save
            self._pending = False
            self._save(trainer, strict=False)

    def _idle_hooks(self) -> frozenset[str]:
        return frozenset() if self._step_triggers else frozenset({"on_train_batch_end"})

    def on_train_batch_end(self, trainer: Trainer, module: Module, outputs: Any, batch: Any, batch_idx: int) -> None:
        if not self._step_triggers:
            return
        step = trainer.global_step
        if step == self._seen_step:  # inside an accumulation window, or a skipped batch
            return
        self._seen_step = step
        due = bool(self._every_n_train_steps) and step % self._every_n_train_steps == 0
        if self._train_time_interval is not None:
            now = time.monotonic()
            # One decision for all processes, or they would disagree on who saves.
            if trainer.strategy.broadcast(now - self._last_time_checked >= self._interval_s):
                self._last_time_checked = now
                due = True
        if not due or self._skip(trainer) or step == self._last_global_step_saved:
            return
        if _h.validation_follows(trainer, batch_idx):
            self._pending = True  # saved right after that validation, with its fresh metrics
        else:
            self._save(trainer, strict=False)

    def on_validation_end(self, trainer: Trainer, module: Module) -> None:
        if self._skip(trainer):
            return
        self._validated = True
        if trainer.epoch_end_validation:  # on_train_epoch_end saves, after the epoch's last hooks
            self._validated_at_epoch_end = True
            return
        due = self._pending or (self._save_on_train_epoch_end is not True and self._epoch_due(trainer))
        self._pending = False
        if due and trainer.global_step != self._last_global_step_saved:
            self._save(trainer, strict=True)

    def on_train_epoch_end(self, trainer: Trainer, module: Module) -> None:
        validated, self._validated_at_epoch_end = self._validated_at_epoch_end, False
        pending, self._pending = self._pending, False
        if self._skip(trainer) or trainer.global_step == self._last_global_step_saved:
            return
        if self._save_on_train_epoch_end is True:
            here = True
        elif self._save_on_train_epoch_end is False:
            here = validated
        else:
            here = validated or not _h.validation_runs(trainer)
        if pending or (here and self._epoch_due(trainer)):
            self._save(trainer, strict=True)
        elif here and self.save_last:
            self._save(trainer, strict=True, topk=False)

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "best_model_score": self.best_model_score,
            "best_model_path": self.best_model_path,
            "current_score": self.current_score,
            "dirpath": self.dirpath,
            "best_k_models": dict(self.best_k_models),
            "kth_best_model_path": self.kth_best_model_path,
            "kth_value": self.kth_value,
            "last_model_path": self.last_model_path,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.dirpath is None:  # resolved in setup(); apply the state then
            self._pending_state = dict(state_dict)
            return
        saved_dir = state_dict.get("dirpath", self.dirpath)
        if saved_dir == self.dirpath:
            self.best_model_score = _h.score(state_dict.get("best_model_score"))
            self.current_score = _h.score(state_dict.get("current_score"))
            self.best_k_models = {str(k): _h.as_tensor(v) for k, v in state_dict.get("best_k_models", {}).items()}
            self.kth_best_model_path = str(state_dict.get("kth_best_model_path", ""))
            kth = _h.score(state_dict.get("kth_value"))
            self.kth_value = self.kth_value if kth is None else kth
            self.last_model_path = str(state_dict.get("last_model_path", ""))
        else:
            rank_zero_warn(
                f"ModelCheckpoint's dirpath changed from {saved_dir!r} to {self.dirpath!r}: only best_model_path is "
                "restored; top-k bookkeeping starts afresh (no file in the old folder will be deleted)."
            )
        self.best_model_path = str(state_dict.get("best_model_path", ""))

    # -- file names ----------------------------------------------------------------------
    def format_checkpoint_name(
        self, metrics: dict[str, Any], filename: str | None = None, ver: int | None = None
    ) -> str:
        """The path for ``metrics`` (and version ``ver``) from ``filename`` or the callback's template.

        Example::

            >>> ModelCheckpoint(dirpath="/ckpts", filename="{epoch}-{val_loss:.2f}").format_checkpoint_name(
            ...     {"epoch": 3, "val_loss": 0.123456})
            '/ckpts/epoch=3-val_loss=0.12.ckpt'
        """
        template = filename if filename is not None else self.filename or "{epoch}-{step}"
        name, missing = _h.format_template(template, metrics, self.auto_insert_metric_name)
        for key in missing - self._warned:
            self._warned.add(key)
            rank_zero_warn(
                f"ModelCheckpoint: {key!r} in filename {template!r} is not a logged metric; it is written as 0."
            )
        if ver is not None:
            name = f"{name}{self.CHECKPOINT_JOIN_CHAR}v{ver}"
        name += self.FILE_EXTENSION
        return os.path.join(self.dirpath, name) if self.dirpath else name

    def _free_path(self, trainer: Trainer, metrics: dict[str, Any], filename: str | None, reusable: str) -> str:
        """The formatted path; with the version counter, ``-vN`` until no file but ``reusable`` is there."""
        path = self.format_checkpoint_name(metrics, filename)
        ver = self.STARTING_VERSION
        while self._enable_version_counter and os.path.lexists(path) and path != reusable:
            path = self.format_checkpoint_name(metrics, filename, ver)
            ver += 1
        return str(trainer.strategy.broadcast(path))  # rank zero's view of the folder decides

    # -- saving --------------------------------------------------------------------------
    def _skip(self, trainer: Trainer) -> bool:
        return bool(trainer.fast_dev_run) or trainer.state.fn != "fit" or trainer.sanity_checking

    def _epoch_due(self, trainer: Trainer) -> bool:
        return self._every_n_epochs >= 1 and (trainer.current_epoch + 1) % self._every_n_epochs == 0

    def _save(self, trainer: Trainer, strict: bool, topk: bool = True) -> None:
        """Top-k and last for the current state; delete replaced files only once all writes succeeded."""
        if self.dirpath is None:
            self.dirpath = trainer.strategy.broadcast(_h.default_dirpath(trainer))
        metrics = dict(trainer.callback_metrics)
        epoch, step = metrics.get("epoch"), metrics.get("step")
        metrics["epoch"] = epoch.int() if isinstance(epoch, torch.Tensor) else torch.tensor(trainer.current_epoch)
        metrics["step"] = step.int() if isinstance(step, torch.Tensor) else torch.tensor(trainer.global_step)
        self._last_global_step_saved = trainer.global_step
        replaced: list[str] = []
        if topk and self.save_top_k != 0:
            if self.monitor is None:
                self._save_newest(trainer, metrics, replaced)
            else:
                self._save_if_top_k(trainer, metrics, strict, replaced)
        if self.save_last:
            self._save_last(trainer, metrics, replaced)
        for path in replaced:
            self._remove(trainer, path)

    def _save_newest(self, trainer: Trainer, metrics: dict[str, Any], replaced: list[str]) -> None:
        previous = self.best_model_path
        # Keeping one file, the newest may replace the previous under the same name; keeping all, never.
        path = self._free_path(trainer, metrics, None, previous if self.save_top_k == 1 else "")
        self.best_model_path = path
        try:
            self._write(trainer, path)
        except BaseException:
            self.best_model_path = previous
            raise
        self._newest_topk = (path, trainer.global_step)
        if self.save_top_k == 1 and previous and previous != path:
            replaced.append(previous)

    def _save_if_top_k(self, trainer: Trainer, metrics: dict[str, Any], strict: bool, replaced: list[str]) -> None:
        assert self.monitor is not None
        if self.monitor not in metrics:
            message = (
                f"ModelCheckpoint(monitor={self.monitor!r}) found no metric {self.monitor!r}; logged metrics are "
                f"{sorted(metrics)}. Log it with `self.log({self.monitor!r}, value)`, or fix the name."
            )
            # An error once it cannot be "not logged yet": validation has run, or never will.
            if strict and (self._validated or not _h.validation_runs(trainer)):
                raise MisconfigurationError(message)
            if self.monitor not in self._warned:  # a save before the first validation: try again later
                self._warned.add(self.monitor)
                rank_zero_warn(message + " Skipping the top-k save for now.")
            return
        current = _h.as_tensor(metrics[self.monitor])
        if torch.isnan(current):  # NaN ranks worst
            current = torch.tensor(math.inf if self.mode == "min" else -math.inf)
        if not self._in_top_k(trainer, current):
            if self.verbose:
                rank_zero_print(
                    f"Epoch {trainer.current_epoch}, global step {trainer.global_step}: "
                    f"{self.monitor!r} was not in top {self.save_top_k}"
                )
            return
        before = (
            dict(self.best_k_models),
            self.kth_best_model_path,
            self.kth_value,
            self.best_model_path,
            self.best_model_score,
            self.current_score,
        )
        k = len(self.best_k_models) + 1 if self.save_top_k == -1 else self.save_top_k
        evicted = ""
        if len(self.best_k_models) == k:
            evicted = self.kth_best_model_path
            del self.best_k_models[evicted]
        path = self._free_path(trainer, metrics, None, evicted)
        self.current_score = current
        self.best_k_models[path] = current
        worst, best = (max, min) if self.mode == "min" else (min, max)
        if len(self.best_k_models) == k:
            self.kth_best_model_path = worst(self.best_k_models, key=lambda p: self.best_k_models[p].item())
            self.kth_value = self.best_k_models[self.kth_best_model_path]
        self.best_model_path = best(self.best_k_models, key=lambda p: self.best_k_models[p].item())
        self.best_model_score = self.best_k_models[self.best_model_path]
        if self.verbose:
            rank_zero_print(
                f"Epoch {trainer.current_epoch}, global step {trainer.global_step}: {self.monitor!r} "
                f"reached {current.item():0.5f} (best {self.best_model_score.item():0.5f}), "
                f"saving model to {path!r} as top {k}"
            )
        try:
            self._write(trainer, path)
        except BaseException:  # the bookkeeping goes back to the files that exist
            (
                self.best_k_models,
                self.kth_best_model_path,
                self.kth_value,
                self.best_model_path,
                self.best_model_score,
                self.current_score,
            ) = before
            raise
        self._newest_topk = (path, trainer.global_step)
        if evicted and evicted != path:
            replaced.append(evicted)

    def _in_top_k(self, trainer: Trainer, current: torch.Tensor) -> bool:
        if self.save_top_k == -1 or len(self.best_k_models) < self.save_top_k:
            return True
        kth = self.best_k_models[self.kth_best_model_path]
        better = bool(current < kth) if self.mode == "min" else bool(current > kth)
        return bool(trainer.strategy.broadcast(better))

    def _save_last(self, trainer: Trainer, metrics: dict[str, Any], replaced: list[str]) -> None:
        previous = self.last_model_path
        path = self._free_path(trainer, metrics, self.CHECKPOINT_NAME_LAST, previous)
        self.last_model_path = path
        newest, newest_step = self._newest_topk
        try:
            if self.save_last == "link" and newest and newest_step == trainer.global_step and newest != path:
                if trainer.is_global_zero:
                    _h.link(newest, path)
                trainer.strategy.barrier()
            else:
                self._write(trainer, path)
        except BaseException:
            self.last_model_path = previous
            raise
        if previous and previous != path:
            replaced.append(previous)

    def _write(self, trainer: Trainer, path: str) -> None:
        trainer.save_checkpoint(path, weights_only=self.save_weights_only)

    def _remove(self, trainer: Trainer, path: str) -> None:
        """Delete a file this callback wrote and no longer tracks (rank zero; never the resumed-from file)."""
        if not trainer.is_global_zero or not path or self.dirpath is None:
            return
        if path in self.best_k_models or path in (self.best_model_path, self.last_model_path):
            return
        resumed = getattr(trainer, "ckpt_path", None)
        absolute = os.path.abspath(path)
        if resumed is not None and os.path.abspath(os.fspath(resumed)) == absolute:
            return
        if os.path.commonpath([absolute, self.dirpath]) != self.dirpath:
            return
        try:
            if os.path.isdir(absolute):  # a sharded checkpoint (FSDP) is a folder
                shutil.rmtree(absolute)
            else:
                os.remove(absolute)
        except FileNotFoundError:
            pass
