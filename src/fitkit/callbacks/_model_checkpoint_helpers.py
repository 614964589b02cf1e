"""The parts of ``ModelCheckpoint`` that hold no callback state.

Argument checks, file-name templates, score tensors, the default folder, when the
fit loop validates, and an atomic symlink. Kept apart so ``model_checkpoint.py``
reads as the policy: when to save and which files to keep.
"""

from __future__ import annotations

import os
import re
import shutil
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch

from fitkit import checkpoint as ckpt_io
from fitkit.utilities.exceptions import FitkitTypeError, MisconfigurationError, invalid

if TYPE_CHECKING:
    from fitkit.trainer.trainer import Trainer

_FIELD = re.compile(r"(\{.*?)[:}]")


def format_template(template: str, metrics: dict[str, Any], auto_insert: bool) -> tuple[str, set[str]]:
    """Fill ``template``'s ``{name[:spec]}`` fields from ``metrics``; return the name and the names not found.

    With ``auto_insert``, ``{val_loss:.2f}`` becomes ``val_loss=0.12`` (a ``/`` in the
    metric name becomes ``_`` in the inserted name, so it makes no folder). Missing
    metrics are written as 0, as in Lightning.

    Example::

        >>> format_template("{epoch}-{val/acc:.2f}", {"epoch": 3, "val/acc": torch.tensor(0.9)}, True)
        ('epoch=3-val_acc=0.90', set())
    """
    values = {k: v.item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v for k, v in metrics.items()}
    missing = set()
    # Longest first, so that "{epoch" does not eat the start of "{epoch_time".
    for group in sorted(set(_FIELD.findall(template)), key=len, reverse=True):
        name = group[1:]
        field = "{0[" + name + "]"
        template = template.replace(group, f"{name.replace('/', '_')}={field}" if auto_insert else field)
        if name not in values:
            missing.add(name)
            values[name] = 0
    return template.format(values), missing


def as_tensor(value: Any) -> torch.Tensor:
    tensor = torch.as_tensor(value).detach().cpu()
    return tensor if tensor.is_floating_point() else tensor.double()


def score(value: Any) -> torch.Tensor | None:
    return None if value is None else as_tensor(value)


def default_dirpath(trainer: Trainer) -> str:
    log_dir = trainer.loggers[0].log_dir if trainer.loggers else None
    root = log_dir if log_dir is not None else trainer.default_root_dir
    return os.path.abspath(os.path.join(os.fspath(root), "checkpoints"))


def validation_runs(trainer: Trainer) -> bool:
    """Does this fit validate at all (a loader with batches and a ``validation_step``)?"""
    from fitkit.module import Module

    module = trainer.module
    overridden = module is not None and type(module).validation_step is not Module.validation_step
    return overridden and any(trainer.num_val_batches)


def validation_follows(trainer: Trainer, batch_idx: int) -> bool:
    """Will the fit loop validate right after this training batch (the schedule of ``fit_loop``)?"""
    every_n_epochs = trainer.check_val_every_n_epoch
    if not validation_runs(trainer) or (every_n_epochs is not None and (trainer.current_epoch + 1) % every_n_epochs):
        return False
    vci = trainer.val_check_interval
    if isinstance(vci, int) or vci < 1.0:
        every = vci if isinstance(vci, int) else max(1, int(trainer.num_training_batches * vci))
        count = trainer.progress.total_batches if every_n_epochs is None else batch_idx + 1
        return count % every == 0
    # Validation at epoch end: after the epoch's last batch, or the step that reaches max_steps.
    return batch_idx + 1 >= trainer.num_training_batches or 0 <= trainer.max_steps <= trainer.global_step


def link(target: str, linkpath: str) -> None:
    """Point ``linkpath`` at ``target`` atomically; copy (also atomically) where symlinks fail.

    A failure raises :class:`fitkit.checkpoint.CheckpointWriteError` (as ``atomic_save``
    does) and leaves ``linkpath`` as it was.
    """
    folder = os.path.dirname(linkpath)
    # Named like atomic_save's temporary files, so a killed run's leftover is cleaned up the same way.
    tmp = os.path.join(folder, ckpt_io.temp_prefix(os.path.basename(linkpath)) + "link.tmp")
    try:
        if os.path.lexists(tmp):
            os.remove(tmp)
        try:
            os.symlink(os.path.relpath(target, folder), tmp)
        except OSError:  # e.g. Windows without the privilege: fall back to a copy
            shutil.copyfile(target, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, linkpath)
    except BaseException as err:
        if os.path.lexists(tmp):
            try:
                os.remove(tmp)
            except OSError:
                pass
        if isinstance(err, OSError) and not isinstance(err, ckpt_io.CheckpointWriteError):
            raise ckpt_io.write_error(linkpath, err) from err
        raise


def check_args(args: dict[str, Any]) -> None:
    def fail(name: str, why: str, expected: str, error: type[Exception] = MisconfigurationError) -> None:
        raise error(invalid(name, args[name], why, expected))

    def is_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool)

    if args["dirpath"] is not None and not isinstance(args["dirpath"], (str, os.PathLike)):
        fail("dirpath", "it is not a path", "a str, a pathlib.Path or None", FitkitTypeError)
    for name in ("filename", "monitor"):
        if args[name] is not None and not isinstance(args[name], str):
            fail(name, "it is not a str", "a str or None", FitkitTypeError)
    if not (args["save_last"] is None or isinstance(args["save_last"], bool) or args["save_last"] == "link"):
        fail("save_last", "it is not one of the choices", "None, False, True or 'link'")
    if not is_int(args["save_top_k"]) or args["save_top_k"] < -1:
        fail("save_top_k", "it must be an int >= -1", "-1 (keep all), 0 (none) or k >= 1 (the k best)")
    if args["mode"] not in ("min", "max"):
        fail("mode", "it says which direction of the monitored metric is better", "'min' or 'max'")
    if args["monitor"] is None and args["save_top_k"] not in (-1, 0, 1):
        fail(
            "save_top_k",
            "with monitor=None there is no metric to rank checkpoints by",
            "-1, 0 or 1 with monitor=None, or a `monitor`",
        )
    for name in ("every_n_train_steps", "every_n_epochs"):
        if args[name] is not None and (not is_int(args[name]) or args[name] < 0):
            fail(name, "it must be an int >= 0", "an int >= 0 or None")
    interval = args["train_time_interval"]
    if interval is not None and (not isinstance(interval, timedelta) or interval.total_seconds() <= 0):
        fail("train_time_interval", "it is not a positive duration", "a datetime.timedelta > 0 or None")
    given = [n for n in ("every_n_train_steps", "every_n_epochs", "train_time_interval") if args[n]]
    if len(given) > 1:
        fail(
            given[1],
            f"it cannot be combined with {given[0]}={args[given[0]]!r}",
            "one of every_n_train_steps, every_n_epochs and train_time_interval",
        )
    for name in ("verbose", "save_weights_only", "auto_insert_metric_name", "enable_version_counter"):
        if not isinstance(args[name], bool):
            fail(name, "it must be a bool", "True or False", FitkitTypeError)
    if not (args["save_on_train_epoch_end"] is None or isinstance(args["save_on_train_epoch_end"], bool)):
        fail("save_on_train_epoch_end", "it must be a bool or None", "True, False or None", FitkitTypeError)
