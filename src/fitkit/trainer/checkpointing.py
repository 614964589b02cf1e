"""What goes into a checkpoint and how a run is restored from one.

``dump`` builds the flat checkpoint dict from the live objects; ``restore_*``
functions put it back in the order ``fit`` needs: the module, datamodule and
callbacks before optimizers exist, then optimizers, schedulers, precision, progress
and logged metrics, and at the start of the first resumed epoch the data order, the
RNG streams and what the saved run still had to do there (see :class:`ResumePoint`).
The file format itself (atomic write, safe load, version) is ``fitkit.checkpoint``'s.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from fitkit import checkpoint as ckpt_io
from fitkit.utilities import rng
from fitkit.utilities.exceptions import (
    FitkitError,
    FitkitRuntimeError,
    FitkitTypeError,
    MisconfigurationError,
    invalid,
)
from fitkit.utilities.rank_zero import rank_zero_warn

if TYPE_CHECKING:
    from fitkit.trainer.trainer import Trainer


@dataclass
class ResumePoint:
    """Where the first resumed epoch starts: batches to skip and the RNG states to replay.

    Two flags say what the saved run still had to do at the save point, so the resumed
    run does exactly that and nothing twice (a checkpoint without them resumes as before):

    - ``validation_due``: saved after a training batch (``on_train_batch_end``) that a
      mid-epoch validation follows, before that validation ran: run it first.
    - ``epoch_end_hook_ran``: saved in ``on_train_epoch_end``: the epoch's batches, its
      end validation and that hook are done; only the rest of the epoch end is left
      (epoch schedulers if ``step_epoch_schedulers``, checkpoint callbacks, loggers).
    """

    epoch_batches: int
    epoch_rng: dict[str, Any] | None
    rng_now: dict[str, Any]
    validation_due: bool = False
    epoch_end_hook_ran: bool = False
    step_epoch_schedulers: bool = True


def _scheduler_state(scheduler: Any) -> dict[str, Any]:
    # Some schedulers keep functions in their state (LambdaLR's lambdas, older OneCycleLR's
    # anneal function); those are rebuilt by the constructor, so they stay out of the file.
    return {k: v for k, v in scheduler.state_dict().items() if not callable(v)}


def dump(trainer: Trainer, weights_only: bool = False) -> dict[str, Any]:
    """The checkpoint dict for ``trainer``'s current state (plain data only)."""
    module = trainer.module
    assert module is not None
    progress = trainer.progress
    strategy = trainer.strategy
    epoch_finished = trainer._epoch_finished
    checkpoint: dict[str, Any] = {
        **ckpt_io.header(),
        "epoch": progress.current_epoch,
        "global_step": progress.global_step,
        "state_dict": trainer.strategy.module_state_dict(module),
        "hyper_parameters": dict(module.hparams),
    }
    if trainer.datamodule is not None:
        checkpoint["datamodule"] = trainer.datamodule.state_dict()
        checkpoint["datamodule_hyper_parameters"] = dict(trainer.datamodule.hparams)
    if not weights_only:
        progress_state = progress.state_dict()
        if epoch_finished:  # saved after everything of this epoch: resume at the next one
            progress_state["current_epoch"] += 1
            progress_state["epoch_batches"] = 0
        if trainer.accumulate_grad_batches > 1 and trainer._window_has_grads:
            rank_zero_warn(
                "Checkpoint saved inside a gradient-accumulation window: the window's gradients are not saved, "
                "so a run resumed from it differs from the uninterrupted one. Save at optimizer steps instead."
            )
        checkpoint.update(
            {
                "optimizer_states": [strategy.optimizer_state_dict(opt) for opt in trainer._optimization.optimizers],
                "lr_schedulers": [_scheduler_state(c.scheduler) for c in trainer._optimization.schedulers],
                "precision": trainer.strategy.precision.state_dict(),
                "progress": progress_state,
                "metrics": trainer._results.state_dict(),
                "loops": {
                    "epoch_rng": None if epoch_finished else trainer._epoch_rng,
                    "rng": rng.capture(trainer.train_dataloader, trainer.strategy),
                    **_pending_work(trainer, epoch_finished),
                },
                "callbacks": {},
            }
        )
        for cb in trainer.callbacks:
            key = cb.state_key
            if key in checkpoint["callbacks"]:
                raise MisconfigurationError(
                    invalid(
                        "callbacks",
                        type(cb).__name__,
                        f"two callbacks share the state_key {key!r}",
                        "callbacks with distinct state_key values (override `state_key`)",
                    )
                )
            checkpoint["callbacks"][key] = cb.state_dict()
    trainer._call("on_save_checkpoint", checkpoint)
    ckpt_io.check_plain(checkpoint)
    return checkpoint


