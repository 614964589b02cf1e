"""Validation, test and predict loops: batches under ``no_grad``/``inference_mode``.

The module is put in eval mode for the loop and each submodule's previous mode is
restored afterwards (so a frozen, eval-mode backbone stays frozen). Several loaders
are run one after the other; their metrics get a ``/dataloader_idx_N`` suffix.
"""

from __future__ import annotations

import contextlib
import inspect
from typing import TYPE_CHECKING, Any

import torch

from fitkit.trainer import data, signals
from fitkit.trainer.state import RunningStage, TrainerFn
from fitkit.utilities.exceptions import MisconfigurationError, invalid
from fitkit.utilities.rank_zero import rank_zero_print

if TYPE_CHECKING:
    from fitkit.module import Module
    from fitkit.trainer.trainer import Trainer

_HOOK_PREFIX = {"validate": "validation", "test": "test", "predict": "predict"}


def _grad_context(trainer: Trainer) -> contextlib.AbstractContextManager[Any]:
    return torch.inference_mode() if trainer.inference_mode else torch.no_grad()


class _EvalMode:
    """Put ``module`` in eval mode; restore every submodule's own mode on exit."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.modes: list[tuple[torch.nn.Module, bool]] = []

    def __enter__(self) -> None:
        self.modes = [(m, m.training) for m in self.module.modules()]
        self.module.eval()

    def __exit__(self, *exc: Any) -> None:
        for m, training in self.modes:
            m.training = training


def _step_fn(module: Module, name: str, num_loaders: int) -> Any:
    """The step method, called with ``dataloader_idx`` only when several loaders run."""
    fn = getattr(module, name)
    if num_loaders > 1:
        params = inspect.signature(fn).parameters
        if "dataloader_idx" not in params and not any(p.kind == p.VAR_POSITIONAL for p in params.values()):
            raise MisconfigurationError(
                invalid(
                    f"{name}()",
                    f"{num_loaders} loaders",
                    f"{name} must accept `dataloader_idx` with several loaders",
                    f"def {name}(self, batch, batch_idx, dataloader_idx=0)",
                )
            )
        return fn
    return lambda batch, batch_idx, dataloader_idx: fn(batch, batch_idx)


def _run_loop(
    trainer: Trainer, stage: str, loaders: list[Any], counts: list[int | float], collect: bool = False
) -> list[list[Any]]:
    """Run the batches of each loader through ``<stage>_step`` with its batch hooks."""
    module = trainer.module
    assert module is not None
    prefix = _HOOK_PREFIX[stage]
    call, results, strategy = trainer._call, trainer._results, trainer.strategy
    step = _step_fn(module, f"{prefix}_step", len(loaders))
    batch_start, batch_end = f"on_{prefix}_batch_start", f"on_{prefix}_batch_end"
    step_name = f"{prefix}_step"
    forward_context = strategy.precision.forward_context
    # Ctrl-C / SIGTERM stop validate/test/predict after the current batch (trainer/signals.py).
    # Not inside fit (the training loop decides there), nor under several processes, whose
    # evaluation shards may differ in length: there a SIGTERM is honoured when the stage ends.
    check_signals = trainer.state.fn != TrainerFn.FITTING and trainer.world_size == 1
    outputs: list[list[Any]] = []
    for dl_idx, (loader, count) in enumerate(zip(loaders, counts, strict=True)):
        results.suffix = f"/dataloader_idx_{dl_idx}" if len(loaders) > 1 else ""
        collected: list[Any] = []
        for batch_idx, batch, _ in data.with_last_flag(loader, count):
            results.batch, results.batch_size = batch, None
            batch = strategy.batch_to_device(batch)
            call(batch_start, batch, batch_idx, dl_idx)
            results.fx = step_name
            with forward_context():
                out = step(batch, batch_idx, dl_idx)
            call(batch_end, out, batch, batch_idx, dl_idx)
            if collect:
                collected.append(out)
            if check_signals and trainer._signal_check:
                signals.at_boundary(trainer)
        outputs.append(collected)
    results.suffix = ""
    return outputs


def _evaluation(
    trainer: Trainer, stage: str, loaders: list[Any], counts: list[int | float], discard: bool
) -> dict[str, torch.Tensor]:
    """One evaluation epoch with its start/end hooks; returns the epoch metrics."""
    module = trainer.module
    assert module is not None
    prefix = _HOOK_PREFIX[stage]
    results = trainer._results
    results.reset_stage(stage, forget=True)
    results.enabled = not discard
    try:
        with _EvalMode(module), _grad_context(trainer):
            trainer._call(f"on_{prefix}_start")
            trainer._call(f"on_{prefix}_epoch_start")
            _run_loop(trainer, stage, loaders, counts)
            # Reduce before the epoch-end hook so it sees this epoch's aggregates (as in
            # Lightning), and again after it for what the hook itself logged.
            results.fx = None
            metrics = {} if discard else results.epoch_end(stage)
            trainer._call(f"on_{prefix}_epoch_end")
            results.fx = None
            if not discard:
                metrics.update(results.epoch_end(stage))
            trainer._call(f"on_{prefix}_end")
    finally:
        results.enabled = True
        results.fx = None
        # Metric objects start the next run clean (the sanity check's batches included).
        results.reset_stage(stage)
    return metrics


def run_validation(trainer: Trainer, sanity: bool) -> None:
    """Validation inside ``fit`` (or its sanity check); metrics go to ``callback_metrics``."""
    if not sanity:
        trainer.state.stage = RunningStage.VALIDATING
    counts = trainer.num_sanity_val_batches if sanity else trainer.num_val_batches
    metrics = _evaluation(trainer, "validate", trainer.val_dataloaders, counts, discard=sanity)
    if metrics:
        trainer._log_to_loggers(metrics, trainer.global_step)


def run_evaluate(trainer: Trainer, dataloaders: Any, stage: str, verbose: bool) -> list[dict[str, float]]:
    """``trainer.validate()`` / ``trainer.test()``."""
    module = trainer.module
    assert module is not None
    kind = "test" if stage == "test" else "val"
    loaders = data.as_list(data.resolve(dataloaders, trainer.datamodule, module, f"{kind}_dataloader"))
    if not loaders:
        raise MisconfigurationError(
            invalid(
                "dataloaders",
                None,
                f"{stage}() found no data",
                f"a DataLoader argument, a DataModule or Module with {kind}_dataloader()",
            )
        )
    loaders = [data.distribute(trainer, x, train=False) for x in loaders]
    counts = [data.num_batches(x, trainer.limits[kind], f"limit_{kind}_batches") for x in loaders]
    if stage == "test":
        trainer.test_dataloaders, trainer.num_test_batches = loaders, counts
    else:
        trainer.val_dataloaders, trainer.num_val_batches = loaders, counts
    trainer.state.stage = RunningStage.TESTING if stage == "test" else RunningStage.VALIDATING
    metrics = _evaluation(trainer, stage, loaders, counts, discard=False)
    trainer._log_to_loggers(metrics, trainer.global_step)
    per_loader = _split_by_loader(metrics, len(loaders))
    if verbose and trainer.is_global_zero:
        _print_table(stage, per_loader)
    return per_loader


def _split_by_loader(metrics: dict[str, torch.Tensor], num_loaders: int) -> list[dict[str, float]]:
    out: list[dict[str, float]] = [{} for _ in range(num_loaders)]
    for key, value in metrics.items():
        i = key.find("/dataloader_idx_")
        targets = range(num_loaders) if i < 0 else [int(key[i + len("/dataloader_idx_") :])]
        for t in targets:
            out[t][key] = float(value)
    return out


def _print_table(stage: str, per_loader: list[dict[str, float]]) -> None:
    for i, metrics in enumerate(per_loader):
        title = f"{stage} metric" + (f" (dataloader {i})" if len(per_loader) > 1 else "")
        width = max([len(title)] + [len(k) for k in metrics])
        lines = [f"{title:<{width}}  value", "-" * (width + 14)]
        lines += [f"{k:<{width}}  {v:.6g}" for k, v in sorted(metrics.items())]
        rank_zero_print("\n".join(lines))


def run_predict(trainer: Trainer, dataloaders: Any, return_predictions: bool) -> list[Any] | None:
    """``trainer.predict()``."""
    module = trainer.module
    assert module is not None
    loaders = data.as_list(data.resolve(dataloaders, trainer.datamodule, module, "predict_dataloader"))
    if not loaders:
        raise MisconfigurationError(
            invalid("dataloaders", None, "predict() found no data", "a DataLoader argument, or predict_dataloader()")
        )
    loaders = [data.distribute(trainer, x, train=False) for x in loaders]
    counts = [data.num_batches(x, trainer.limits["predict"], "limit_predict_batches") for x in loaders]
    trainer.predict_dataloaders, trainer.num_predict_batches = loaders, counts
    trainer.state.stage = RunningStage.PREDICTING
    with _EvalMode(module), _grad_context(trainer):
        trainer._call("on_predict_start")
        trainer._call("on_predict_epoch_start")
        outputs = _run_loop(trainer, "predict", loaders, counts, collect=return_predictions)
        trainer._call("on_predict_epoch_end")
        trainer._call("on_predict_end")
    if not return_predictions:
        return None
    return outputs[0] if len(outputs) == 1 else outputs
