"""The Trainer: its arguments, ``fit``/``validate``/``test``/``predict``, and the one
place hooks fire (:meth:`Trainer._call`).

The Trainer owns *when* things run. The loops themselves live in ``fit_loop.py``
and ``eval_loop.py``; where the work runs is the Strategy's business; what
``self.log`` stores is ``logging.py``'s.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

from fitkit.callbacks.callback import Callback
from fitkit.callbacks.on_exception_checkpoint import newest_last_checkpoint
from fitkit.datamodule import DataModule
from fitkit.loggers import Logger, resolve_loggers
from fitkit.module import Module
from fitkit.trainer import arguments as args_
from fitkit.trainer import checkpointing, nonfinite, signals
from fitkit.trainer.defaults import assemble_callbacks
from fitkit.trainer.hooks import build_table, check_callbacks, describe
from fitkit.trainer.logging import Results
from fitkit.trainer.optimization import OptimizationPlan, Optimizer, build_plan
from fitkit.trainer.plugins import select_strategy
from fitkit.trainer.state import Progress, TrainerFn, TrainerState, TrainerStatus
from fitkit.trainer.views import TrainerViews
from fitkit.utilities.compile import unwrap_compiled
from fitkit.utilities.exceptions import FitkitRuntimeError, FitkitTypeError, MisconfigurationError, invalid


class Trainer(TrainerViews):
    """Runs training, validation, testing and prediction for a :class:`fitkit.Module`.

    Arguments follow PyTorch Lightning 2.x; see ``docs/getting-started.md`` for each.

    Example::

        >>> import fitkit
        >>> trainer = fitkit.Trainer(max_epochs=3, enable_progress_bar=False)
        >>> # trainer.fit(model, train_loader, val_loader)
    """

    def __init__(
        self,
        *,
        accelerator: Any = "auto",
        strategy: Any = "auto",
        devices: Any = "auto",
        precision: Any = "32-true",
        num_nodes: int = 1,
        logger: Any = True,
        callbacks: Callback | Sequence[Callback] | None = None,
        fast_dev_run: int | bool = False,
        max_epochs: int | None = None,
        min_epochs: int | None = None,
        max_steps: int = -1,
        min_steps: int | None = None,
        max_time: Any = None,
        limit_train_batches: int | float | None = None,
        limit_val_batches: int | float | None = None,
        limit_test_batches: int | float | None = None,
        limit_predict_batches: int | float | None = None,
        overfit_batches: int | float = 0.0,
        val_check_interval: int | float | None = None,
        check_val_every_n_epoch: int | None = 1,
        num_sanity_val_steps: int | None = None,
        log_every_n_steps: int | None = None,
        enable_checkpointing: bool | None = None,
        enable_progress_bar: bool | None = None,
        enable_model_summary: bool | None = None,
        accumulate_grad_batches: int = 1,
        gradient_clip_val: int | float | None = None,
        gradient_clip_algorithm: str | None = None,
        deterministic: bool | str | None = None,
        benchmark: bool | None = None,
        inference_mode: bool = True,
        use_distributed_sampler: bool = True,
        sync_batchnorm: bool = False,
        default_root_dir: str | os.PathLike[str] | None = None,
        detect_anomaly: bool = False,
        nonfinite_loss: str = "raise",
    ) -> None:
        num_nodes = args_.check_int("num_nodes", num_nodes, 1, "an int >= 1")
        self.use_distributed_sampler = args_.check_bool("use_distributed_sampler", use_distributed_sampler)
        self.sync_batchnorm = args_.check_bool("sync_batchnorm", sync_batchnorm)
        self.num_nodes = num_nodes
        self.strategy = select_strategy(accelerator, devices, strategy, precision, num_nodes, self.sync_batchnorm)
        self.fast_dev_run = args_.check_fast_dev_run(fast_dev_run)
        self.max_steps = args_.check_int("max_steps", max_steps, -1, "an int >= -1 (-1: no limit)")
        max_epochs = args_.check_int(
            "max_epochs", max_epochs, -1, "an int >= -1 (-1: no limit) or None", allow_none=True
        )
        if max_epochs is None:
            max_epochs = 1000 if self.max_steps == -1 else -1
        self.max_epochs: int = max_epochs
        self.min_epochs = args_.check_int("min_epochs", min_epochs, 0, "an int >= 0 or None", allow_none=True)
        self.min_steps = args_.check_int("min_steps", min_steps, 0, "an int >= 0 or None", allow_none=True)
        self.max_time = args_.parse_max_time(max_time)
        self.overfit_batches = args_.check_overfit_batches(overfit_batches)
        limits = {}
        for stage, value in (
            ("train", limit_train_batches),
            ("val", limit_val_batches),
            ("test", limit_test_batches),
            ("predict", limit_predict_batches),
        ):
            limits[stage] = 1.0 if value is None else args_.check_limit(f"limit_{stage}_batches", value)
        if self.overfit_batches:
            limits["train"] = limits["val"] = self.overfit_batches
        self.val_check_interval = args_.check_val_check_interval(
            1.0 if val_check_interval is None else val_check_interval
        )
        self.check_val_every_n_epoch = args_.check_int(
            "check_val_every_n_epoch", check_val_every_n_epoch, 1, "an int >= 1 or None", allow_none=True
        )
        if self.check_val_every_n_epoch is None and not isinstance(self.val_check_interval, int):
            raise MisconfigurationError(
                invalid(
                    "check_val_every_n_epoch",
                    None,
                    "None counts validation across epochs, which needs a batch count",
                    "an int val_check_interval with check_val_every_n_epoch=None",
                )
            )
        sanity = 2 if num_sanity_val_steps is None else num_sanity_val_steps
        self.num_sanity_val_steps = args_.check_int(
            "num_sanity_val_steps", sanity, -1, "an int >= -1 (-1: all batches)"
        )
        self.log_every_n_steps = args_.check_int(
            "log_every_n_steps", 50 if log_every_n_steps is None else log_every_n_steps, 1, "an int >= 1"
        )
        self.accumulate_grad_batches = args_.check_int(
            "accumulate_grad_batches", accumulate_grad_batches, 1, "an int >= 1"
        )
        if gradient_clip_val is not None and (
            isinstance(gradient_clip_val, bool)
            or not isinstance(gradient_clip_val, (int, float))
            or gradient_clip_val < 0
        ):
            raise MisconfigurationError(
                invalid("gradient_clip_val", gradient_clip_val, "it must be a number >= 0", "a float >= 0 or None")
            )
        self.gradient_clip_val = gradient_clip_val
        self.gradient_clip_algorithm = args_.check_choice(
            "gradient_clip_algorithm",
            "norm" if gradient_clip_algorithm is None else gradient_clip_algorithm,
            ("norm", "value"),
        )
        self.deterministic = (
            deterministic
            if deterministic is None
            else args_.check_choice("deterministic", deterministic, (True, False, "warn"))
        )
        self.benchmark = args_.check_bool("benchmark", benchmark, allow_none=True)
        self.inference_mode = args_.check_bool("inference_mode", inference_mode)
        self.detect_anomaly = args_.check_bool("detect_anomaly", detect_anomaly)
        self.nonfinite_loss = args_.check_nonfinite_loss(nonfinite_loss)
        self.enable_checkpointing = args_.check_bool(
            "enable_checkpointing", True if enable_checkpointing is None else enable_checkpointing
        )
        self.enable_progress_bar = args_.check_bool(
            "enable_progress_bar", True if enable_progress_bar is None else enable_progress_bar
        )
        self.enable_model_summary = args_.check_bool(
            "enable_model_summary", True if enable_model_summary is None else enable_model_summary
        )
        if self.fast_dev_run:
            n = self.fast_dev_run
            self.max_epochs, self.max_steps, self.num_sanity_val_steps, self.val_check_interval = 1, n, 0, 1.0
            self.check_val_every_n_epoch = 1
            limits = dict.fromkeys(limits, n)
        self.limits = limits
        if callbacks is None:
            callbacks = []
        elif isinstance(callbacks, Callback):
            callbacks = [callbacks]
        self.default_root_dir = os.fspath(default_root_dir) if default_root_dir is not None else os.getcwd()
        self.callbacks: list[Callback] = assemble_callbacks(
            check_callbacks(callbacks),
            enable_progress_bar=self.enable_progress_bar,
            enable_model_summary=self.enable_model_summary,
            enable_checkpointing=self.enable_checkpointing,
        )
        self.loggers: list[Logger] = [] if self.fast_dev_run else resolve_loggers(logger, self.default_root_dir)

        self.state = TrainerState()
        self.progress = Progress()
        self.should_stop = False
        # Ctrl-C / SIGTERM (trainer/signals.py): the flag the loops read per step, the
        # running stage's handlers, and whether this process was asked to terminate.
        self._signal_check = False
        self._signals: signals.SignalGuard | None = None
        self._received_sigterm = False
        self.module: Module | None = None
        self.datamodule: DataModule | None = None
        self._optimization = OptimizationPlan()
        self._results = Results(self)
        self._hooks: dict[str, tuple[Callable[..., Any], ...]] = {}
        # Checkpoint and resume bookkeeping (see trainer/checkpointing.py and fit_loop.py).
        self.epoch_end_validation = False
        self._epoch_finished = False
        # Inside on_train_epoch_end only: whether epoch schedulers still step for this epoch.
        self._epoch_end_schedulers: bool | None = None
        self._last_validation_batches = -1  # progress.total_batches when fit last validated
        self._window_has_grads = False
        self._skipped_nonfinite = 0  # non-finite losses dropped this fit (nonfinite_loss="skip")
        self._loss_check: nonfinite.LossCheck | None = None  # this fit's (trainer/nonfinite.py)
        self._epoch_rng: dict[str, Any] | None = None
        self._pending_checkpoint: dict[str, Any] | None = None
        self.ckpt_path: str | None = None  # the checkpoint the last fit/validate/test/predict loaded
        self._resume_point: checkpointing.ResumePoint | None = None
        self.train_dataloader: Any = None
        self.val_dataloaders: list[Any] = []
        self.test_dataloaders: list[Any] = []
        self.predict_dataloaders: list[Any] = []
        self.num_training_batches: int | float = 0
        self.num_val_batches: list[int | float] = []
        self.num_sanity_val_batches: list[int | float] = []
        self.num_test_batches: list[int | float] = []
        self.num_predict_batches: list[int | float] = []

    # -- hooks: the one place they fire -------------------------------------------------
    def _call(self, name: str, *args: Any) -> Any:
        """Run hook ``name``: callbacks in order, then the module. Returns the last callable's result."""
        fns = self._hooks.get(name)
        result = None
        if fns:
            self._results.fx = name
            for fn in fns:
                result = fn(*args)
        return result

    def print_loop(self, model: Module | None = None) -> str:
        """Return (and print) which callbacks and module hooks run at each point of ``fit``."""
        from fitkit.trainer.fit_loop import FIT_HOOK_ORDER

        module = model or self.module
        if module is None:
            raise FitkitRuntimeError("print_loop() needs a module: pass one or call it after fit().")
        text = describe(build_table(self, module, self.callbacks), FIT_HOOK_ORDER)
        print(text)
        return text

    # -- checkpoints ------------------------------------------------------------------------------
    def save_checkpoint(self, filepath: str | os.PathLike[str], weights_only: bool = False) -> None:
        """Write a checkpoint of the current state to ``filepath`` (atomically, on global rank zero).

        ``weights_only=True`` keeps the weights, hyperparameters, epoch and step only.

        Example::

            trainer.save_checkpoint("model.ckpt")
        """
        if self.module is None:
            raise FitkitRuntimeError("save_checkpoint() needs a module: call it during or after fit().")
        checkpoint = checkpointing.dump(self, weights_only)
        self.strategy.save_checkpoint(checkpoint, filepath)
        self.strategy.barrier("save_checkpoint")

    # -- manual optimization -------------------------------------------------------------
    def _manual_backward(self, loss: torch.Tensor) -> None:
        check = self._loss_check
        if check is not None and not check.is_finite(loss):
            nonfinite.handle(self, loss, "manual_backward()", self.progress.epoch_batches)  # raises unless "skip"
            return  # "skip": no backward and no hooks for this loss
        self._call("on_before_backward", loss)
        self.strategy.backward(loss)
        self._call("on_after_backward")

    def _manual_optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Callable[[], Any] | None) -> Any:
        self.strategy.precision.unscale_gradients(optimizer)
        self._call("on_before_optimizer_step", optimizer)
        return self.strategy.optimizer_step(optimizer, closure)

    # -- the four entry points ---------------------------------------------------------------
    def fit(
        self,
        model: Module,
        train_dataloaders: Any = None,
        val_dataloaders: Any = None,
        datamodule: DataModule | None = None,
        ckpt_path: str | None = None,
    ) -> None:
        """Train ``model``. Loaders come from the arguments, the DataModule, or the model."""
        from fitkit.trainer.fit_loop import run_fit

        self._start(model, datamodule, TrainerFn.FITTING)
        self._run(functools.partial(run_fit, self, train_dataloaders, val_dataloaders), "fit", ckpt_path)

    def validate(
        self,
        model: Module | None = None,
        dataloaders: Any = None,
        ckpt_path: str | None = None,
        verbose: bool = True,
        datamodule: DataModule | None = None,
    ) -> list[dict[str, float]]:
        """Run one validation epoch; return one dict of metrics per loader."""
        return self._evaluate(model, dataloaders, ckpt_path, verbose, datamodule, TrainerFn.VALIDATING)

    def test(
        self,
        model: Module | None = None,
        dataloaders: Any = None,
        ckpt_path: str | None = None,
        verbose: bool = True,
        datamodule: DataModule | None = None,
    ) -> list[dict[str, float]]:
        """Run one test epoch; return one dict of metrics per loader."""
        return self._evaluate(model, dataloaders, ckpt_path, verbose, datamodule, TrainerFn.TESTING)

    def predict(
        self,
        model: Module | None = None,
        dataloaders: Any = None,
        datamodule: DataModule | None = None,
        return_predictions: bool = True,
        ckpt_path: str | None = None,
    ) -> list[Any] | None:
        """Run ``predict_step`` over the loader(s); return the outputs (a list per loader if several)."""
        from fitkit.trainer.eval_loop import run_predict

        self._start(model, datamodule, TrainerFn.PREDICTING)
        return self._run(functools.partial(run_predict, self, dataloaders, return_predictions), "predict", ckpt_path)

    def _evaluate(
        self,
        model: Module | None,
        dataloaders: Any,
        ckpt_path: str | None,
        verbose: bool,
        datamodule: DataModule | None,
        fn: TrainerFn,
    ) -> list[dict[str, float]]:
        from fitkit.trainer.eval_loop import run_evaluate

        step = "validation_step" if fn == TrainerFn.VALIDATING else "test_step"
        target = unwrap_compiled(model) if model is not None else self.module
        if isinstance(target, Module) and getattr(type(target), step) is getattr(Module, step):
            raise MisconfigurationError(
                invalid(
                    "model",
                    type(target).__name__,
                    f"it does not define `{step}`, so `{fn.value}` has nothing to run",
                    f"a fitkit.Module that overrides {step}(self, batch, batch_idx)",
                )
            )
        self._start(model, datamodule, fn)
        return self._run(functools.partial(run_evaluate, self, dataloaders, fn.value, verbose), fn.value, ckpt_path)

    # -- shared set-up and tear-down -----------------------------------------------------------
    def _start(self, model: Module | None, datamodule: DataModule | None, fn: TrainerFn) -> None:
        # torch.compile(module) wraps it; hooks and checkpoints need the Module (its forward stays compiled).
        module = unwrap_compiled(model) if model is not None else self.module
        if module is None:
            raise MisconfigurationError(
                invalid("model", None, f"`{fn.value}` needs a model and none was fitted before", "a fitkit.Module")
            )
        if not isinstance(module, Module):
            raise FitkitTypeError(
                invalid("model", type(module).__name__, "it does not subclass fitkit.Module", "a fitkit.Module")
            )
        if datamodule is not None and not isinstance(datamodule, DataModule):
            raise FitkitTypeError(
                invalid(
                    "datamodule",
                    type(datamodule).__name__,
                    "it does not subclass fitkit.DataModule",
                    "a fitkit.DataModule",
                )
            )
        self.module = module
        self.datamodule = datamodule if datamodule is not None else self.datamodule if model is None else None
        module.trainer = self
        self.state = TrainerState(fn=fn, status=TrainerStatus.RUNNING)
        self.should_stop = False
        self._hooks = build_table(self, module, self.callbacks)

    def _run(self, body: Callable[[], Any], stage: str, ckpt_path: str | os.PathLike[str] | None = None) -> Any:
        launcher = getattr(self.strategy, "launcher", None)
        if launcher is not None and not launcher.launched:
            # Start the other processes (the strategy's launcher); each runs this stage.
            # `body` is a functools.partial so that ddp_spawn can pickle it to its workers.
            return launcher.launch(self._run, body, stage, ckpt_path, trainer=self)
        previous_deterministic = torch.are_deterministic_algorithms_enabled()
        previous_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
        previous_benchmark = torch.backends.cudnn.benchmark
        if self.deterministic is not None:
            torch.use_deterministic_algorithms(bool(self.deterministic), warn_only=self.deterministic == "warn")
        if self.benchmark is not None:
            torch.backends.cudnn.benchmark = self.benchmark
        elif self.deterministic:  # as in Lightning: deterministic runs default to benchmark=False
            torch.backends.cudnn.benchmark = False
        module = self.module
        assert module is not None
        guard = signals.SignalGuard(self, stage)
        try:
            self.strategy.setup_environment()
            # Only now: a process blocked in C++ (the process-group rendezvous) runs no Python
            # handler, so there a signal keeps its default effect (SIGTERM ends the process).
            guard.install()
            if self.datamodule is not None:
                self.datamodule.prepare_data()
            self._call("prepare_data")
            if self.datamodule is not None:
                self.datamodule.setup(stage)
            self._call("setup", stage)
            self.module = self.strategy.setup_module(module)  # type: ignore[assignment]
            self.ckpt_path = None
            if ckpt_path is not None:
                last = newest_last_checkpoint(self) if ckpt_path == "last" else None
                self.ckpt_path = last or checkpointing.resolve_path(self, ckpt_path)
                checkpoint = self.strategy.load_checkpoint(self.ckpt_path)
                checkpointing.load_module_state(self, checkpoint)
                if stage == "fit":
                    checkpointing.restore_callbacks(self, checkpoint)
                    self._pending_checkpoint = checkpoint
            result = body()
            self.state.status = TrainerStatus.FINISHED
            for lg in self.loggers:
                lg.finalize("success")
        except BaseException as exc:
            if self._results.fx is not None and isinstance(exc, TypeError):
                from fitkit.trainer.data import note_batch_without_tensors

                note_batch_without_tensors(exc, self._results.fx, self._results.batch)
            self.state.status = TrainerStatus.INTERRUPTED
            self.strategy.on_exception(exc)
            if not guard.aborted:  # a second signal means "now": no checkpoint from the middle of a step
                self._call("on_exception", exc)
            interrupted = isinstance(exc, (KeyboardInterrupt, signals.SIGTERMException))
            for lg in self.loggers:
                lg.finalize("interrupted" if interrupted else "failed")
            if not guard.graceful(exc):
                raise
            result = None  # a first Ctrl-C ends the stage early; `trainer.interrupted` says so
        finally:
            guard.restore()
            self.state.stage = None
            self._results.fx = None
            if self.datamodule is not None:
                self.datamodule.teardown(stage)
            self._call("teardown", stage)
            self.strategy.teardown()
            # Restore only what we changed: torch.use_deterministic_algorithms imports
            # torch._inductor (seconds), which a run that never asked for it must not pay.
            if self.deterministic is not None:
                torch.use_deterministic_algorithms(previous_deterministic, warn_only=previous_warn_only)
            if self.benchmark is not None or self.deterministic:
                torch.backends.cudnn.benchmark = previous_benchmark
        guard.finish()  # a SIGTERM that came after the last step boundary ends the process now
        return result

    def _configure_optimizers(self, module: Module) -> None:
        self._results.fx = "configure_optimizers"
        plan = build_plan(module.configure_optimizers())
        plan.wrapped = [Optimizer(opt, self) for opt in plan.optimizers]
        if module.automatic_optimization and len(plan.optimizers) > 1:
            raise MisconfigurationError(
                invalid(
                    "configure_optimizers()",
                    f"{len(plan.optimizers)} optimizers",
                    "automatic optimization steps one optimizer",
                    "one optimizer, or `self.automatic_optimization = False` to step several yourself",
                )
            )
        self._optimization = plan

    def _log_to_loggers(self, metrics: dict[str, Any], step: int) -> None:
        if not self.loggers or not metrics:
            return
        values = {k: float(v) for k, v in metrics.items()}
        values["epoch"] = self.current_epoch
        for lg in self.loggers:
            lg.log_metrics(values, step)
