"""The fit loop: epochs, training batches, the automatic step, when to validate, when to stop.

Read :func:`_train_epoch` top to bottom to follow one batch from the loader to
``training_step`` and the optimizer. Everything that does not change per batch is
worked out before the loop (which hooks are overridden, whether to clip, which
optimizer), so a step costs little more than the user's own code.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from fitkit.module import Module
from fitkit.trainer import checkpointing, data, nonfinite, signals
from fitkit.trainer.eval_loop import run_validation
from fitkit.trainer.hooks import CHECKPOINT_EPOCH_END, overrides
from fitkit.trainer.optimization import needs_closure
from fitkit.trainer.state import RunningStage
from fitkit.utilities import rng
from fitkit.utilities.exceptions import FitkitTypeError, MisconfigurationError, invalid

if TYPE_CHECKING:
    from fitkit.trainer.trainer import Trainer

_NULL_CONTEXT = contextlib.nullcontext()

# The order hooks fire in during fit; `trainer.print_loop()` prints who runs at each.
FIT_HOOK_ORDER = (
    "prepare_data",
    "setup",
    "on_fit_start",
    "on_sanity_check_start",
    "on_validation_start",
    "on_validation_epoch_start",
    "on_validation_batch_start",
    "on_validation_batch_end",
    "on_validation_epoch_end",
    "on_validation_end",
    "on_sanity_check_end",
    "on_train_start",
    "on_train_epoch_start",
    "on_train_batch_start",
    "on_before_backward",
    "on_after_backward",
    "on_before_optimizer_step",
    "on_before_zero_grad",
    "on_train_batch_end",
    "on_train_epoch_end",
    CHECKPOINT_EPOCH_END,
    "on_train_end",
    "on_fit_end",
    "teardown",
)


def run_fit(trainer: Trainer, train_dataloaders: Any, val_dataloaders: Any) -> None:
    module = trainer.module
    assert module is not None
    _setup_loaders(trainer, module, train_dataloaders, val_dataloaders)
    trainer._configure_optimizers(module)
    if trainer._pending_checkpoint is not None:
        checkpoint, trainer._pending_checkpoint = trainer._pending_checkpoint, None
        checkpointing.restore_training_state(trainer, checkpoint)
    if not module.automatic_optimization:
        if trainer.accumulate_grad_batches != 1:
            raise MisconfigurationError(
                invalid(
                    "accumulate_grad_batches",
                    trainer.accumulate_grad_batches,
                    "manual optimization accumulates however training_step says",
                    "1 with automatic_optimization=False",
                )
            )
        if trainer.gradient_clip_val:
            raise MisconfigurationError(
                invalid(
                    "gradient_clip_val",
                    trainer.gradient_clip_val,
                    "manual optimization clips in training_step (call self.clip_gradients)",
                    "None with automatic_optimization=False",
                )
            )
    for opt in trainer._optimization.optimizers:
        opt.zero_grad(set_to_none=True)
    trainer.progress.epoch_batches = 0
    trainer._skipped_nonfinite = 0
    trainer._loss_check = nonfinite.checker(trainer, module.automatic_optimization)
    for lg in trainer.loggers:
        lg.log_hyperparams(module.hparams)
    trainer._call("on_fit_start")
    example = getattr(module, "example_input_array", None)
    for lg in trainer.loggers:
        lg.log_graph(module, None if example is None else trainer.strategy.batch_to_device(example))
    if trainer.num_sanity_val_steps and trainer.val_dataloaders and _validation_enabled(trainer, module):
        trainer.state.stage = RunningStage.SANITY_CHECKING
        trainer._call("on_sanity_check_start")
        run_validation(trainer, sanity=True)
        trainer._call("on_sanity_check_end")
    trainer.state.stage = RunningStage.TRAINING
    module.train()
    # Cleared here and after each epoch (not at epoch start), so that what on_train_start
    # and on_train_epoch_start log counts towards the epoch, as in Lightning.
    trainer._results.reset_stage("train")
    trainer._call("on_train_start")
    deadline = time.monotonic() + trainer.max_time if trainer.max_time is not None else None
    # Anomaly mode only when asked: entering set_detect_anomaly(False) would switch off a
    # mode the user turned on globally. Its exit restores the previous mode.
    with torch.autograd.set_detect_anomaly(True) if trainer.detect_anomaly else _NULL_CONTEXT:
        resume = trainer._resume_point
        if resume is not None and resume.epoch_end_hook_ran:
            # Before the stop checks: the saved epoch's end finishes even if max_steps is reached.
            trainer._resume_point = None
            _finish_resumed_epoch(trainer, resume)
        while not _fit_done(trainer, deadline):
            _train_epoch(trainer, module, deadline)
    trainer._call("on_train_end")
    trainer._call("on_fit_end")


def _setup_loaders(trainer: Trainer, module: Module, train: Any, val: Any) -> None:
    loader = data.resolve(train, trainer.datamodule, module, "train_dataloader")
    if loader is None:
        raise MisconfigurationError(
            invalid(
                "train_dataloaders",
                None,
                "fit() found no training data",
                "a DataLoader argument, a DataModule with train_dataloader(), or Module.train_dataloader()",
            )
        )
    if isinstance(loader, (list, tuple, Mapping)):
        raise FitkitTypeError(
            invalid("train_dataloaders", type(loader).__name__, "fit() trains on one loader", "one iterable of batches")
        )
    if trainer.overfit_batches:
        loader = data.sequential_copy(loader)
    loader = data.distribute(trainer, loader, train=True)
    data.seed_workers(loader)
    trainer.train_dataloader = loader
    trainer.num_training_batches = data.num_batches(loader, trainer.limits["train"], "limit_train_batches")
    if data.has_len(loader) and len(loader) == 0:
        raise MisconfigurationError(
            invalid(
                "train_dataloaders", loader, "the training loader yields no batches", "a loader with at least one batch"
            )
        )
    vci = trainer.val_check_interval
    # limit_train_batches=0 skips training, so there is no epoch for the interval to fit in (as in Lightning).
    if isinstance(vci, int) and trainer.check_val_every_n_epoch is not None and 0 < trainer.num_training_batches < vci:
        raise MisconfigurationError(
            invalid(
                "val_check_interval",
                vci,
                f"it is larger than the {trainer.num_training_batches} training batches of an epoch",
                f"an int <= {trainer.num_training_batches}, a float in (0, 1], or check_val_every_n_epoch=None",
            )
        )
    if isinstance(vci, float) and vci < 1.0 and trainer.num_training_batches == math.inf:
        raise MisconfigurationError(
            invalid(
                "val_check_interval",
                vci,
                "a fraction of an epoch needs a training loader with __len__",
                "an int or 1.0",
            )
        )
    vals = data.as_list(data.resolve(val, trainer.datamodule, module, "val_dataloader"))
    vals = [data.distribute(trainer, v, train=False) for v in vals]
    for v in vals:
        data.seed_workers(v)
    trainer.val_dataloaders = vals
    trainer.num_val_batches = [data.num_batches(v, trainer.limits["val"], "limit_val_batches") for v in vals]
    sanity = trainer.num_sanity_val_steps
    trainer.num_sanity_val_batches = [n if sanity == -1 else min(n, sanity) for n in trainer.num_val_batches]


def _validation_enabled(trainer: Trainer, module: Module) -> bool:
    return (
        bool(trainer.val_dataloaders) and any(trainer.num_val_batches) and overrides(module, Module, "validation_step")
    )


def _fit_done(trainer: Trainer, deadline: float | None) -> bool:
    p = trainer.progress
    if trainer.num_training_batches == 0:  # limit_train_batches=0: nothing to train (Lightning stops too)
        return True
    if trainer.max_steps != -1 and p.global_step >= trainer.max_steps:
        return True
    if deadline is not None and time.monotonic() >= deadline:
        return True
    if trainer.max_epochs != -1 and p.current_epoch >= trainer.max_epochs:
        return True
    return trainer.should_stop and _can_stop(trainer)


def _can_stop(trainer: Trainer) -> bool:
    p = trainer.progress
    return (trainer.min_epochs is None or p.current_epoch >= trainer.min_epochs) and (
        trainer.min_steps is None or p.global_step >= trainer.min_steps
    )


def validation_due(trainer: Trainer) -> bool:
    """Is a mid-epoch validation due after the training batch just counted, and not yet run?

    Asked when a checkpoint is saved (never per step): true between the batch's count
    and the validation, i.e. in ``on_train_batch_end`` of a batch the schedule validates
    after. ``_last_validation_batches`` tells a save after that validation (on the same
    counts, e.g. from ``on_exception`` in the next batch) that it already ran.
    """
    p, module = trainer.progress, trainer.module
    if trainer.state.stage != RunningStage.TRAINING or p.epoch_batches == 0 or module is None:
        return False
    if trainer._last_validation_batches == p.total_batches:
        return False
    val_every, _ = _val_schedule(trainer)
    if val_every is None or not _validation_enabled(trainer, module):
        return False
    count = p.total_batches if trainer.check_val_every_n_epoch is None else p.epoch_batches
    return count % val_every == 0


def _val_schedule(trainer: Trainer) -> tuple[int | None, bool]:
    """(validate every N batches, validate at epoch end) for the coming epoch."""
    vci = trainer.val_check_interval
    if trainer.check_val_every_n_epoch is not None and (trainer.current_epoch + 1) % trainer.check_val_every_n_epoch:
        return None, False
    if isinstance(vci, int):
        return vci, False
    if vci == 1.0:
        return None, True
    return max(1, int(trainer.num_training_batches * vci)), False


def _extract_loss(output: Any) -> torch.Tensor | None:
    if isinstance(output, torch.Tensor):
        loss = output
    elif output is None:
        return None
    elif isinstance(output, Mapping) and "loss" in output:
        loss = output["loss"]
    else:
        raise FitkitTypeError(
            invalid(
                "training_step() result",
                output,
                "fitkit cannot find a loss in it",
                "a scalar loss tensor, a dict with a 'loss' tensor, or None to skip the batch",
            )
        )
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise FitkitTypeError(
            invalid(
                "training_step() loss",
                shape,
                "the loss must be one number to call backward on",
                "a scalar tensor (e.g. loss.mean())",
            )
        )
    return loss


def _train_epoch(trainer: Trainer, module: Module, deadline: float | None) -> None:
    strategy, precision, results, progress, call = (
        trainer.strategy,
        trainer.strategy.precision,
        trainer._results,
        trainer.progress,
        trainer._call,
    )
    hooks = trainer._hooks
    # Resolved once: a hook nobody overrides costs one truth test per step, not a call.
    batch_start, batch_end = hooks["on_train_batch_start"], hooks["on_train_batch_end"]
    before_backward, after_backward = hooks["on_before_backward"], hooks["on_after_backward"]
    before_step, before_zero_grad = hooks["on_before_optimizer_step"], hooks["on_before_zero_grad"]
    automatic = module.automatic_optimization
    plan = trainer._optimization
    optimizer: Any = plan.optimizers[0] if automatic and plan.optimizers else None
    loader = trainer.train_dataloader
    resume, trainer._resume_point = trainer._resume_point, None
    if resume is not None and not resume.epoch_batches:
        # Resumed at an epoch boundary: continue the random streams where they stopped.
        rng.restore(resume.rng_now, loader, strategy)

    call("on_train_epoch_start")
    # Read after the hook: callbacks (GradientAccumulationScheduler) may change it there.
    accumulate = trainer.accumulate_grad_batches
    closure_step = optimizer is not None and needs_closure(optimizer)
    if closure_step and accumulate != 1:
        raise MisconfigurationError(
            invalid(
                "accumulate_grad_batches",
                accumulate,
                f"{type(optimizer).__name__}.step needs a closure, which re-evaluates one batch",
                "1",
            )
        )
    clip = bool(trainer.gradient_clip_val) or overrides(module, Module, "configure_gradient_clipping")
    step_schedulers = any(c.interval == "step" for c in plan.schedulers)
    log_every = trainer.log_every_n_steps
    val_every, val_at_end = _val_schedule(trainer)
    validation = _validation_enabled(trainer, module)
    across_epochs = trainer.check_val_every_n_epoch is None
    forward_context = precision.forward_context
    training_step = strategy.step_method(module, "training_step")  # through DDP's forward, say
    # Exact per step where host reads are free, else deferred to the flushes below (trainer/nonfinite.py).
    loss_check = trainer._loss_check
    loss_is_finite = loss_check.is_finite if loss_check is not None else None
    has_grads = False  # does the current accumulation window hold gradients?

    data.set_epoch(loader, progress.current_epoch)  # a distributed sampler's order; a resume too
    start = resume.epoch_batches if resume is not None and resume.epoch_rng is not None else 0
    if start:
        # Resumed mid-epoch: rebuild this epoch's order, skip what was already trained on
        # (without loading it where the loader allows), then continue the random streams.
        rng.restore(resume.epoch_rng, loader)  # type: ignore[union-attr,arg-type]
        trainer._epoch_rng = resume.epoch_rng  # type: ignore[union-attr]
        iterator = iter(loader)
        start = data.skip_batches(iterator, start)
        # The global streams continue from the save. The loader's own generators do not
        # take the saved state: the rebuilt epoch draws from them exactly as the first run
        # did (at iterator creation, at the first index, and once more when exhausted), and
        # a loader that reads ahead on a thread of its own (XLA's MpDeviceLoader) makes those
        # draws at times of its own, before or after any state set here.
        rng.restore(resume.rng_now, None, strategy)  # type: ignore[union-attr]
    else:
        trainer._epoch_rng = rng.capture(loader)
        iterator = None
    progress.epoch_batches = start
    is_last = start > 0 and start >= trainer.num_training_batches  # resumed after the epoch's last batch
    batches = data.with_last_flag(loader, trainer.num_training_batches, iterator, start)
    if start and resume.validation_due and validation:  # type: ignore[union-attr]
        # Saved in on_train_batch_end before the validation due after that batch: run it
        # now, where the uninterrupted run did, then stop as it would have.
        _validate_mid_epoch(trainer, module)
        if trainer.should_stop and _can_stop(trainer):
            batches = iter(())
    for batch_idx, batch, is_last in batches:
        results.batch, results.batch_size = batch, None
        batch = strategy.batch_to_device(batch)
        if batch_start and call("on_train_batch_start", batch, batch_idx) == -1:
            break
        results.fx = "training_step"
        if not automatic:
            with forward_context():
                output = training_step(batch, batch_idx)
            progress.global_step += 1
        elif closure_step:
            output = _closure_step(trainer, module, optimizer, batch, batch_idx, clip)
        else:
            boundary = is_last or (batch_idx + 1) % accumulate == 0
            with _NULL_CONTEXT if boundary else strategy.no_sync():
                with forward_context():
                    output = training_step(batch, batch_idx)
                # The usual case (a plain scalar tensor) skips _extract_loss's checks.
                loss = output if type(output) is torch.Tensor and output.numel() == 1 else _extract_loss(output)
                if loss_is_finite is not None and loss is not None and not loss_is_finite(loss):
                    nonfinite.handle(trainer, loss, "training_step()", batch_idx)  # raises unless "skip"
                    loss = None
                    if boundary and trainer.world_size > 1:
                        # Processes average gradients in the window's last backward, now skipped:
                        # drop the window's local gradients on every process rather than diverge.
                        optimizer.zero_grad(set_to_none=True)
                        has_grads = False
                if loss is not None:
                    if before_backward:
                        call("on_before_backward", loss)
                    strategy.backward(loss / accumulate if accumulate > 1 else loss)
                    if after_backward:
                        call("on_after_backward")
                    has_grads = True
            if boundary and has_grads:
                precision.unscale_gradients(optimizer)
                if before_step:
                    call("on_before_optimizer_step", optimizer)
                if clip:
                    results.fx = "configure_gradient_clipping"
                    module.configure_gradient_clipping(
                        optimizer,
                        trainer.gradient_clip_val,
                        trainer.gradient_clip_algorithm,
                    )
                strategy.optimizer_step(optimizer)
                if before_zero_grad:
                    call("on_before_zero_grad", optimizer)
                optimizer.zero_grad(set_to_none=True)
                has_grads = False
                progress.global_step += 1
                if step_schedulers:
                    plan.step_schedulers("step", progress.global_step, results.callback_metrics)
        # Counted before the hook, so a checkpoint saved in it says this batch is done.
        progress.epoch_batches += 1
        progress.total_batches += 1
        if batch_end:
            trainer._window_has_grads = has_grads
            call("on_train_batch_end", _batch_outputs(output), batch, batch_idx)
        if progress.total_batches % log_every == 0:
            _flush_step_logs(trainer)
            if loss_check is not None:  # the deferred non-finite check: one host read, after the logged values'
                loss_check.flush()
        if validation and val_every is not None:
            count = progress.total_batches if across_epochs else batch_idx + 1
            if count % val_every == 0:
                _validate_mid_epoch(trainer, module)
        # Ctrl-C / SIGTERM take effect here, once the optimizer step is done (not inside an
        # accumulation window): one attribute read per step on one process; under DDP the
        # flag is always set and the ranks agree by a small asynchronous all-reduce, read one
        # boundary later (trainer/signals.py).
        if trainer._signal_check and not has_grads:
            signals.at_boundary(trainer)
        if (
            (trainer.max_steps != -1 and progress.global_step >= trainer.max_steps)
            or (deadline is not None and time.monotonic() >= deadline)
            or (trainer.should_stop and _can_stop(trainer))
        ):
            break
    if loss_check is not None:
        loss_check.flush()
    if progress.epoch_batches == 0 and trainer.num_training_batches == math.inf:
        raise MisconfigurationError(
            invalid(
                "train_dataloaders",
                trainer.train_dataloader,
                "the training loader yielded no batches",
                "a loader with at least one batch",
            )
        )
    if has_grads:
        # A window cut short (on_train_batch_start returned -1) never stepped: drop its
        # gradients, as Lightning does, rather than add them to next epoch's first step.
        optimizer.zero_grad(set_to_none=True)
    # max_steps stopped the epoch before its last batch: as in Lightning, epoch-interval
    # schedulers do not step for it. (Unlike Lightning, the cut epoch still validates at its end.)
    cut_short = not is_last and trainer.max_steps != -1 and progress.global_step >= trainer.max_steps
    if validation and val_at_end:
        trainer.epoch_end_validation = True
        try:
            _validate_mid_epoch(trainer, module)
        finally:
            trainer.epoch_end_validation = False
    # Reduce before the hook so on_train_epoch_end sees this epoch's aggregates (as in
    # Lightning), and again after it for what the hook itself logged. Epoch schedulers step
    # next, then checkpoint callbacks run: what they save is where the next epoch starts.
    results.fx = None
    logged = results.epoch_end("train")
    # Set while the hook runs, so that a checkpoint saved in it resumes after it (and knows
    # whether the epoch schedulers are still to step), not at this epoch's end validation.
    trainer._epoch_end_schedulers = automatic and not cut_short
    try:
        call("on_train_epoch_end")
    finally:
        trainer._epoch_end_schedulers = None
    results.fx = None
    logged.update(results.epoch_end("train"))
    _finish_epoch(trainer, logged, automatic and not cut_short)


def _finish_epoch(trainer: Trainer, logged: dict[str, Any], step_epoch_schedulers: bool) -> None:
    """The epoch end after ``on_train_epoch_end``: also all that a resume from a save in that hook runs."""
    results, progress = trainer._results, trainer.progress
    if step_epoch_schedulers:
        trainer._optimization.step_schedulers("epoch", progress.current_epoch + 1, results.callback_metrics)
    trainer._epoch_finished = True
    try:
        trainer._call(CHECKPOINT_EPOCH_END)
    finally:
        trainer._epoch_finished = False
    results.reset_stage("train")
    trainer._log_to_loggers(logged, progress.global_step)
    for lg in trainer.loggers:
        lg.save()
    progress.current_epoch += 1
    progress.epoch_batches = 0
    trainer._epoch_rng = None  # a checkpoint from here on resumes at the next epoch's start


def _finish_resumed_epoch(trainer: Trainer, resume: checkpointing.ResumePoint) -> None:
    """Resumed from a save in ``on_train_epoch_end``: run only what followed that hook.

    The saved epoch's batches, its end validation and the hook itself already ran, so the
    resumed run neither repeats them nor fires ``on_train_epoch_start`` for that epoch.
    The random streams continue from the save point, as the uninterrupted run's did.
    """
    rng.restore(resume.rng_now, trainer.train_dataloader, trainer.strategy)
    trainer._results.fx = None
    logged = trainer._results.epoch_end("train")  # the saved epoch values, as the hook left them
    _finish_epoch(trainer, logged, resume.step_epoch_schedulers)


def _closure_step(
    trainer: Trainer, module: Module, optimizer: torch.optim.Optimizer, batch: Any, batch_idx: int, clip: bool
) -> Any:
    """The automatic step for optimizers whose ``step`` must re-evaluate the loss (LBFGS)."""
    first: list[Any] = []
    call = trainer._call

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        trainer._results.fx = "training_step"
        with trainer.strategy.precision.forward_context():
            output = trainer.strategy.step_method(module, "training_step")(batch, batch_idx)
        loss = _extract_loss(output)
        if loss is None:
            raise MisconfigurationError(
                invalid(
                    "training_step() result",
                    None,
                    f"{type(optimizer).__name__} needs a loss on every call",
                    "a loss tensor",
                )
            )
        if loss_check is not None and not loss_check.is_finite(loss):
            nonfinite.handle(trainer, loss, "training_step()", batch_idx)  # raises unless "skip"
            raise nonfinite.SkipStep
        call("on_before_backward", loss)
        trainer.strategy.backward(loss)
        call("on_after_backward")
        if not first:
            # Once per step (LBFGS evaluates the closure several times), after the first
            # backward, so that, as in the plain step, the hook sees gradients, not None.
            first.append(output)
            call("on_before_optimizer_step", optimizer)
        if clip:
            trainer._results.fx = "configure_gradient_clipping"
            module.configure_gradient_clipping(optimizer, trainer.gradient_clip_val, trainer.gradient_clip_algorithm)
        return loss.detach()

    loss_check = trainer._loss_check
    try:
        trainer.strategy.optimizer_step(optimizer, closure)
    except nonfinite.SkipStep:
        # Abandoned before its backward; an earlier evaluation of this step (LBFGS's line
        # search) may already have moved the weights. No step is counted.
        optimizer.zero_grad(set_to_none=True)
        return first[0] if first else None
    call("on_before_zero_grad", optimizer)
    optimizer.zero_grad(set_to_none=True)
    trainer.progress.global_step += 1
    plan = trainer._optimization
    plan.step_schedulers("step", trainer.progress.global_step, trainer.callback_metrics)
    return first[0] if first else None


def _batch_outputs(output: Any) -> Any:
    """What ``on_train_batch_end`` receives: the step's output with the loss detached."""
    if isinstance(output, torch.Tensor):
        return {"loss": output.detach()}
    if isinstance(output, Mapping) and isinstance(output.get("loss"), torch.Tensor):
        return {**output, "loss": output["loss"].detach()}
    return output


def _flush_step_logs(trainer: Trainer) -> None:
    results = trainer._results
    metrics = results.step_metrics("train")
    results.logged_metrics.update(metrics)
    results.update_step_progress_bar("train")
    trainer._log_to_loggers(metrics, trainer.progress.global_step)


def _validate_mid_epoch(trainer: Trainer, module: Module) -> None:
    run_validation(trainer, sanity=False)
    trainer.state.stage = RunningStage.TRAINING
    trainer._last_validation_batches = trainer.progress.total_batches
