"""``fitkit.Module``: the user's model, its hooks, and the calls it makes into the run.

The Module owns *what* to compute (the step methods, ``configure_optimizers``) and
offers ``log``, ``optimizers``, ``lr_schedulers`` and ``manual_backward``. It does
not own *when* anything runs: the Trainer calls every hook, and the methods here
that touch the run forward to the Trainer that is attached.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import torch
from torch import nn
from typing_extensions import Self

from fitkit.hparams import HyperparametersMixin
from fitkit.utilities.exceptions import FitkitRuntimeError

if TYPE_CHECKING:
    from fitkit.trainer.optimization import Optimizer
    from fitkit.trainer.trainer import Trainer


class Module(HyperparametersMixin, nn.Module):
    """Base class for models trained by :class:`fitkit.Trainer`.

    Override ``training_step`` and ``configure_optimizers`` at least; every other
    hook is optional and costs nothing when left alone.

    Example::

        >>> import fitkit, torch
        >>> class Regressor(fitkit.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.layer = torch.nn.Linear(3, 1)
        ...     def training_step(self, batch, batch_idx):
        ...         x, y = batch
        ...         return torch.nn.functional.mse_loss(self.layer(x), y)
        ...     def configure_optimizers(self):
        ...         return torch.optim.SGD(self.parameters(), lr=0.1)
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._trainer: Trainer | None = None
        self._automatic_optimization = True

    # -- properties ------------------------------------------------------------------
    @property
    def trainer(self) -> Trainer:
        """The Trainer running this module; an error when there is none."""
        if self._trainer is None:
            raise FitkitRuntimeError(f"{type(self).__name__} is not attached to a Trainer: call trainer.fit() first.")
        return self._trainer

    @trainer.setter
    def trainer(self, trainer: Trainer | None) -> None:
        self._trainer = trainer

    @property
    def device(self) -> torch.device:
        """The device of the module's first parameter or buffer (CPU if it has none)."""
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    @property
    def global_rank(self) -> int:
        """This process's rank among all processes of the run (0 when detached or alone)."""
        return self._trainer.global_rank if self._trainer is not None else 0

    @property
    def local_rank(self) -> int:
        """This process's rank on its machine (0 when detached or alone)."""
        return self._trainer.local_rank if self._trainer is not None else 0

    @property
    def current_epoch(self) -> int:
        """The Trainer's current epoch (0 when detached)."""
        return self._trainer.current_epoch if self._trainer is not None else 0

    @property
    def global_step(self) -> int:
        """Optimizer steps taken so far (training batches in manual optimization)."""
        return self._trainer.global_step if self._trainer is not None else 0

    @property
    def automatic_optimization(self) -> bool:
        """False means ``training_step`` runs backward and steps optimizers itself."""
        return self._automatic_optimization

    @automatic_optimization.setter
    def automatic_optimization(self, value: bool) -> None:
        self._automatic_optimization = bool(value)

    # -- hooks the user fills in -------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return super().forward(*args, **kwargs)

    def training_step(self, batch: Any, batch_idx: int, *args: Any) -> torch.Tensor | Mapping[str, Any] | None:
        """Return the loss tensor, a dict with ``"loss"``, or None to skip the batch."""
        raise FitkitRuntimeError(f"{type(self).__name__} must override `training_step` to be trained.")

    def validation_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        """One validation batch; log metrics with ``self.log``."""

    def test_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        """One test batch; log metrics with ``self.log``."""

    def predict_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        """One prediction batch; the default returns ``self(batch)``."""
        return self(batch)

    def configure_optimizers(self) -> Any:
        """Return the optimizer(s) and scheduler(s) in any Lightning form."""
        from fitkit.utilities.exceptions import MisconfigurationError

        raise MisconfigurationError(
            f"{type(self).__name__} does not define `configure_optimizers`. Expected it to return an optimizer, "
            "a list of optimizers, (optimizers, schedulers), or a dict with 'optimizer' and optional 'lr_scheduler'."
        )

    def configure_gradient_clipping(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip gradients before the optimizer step; the default applies the Trainer's settings."""
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def clip_gradients(
        self,
        optimizer: torch.optim.Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """Clip the gradients of ``optimizer``'s parameters by norm (default) or value."""
        if not gradient_clip_val:
            return
        if self._trainer is not None:
            # Clip the true gradients: a gradient scaler ("16-mixed") unscales them here,
            # once per step (the automatic step has already done it: then this is a no-op).
            # self.optimizers() hands out wrappers; the scaler knows the torch optimizer inside.
            raw = optimizer
            if not isinstance(raw, torch.optim.Optimizer):
                raw = getattr(optimizer, "optimizer", optimizer)
            self._trainer.strategy.precision.unscale_gradients(raw)
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(params, gradient_clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)

    # lifecycle hooks: empty on purpose, the Trainer skips the ones nobody overrides
    def prepare_data(self) -> None: ...
    def setup(self, stage: str) -> None: ...
    def teardown(self, stage: str) -> None: ...
    def on_fit_start(self) -> None: ...
    def on_fit_end(self) -> None: ...
    def on_train_start(self) -> None: ...
    def on_train_end(self) -> None: ...
    def on_train_epoch_start(self) -> None: ...
    def on_train_epoch_end(self) -> None: ...
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> int | None: ...
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None: ...
    def on_validation_start(self) -> None: ...
    def on_validation_end(self) -> None: ...
    def on_validation_epoch_start(self) -> None: ...
    def on_validation_epoch_end(self) -> None: ...
    def on_validation_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_validation_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_test_start(self) -> None: ...
    def on_test_end(self) -> None: ...
    def on_test_epoch_start(self) -> None: ...
    def on_test_epoch_end(self) -> None: ...
    def on_test_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_test_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_predict_start(self) -> None: ...
    def on_predict_end(self) -> None: ...
    def on_predict_epoch_start(self) -> None: ...
    def on_predict_epoch_end(self) -> None: ...
    def on_predict_batch_start(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_predict_batch_end(self, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None: ...
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None: ...
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None: ...
    def on_before_backward(self, loss: torch.Tensor) -> None: ...
    def on_after_backward(self) -> None: ...
    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None: ...
    def on_before_zero_grad(self, optimizer: torch.optim.Optimizer) -> None: ...

    # -- checkpoints ------------------------------------------------------------------------
    @classmethod
    def load_from_checkpoint(
        cls,
        checkpoint_path: str | os.PathLike[str],
        map_location: Any = None,
        strict: bool = True,
        **hparam_overrides: Any,
    ) -> Self:
        """Build the module from a checkpoint's saved hyperparameters and load its weights.

        ``hparam_overrides`` replace saved ``__init__`` arguments. The file is read with
        ``torch.load(weights_only=True)``.

        Example::

            model = MyModel.load_from_checkpoint("epoch=3-step=120.ckpt", map_location="cpu", lr=1e-4)
        """
        from fitkit import checkpoint as ckpt_io
        from fitkit.hparams import saved_hparams
        from fitkit.trainer.checkpointing import load_weights
        from fitkit.utilities.compile import load_state_dict

        checkpoint = ckpt_io.load(checkpoint_path, map_location=map_location)
        # Hyperparameters are data for __init__: nothing in the file is imported or called.
        kwargs = {**saved_hparams(checkpoint), **hparam_overrides}
        model = _construct(cls, kwargs)
        model.on_load_checkpoint(checkpoint)
        # compiled submodules too; a key mismatch lists the missing and unexpected keys
        load_weights(load_state_dict, model, checkpoint, strict, os.fspath(checkpoint_path))
        return model

    # -- calls into the run ------------------------------------------------------------
    def log(
        self,
        name: str,
        value: Any,
        prog_bar: bool = False,
        logger: bool = True,
        on_step: bool | None = None,
        on_epoch: bool | None = None,
        reduce_fx: str = "mean",
        sync_dist: bool = False,
        batch_size: int | None = None,
    ) -> None:
        """Record a scalar metric for loggers, callbacks and the progress bar.

        Values stay on their device; fitkit reduces them at epoch end or every
        ``log_every_n_steps``. ``on_step``/``on_epoch`` default by hook as in
        Lightning: per step in training hooks, per epoch in evaluation and
        epoch-level hooks. Epoch means are weighted by ``batch_size`` (inferred
        from the batch when not given).

        Example::

            self.log("train_loss", loss, prog_bar=True)
        """
        trainer = self._trainer
        if trainer is None:
            raise FitkitRuntimeError(f"self.log({name!r}, ...) needs a running Trainer: call it from a hook.")
        trainer._results.log(name, value, prog_bar, logger, on_step, on_epoch, reduce_fx, sync_dist, batch_size)

    def log_dict(
        self,
        dictionary: Mapping[str, Any],
        prog_bar: bool = False,
        logger: bool = True,
        on_step: bool | None = None,
        on_epoch: bool | None = None,
        reduce_fx: str = "mean",
        sync_dist: bool = False,
        batch_size: int | None = None,
    ) -> None:
        """``self.log`` for each item of ``dictionary``."""
        for name, value in dictionary.items():
            self.log(name, value, prog_bar, logger, on_step, on_epoch, reduce_fx, sync_dist, batch_size)

    def optimizers(self) -> Optimizer | list[Optimizer]:
        """The optimizer(s) from ``configure_optimizers``, wrapped for manual optimization."""
        if self._trainer is None or not self._trainer._optimization.optimizers:
            raise FitkitRuntimeError(
                "self.optimizers() has nothing to return: optimizers are created when trainer.fit() starts."
            )
        opts = self._trainer._optimization.wrapped
        return opts[0] if len(opts) == 1 else list(opts)

    def lr_schedulers(self) -> Any:
        """The scheduler(s) from ``configure_optimizers`` (None, one, or a list)."""
        if self._trainer is None:
            raise FitkitRuntimeError("self.lr_schedulers() needs a running Trainer: call trainer.fit() first.")
        scheds = [c.scheduler for c in self._trainer._optimization.schedulers]
        if not scheds:
            return None
        return scheds[0] if len(scheds) == 1 else scheds

    def manual_backward(self, loss: torch.Tensor) -> None:
        """Backward in manual optimization, through the precision plug-in and its hooks.

        A NaN or infinite ``loss`` raises before any backward with the default
        ``Trainer(nonfinite_loss="raise")``; with ``"skip"`` this call does nothing (no
        backward, no hooks) and ``trainer.skipped_nonfinite_steps`` counts it, so the
        ``optimizer.step()`` you call next sees the gradients as they were.

        Example::

            >>> # in training_step, with self.automatic_optimization = False
            >>> # self.manual_backward(loss); opt.step(); opt.zero_grad()
        """
        self.trainer._manual_backward(loss)

    def all_gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Gather ``tensor`` from every process (a leading dimension of world size)."""
        return self.trainer.strategy.all_gather(tensor)


_T = TypeVar("_T")


def _construct(cls: type[_T], kwargs: dict[str, Any]) -> _T:
    """``cls(**kwargs)``, dropping saved hyperparameters ``__init__`` no longer accepts."""
    from fitkit.hparams import check_reserved

    check_reserved(kwargs, "hyper_parameters")
    params = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in params}
    return cls(**kwargs)
