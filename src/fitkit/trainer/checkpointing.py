"""What goes into a checkpoint and how a run is restored from one.

``dump`` builds the flat checkpoint dict from the live objects; ``restore_*``
functions put it back in the order ``fit`` needs: the module, datamodule and
callbacks before optimizers exist, then optimizers, schedulers, precision, progress
and logged metrics, and at the start of the first resumed epoch the data order and
RNG streams (see :class:`ResumePoint`). The file format itself (atomic write, safe
load, version) is ``fitkit.checkpoint``'s.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fitkit import checkpoint as ckpt_io
from fitkit.utilities import rng
from fitkit.utilities.exceptions import MisconfigurationError, invalid
from fitkit.utilities.rank_zero import rank_zero_warn

if TYPE_CHECKING:
    from fitkit.trainer.trainer import Trainer


@dataclass
class ResumePoint:
    """Where the first resumed epoch starts: batches to skip and the RNG states to replay."""

    epoch_batches: int
    epoch_rng: dict[str, Any] | None
    rng_now: dict[str, Any]


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
                    "rng": rng.capture(trainer.train_dataloader),
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


def resolve_path(trainer: Trainer, ckpt_path: str | os.PathLike[str]) -> str:
    """``"best"``, ``"last"`` or a path -> a path."""
    if ckpt_path in ("best", "last"):
        from fitkit.callbacks.checkpoint import Checkpoint

        holders = [c for c in trainer.callbacks if isinstance(c, Checkpoint)]
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
    trainer.strategy.load_module_state_dict(module, checkpoint["state_dict"], strict=strict)
    if trainer.datamodule is not None and "datamodule" in checkpoint:
        trainer.datamodule.load_state_dict(checkpoint["datamodule"])


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
    trainer._results.load_state_dict(checkpoint.get("metrics", {}))
    loops = checkpoint.get("loops", {})
    trainer._resume_point = ResumePoint(
        epoch_batches=trainer.progress.epoch_batches,
        epoch_rng=loops.get("epoch_rng"),
        rng_now=loops.get("rng", {}),
    )


def _newest_checkpoint(dirpath: str | None) -> str | None:
    if not dirpath or not os.path.isdir(dirpath):
        return None
    files = [os.path.join(dirpath, f) for f in os.listdir(dirpath) if f.endswith(".ckpt")]
    return max(files, key=os.path.getmtime) if files else None
