"""EMA: keep an exponential moving average of the weights; evaluate with it.

Usage::

    # copy this file next to your script (or put the gallery folder on sys.path)
    import fitkit
    from ema import EMA

    trainer = fitkit.Trainer(max_epochs=10, callbacks=[EMA(decay=0.999)])
    trainer.fit(model, train_loader, val_loader)   # validation and test use the averaged weights
    ema = trainer.callbacks[0]
    ema.copy_to(model)                              # keep the averaged weights for good

After every optimizer step (every ``every_n_steps`` steps) each floating-point
parameter's average moves towards it: ``ema = decay * ema + (1 - decay) * param``.
With ``use_for_validation=True`` the averaged weights are swapped into the model for
validation, test and predict, and the training weights swapped back afterwards, so
``val_*`` metrics (and a ``ModelCheckpoint`` monitoring them) measure the average,
while checkpoints still hold the training weights in ``state_dict`` and the average
in this callback's state (restored on ``fit(ckpt_path=...)``).

Buffers (BatchNorm running statistics) are not averaged: evaluation uses the live
ones. The average has each parameter's dtype and device. A step is detected by
``trainer.global_step`` changing, so gradient accumulation and manual optimization
work unchanged.
"""

from __future__ import annotations

from typing import Any

import torch

import fitkit


class EMA(fitkit.Callback):
    """An exponential moving average of a module's floating-point parameters.

    Args:
        decay: weight of the old average at each update, in ``[0, 1)``.
        every_n_steps: update after every this many optimizer steps.
        use_for_validation: evaluate (validate, test, predict) with the averaged weights.

    Example::

        >>> ema = EMA(decay=0.99)
        >>> trainer = fitkit.Trainer(max_epochs=1, callbacks=[ema], logger=False)
    """

    def __init__(self, decay: float = 0.999, every_n_steps: int = 1, use_for_validation: bool = True) -> None:
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay < 1:
            raise fitkit.MisconfigurationError(
                f"`decay={decay!r}` is not valid: it is the old average's weight. Expected a float in [0, 1)."
            )
        if isinstance(every_n_steps, bool) or not isinstance(every_n_steps, int) or every_n_steps < 1:
            raise fitkit.MisconfigurationError(
                f"`every_n_steps={every_n_steps!r}` is not valid: it counts optimizer steps. Expected an int >= 1."
            )
        self.decay = float(decay)
        self.every_n_steps = every_n_steps
        self.use_for_validation = use_for_validation
        self.ema: dict[str, torch.Tensor] = {}  # name -> average (the training weights while swapped)
        self.num_updates = 0
        self._module: torch.nn.Module | None = None  # the module the averages belong to
        self._params: list[torch.Tensor] = []  # its parameters, in the order of _averages
        self._averages: list[torch.Tensor] = []
        self._last_step = -1
        self._swapped = False
        self._pending: dict[str, torch.Tensor] | None = None  # loaded before the module was known

    # -- averaging ----------------------------------------------------------------------------
    def _bind(self, module: torch.nn.Module) -> None:
        """Pair each floating-point parameter with its average: the loaded one, the one kept, or a copy."""
        if self._swapped:
            self._swap()
        named = [(n, p) for n, p in module.named_parameters() if p.is_floating_point()]
        if self._pending is not None:
            start = self._pending
        elif module is self._module:
            start = self.averaged()
        else:
            start = {}
        self.ema = {
            n: (start[n].to(device=p.device, dtype=p.dtype).clone() if n in start else p.detach().clone())
            for n, p in named
        }
        self._module, self._params, self._averages = module, [p for _, p in named], list(self.ema.values())
        self._pending, self._swapped = None, False

    def averaged(self) -> dict[str, torch.Tensor]:
        """The averaged weights by parameter name (wherever they are right now)."""
        if self._pending is not None:
            return dict(self._pending)
        if self._swapped:  # mid-evaluation: the averages sit in the model
            return {n: p.detach() for n, p in zip(self.ema, self._params, strict=True)}
        return dict(self.ema)

    def on_fit_start(self, trainer: fitkit.Trainer, module: fitkit.Module) -> None:
        self._bind(module)
        self._last_step = trainer.global_step

    @torch.no_grad()
    def update(self) -> None:
        """Move every average towards its parameter: ``ema += (1 - decay) * (param - ema)``."""
        # One fused kernel per dtype/device for all tensors (what torch.optim.swa_utils uses).
        torch._foreach_lerp_(self._averages, self._params, 1.0 - self.decay)
        self.num_updates += 1

    def on_train_batch_end(
        self, trainer: fitkit.Trainer, module: fitkit.Module, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step != self._last_step:  # an optimizer step happened in this batch
            self._last_step = step
            if step % self.every_n_steps == 0:
                self.update()

    # -- evaluating with the average ---------------------------------------------------------------
    @torch.no_grad()
    def _swap(self) -> None:
        for param, average in zip(self._params, self._averages, strict=True):
            tmp = param.detach().clone()
            param.copy_(average)
            average.copy_(tmp)
        self._swapped = not self._swapped

    def _swap_in(self, trainer: fitkit.Trainer, module: fitkit.Module) -> None:
        if self._pending is not None:  # validate/test(ckpt_path=...) before any fit
            self._bind(module)
        if self.use_for_validation and module is self._module and not self._swapped:
            self._swap()

    def _swap_out(self, trainer: fitkit.Trainer, module: fitkit.Module) -> None:
        if self._swapped:
            self._swap()

    on_validation_start = on_test_start = on_predict_start = _swap_in
    on_validation_end = on_test_end = on_predict_end = _swap_out

    def on_exception(self, trainer: fitkit.Trainer, module: fitkit.Module, exception: BaseException) -> None:
        self._swap_out(trainer, module)  # never leave the averaged weights in a model that keeps training

    def copy_to(self, module: torch.nn.Module) -> None:
        """Load the averaged weights into ``module`` (e.g. before exporting it)."""
        averaged = self.averaged()
        with torch.no_grad():
            for name, param in module.named_parameters():
                if name in averaged:
                    param.copy_(averaged[name])

    # -- checkpoints -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "num_updates": self.num_updates, "ema": self.averaged()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.num_updates = int(state_dict.get("num_updates", 0))
        self._pending = dict(state_dict["ema"])