def _pending_work(trainer: Trainer, epoch_finished: bool) -> dict[str, bool]:
    """What the fit loop still had to do at the save point (see :class:`ResumePoint`)."""
    from fitkit.trainer.fit_loop import validation_due

    schedulers = trainer._epoch_end_schedulers  # None outside on_train_epoch_end
    in_hook = schedulers is not None and not epoch_finished
    return {
        "validation_due": not in_hook and not epoch_finished and validation_due(trainer),
        "epoch_end_hook_ran": in_hook,
        "step_epoch_schedulers": bool(schedulers) if in_hook else True,
    }


def resolve_path(trainer: Trainer, ckpt_path: str | os.PathLike[str]) -> str:
    """``"best"``, ``"last"`` or a path -> a path."""
    if not isinstance(ckpt_path, (str, os.PathLike)):
        raise FitkitTypeError(
            invalid("ckpt_path", ckpt_path, "it is not a path", "a str or os.PathLike path, 'best' or 'last'")
        )
    if ckpt_path in ("best", "last"):
        from fitkit.callbacks.checkpoint import Checkpoint

        holders = [c for c in trainer.callbacks if isinstance(c, Checkpoint)]
        if not holders:
            raise MisconfigurationError(
                invalid(
                    "ckpt_path",
                    ckpt_path,
                    "this Trainer has no ModelCheckpoint callback to ask for it "
                    "(enable_checkpointing=False, or none in `callbacks`)",
                    "a checkpoint file's path, or a Trainer with a ModelCheckpoint",
                )
            )
        attr = "best_model_path" if ckpt_path == "best" else "last_model_path"
        for cb in holders:
            path = getattr(cb, attr, "") or ""
            if not path and ckpt_path == "last":
                path = getattr(cb, "best_model_path", "") or ""  # no save_last: the newest best will do
            if path:
                return str(path)
        if ckpt_path == "last":  # a new Trainer: the newest file in an explicit dirpath
            for cb in holders:
                newest = _newest_checkpoint(getattr(cb, "dirpath", None))
                if newest:
                    return newest
        raise MisconfigurationError(
            invalid(
                "ckpt_path",
                ckpt_path,
                f"no checkpoint callback has a {attr} yet",
                "a path; 'best'/'last' once a ModelCheckpoint of this Trainer saved something; or 'last' "
                "with a ModelCheckpoint(dirpath=...) whose folder holds .ckpt files",
            )
        )
    return os.fspath(ckpt_path)


def load_module_state(trainer: Trainer, checkpoint: Mapping[str, Any], strict: bool = True) -> None:
    """Weights (and the datamodule's state): enough for validate/test/predict."""
    module = trainer.module
    assert module is not None
    trainer._call("on_load_checkpoint", checkpoint)
    load_weights(trainer.strategy.load_module_state_dict, module, checkpoint, strict, str(trainer.ckpt_path))
    if trainer.datamodule is not None and "datamodule" in checkpoint:
        trainer.datamodule.load_state_dict(checkpoint["datamodule"])


def load_weights(
    load: Callable[..., Any], module: nn.Module, checkpoint: Mapping[str, Any], strict: bool, path: str
) -> None:
    """``load(module, checkpoint["state_dict"], strict=strict)``; a mismatch names the keys.

    torch's own error lists only the keys of one kind at a time and ends deep in
    ``nn.Module``; this one names the file, the missing keys, the unexpected ones and
    any shape differences. The comparison runs only on the error path.
    """
    state = checkpoint.get("state_dict")
    if not isinstance(state, Mapping):
        raise FitkitRuntimeError(
            invalid(
                "ckpt_path",
                path,
                f"its 'state_dict' entry is {type(state).__name__}, not the model's weights",
                "a checkpoint written by trainer.save_checkpoint() or ModelCheckpoint",
            )
        )
    try:
        load(module, state, strict=strict)
    except RuntimeError as err:
        message = None if isinstance(err, FitkitError) else _mismatch(module, state, path)
        if message is None:  # not a key or shape mismatch (say, out of memory): torch's error as is
            raise
        raise FitkitRuntimeError(message) from err


def _mismatch(module: nn.Module, state: Mapping[str, Any], path: str) -> str | None:
    from fitkit.utilities.compile import clean_key

    ours = {clean_key(k): v for k, v in module.state_dict().items()}
    theirs = {clean_key(str(k)): v for k, v in state.items()}
    missing = [k for k in ours if k not in theirs]
    unexpected = [k for k in theirs if k not in ours]
    shapes = [
        f"{k}: {tuple(v.shape)} in the file, {tuple(ours[k].shape)} in the model"
        for k, v in theirs.items()
        if k in ours and isinstance(v, torch.Tensor) and isinstance(ours[k], torch.Tensor) and v.shape != ours[k].shape
    ]
    if not (missing or unexpected or shapes):
        return None
    parts = [f"missing keys {_few(missing)}", f"unexpected keys {_few(unexpected)}"]
    if shapes:
        parts.append(f"different shapes {_few(shapes)}")
    return invalid(
        "ckpt_path",
        path,
        f"its weights do not fit {type(module).__name__}: " + "; ".join(parts),
        "a checkpoint of this architecture, or strict=False to load only the keys that match (shapes must still agree)",
    )


def _few(items: list[str], limit: int = 8) -> str:
    shown = repr(items[:limit])
    return shown if len(items) <= limit else f"{shown[:-1]}, ... ({len(items) - limit} more)]"


def restore_callbacks(trainer: Trainer, checkpoint: Mapping[str, Any]) -> None:
    states = checkpoint.get("callbacks", {})
    for cb in trainer.callbacks:
        if cb.state_key in states:
            cb.load_state_dict(states[cb.state_key])


def restore_training_state(trainer: Trainer, checkpoint: Mapping[str, Any]) -> None:
    """Optimizers, schedulers, precision, progress, metrics and the resume point."""
    if "optimizer_states" not in checkpoint:
        raise MisconfigurationError(
            invalid(
                "ckpt_path",
                "a weights-only checkpoint",
                "it has no optimizer or loop state to resume from",
                "a full checkpoint (save_weights_only=False)",
            )
        )
    plan = trainer._optimization
    saved_opts, saved_scheds = checkpoint["optimizer_states"], checkpoint["lr_schedulers"]
    if len(saved_opts) != len(plan.optimizers) or len(saved_scheds) != len(plan.schedulers):
        raise MisconfigurationError(
            invalid(
                "ckpt_path",
                f"{len(saved_opts)} optimizers / {len(saved_scheds)} schedulers",
                "configure_optimizers() now returns a different number",
                f"{len(plan.optimizers)} optimizers / {len(plan.schedulers)} schedulers, as when it was saved",
            )
        )
    for opt, state in zip(plan.optimizers, saved_opts, strict=True):
        trainer.strategy.load_optimizer_state_dict(opt, state)
    for config, state in zip(plan.schedulers, saved_scheds, strict=True):
        config.scheduler.load_state_dict(state)
    trainer.strategy.precision.load_state_dict(checkpoint.get("precision", {}))
    trainer.progress.load_state_dict(checkpoint["progress"])
    if trainer.progress.global_step > 0:
        # The optimizers stepped in the run this one continues: a scheduler stepping first
        # here (a resume at an epoch's last batch) is in order, so torch must not warn
        # that it "skips the first value of the schedule". torch >= 2.4 reads _opt_called,
        # older releases _step_count.
        for opt in plan.optimizers:
            opt._opt_called = True  # type: ignore[attr-defined]
            opt._step_count = max(getattr(opt, "_step_count", 0), 1)  # type: ignore[attr-defined]
    trainer._results.load_state_dict(checkpoint.get("metrics", {}))
    loops = checkpoint.get("loops", {})
    # Missing keys (checkpoints from before fitkit saved them) mean: nothing pending.
    validation_due = bool(loops.get("validation_due", False))
    trainer._resume_point = ResumePoint(
        epoch_batches=trainer.progress.epoch_batches,
        epoch_rng=loops.get("epoch_rng"),
        rng_now=loops.get("rng", {}),
        validation_due=validation_due,
        epoch_end_hook_ran=bool(loops.get("epoch_end_hook_ran", False)),
        step_epoch_schedulers=bool(loops.get("step_epoch_schedulers", True)),
    )
    # A validation due at the saved batch either ran before the save or runs first on
    # resume; either way a save made before the next batch must not call it due again.
    trainer._last_validation_batches = -1 if validation_due else trainer.progress.total_batches


def _newest_checkpoint(dirpath: str | None) -> str | None:
    if not dirpath or not os.path.isdir(dirpath):
        return None
    files = [os.path.join(dirpath, f) for f in os.listdir(dirpath) if f.endswith(".ckpt")]
    return max(files, key=os.path.getmtime) if files else None
