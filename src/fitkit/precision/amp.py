"""The ``"16-mixed"`` and ``"bf16-mixed"`` plug-ins: autocast, and for float16 a gradient scaler.

Parameters stay float32 (the master weights the optimizer updates); inside every step
``torch.autocast`` runs the operations that gain from it in float16 or bfloat16.

bfloat16 has float32's range, so ``"bf16-mixed"`` is autocast and nothing else.
float16 gradients underflow, so ``"16-mixed"`` drives a ``torch.amp.GradScaler``
exactly as a hand-written AMP loop does::

    scaler.scale(loss).backward()     # backward()
    scaler.unscale_(optimizer)        # unscale_gradients(): once, before the hooks and clipping
    scaler.step(optimizer)            # optimizer_step(): skipped if a gradient is inf/NaN
    scaler.update()                   # see below

``scaler.update()`` runs when the next loss is scaled (and before the scaler's state is
read for a checkpoint), not straight after ``step``. For one optimizer that is the same
sequence as the loop above; for several optimizers stepped after one backward (manual
optimization) it keeps the scale fixed until every one of them has unscaled its
gradients, as the PyTorch AMP recipe for several optimizers requires.

Owns the scaler and its state in checkpoints. Does not own devices: the autocast device
type comes from the accelerator (see :mod:`fitkit.precision.select`).
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Callable
from typing import Any

import torch

from fitkit.precision.precision import Precision
from fitkit.utilities.exceptions import MisconfigurationError, invalid

_DTYPES = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}


def autocast_available(device_type: Any) -> bool:
    """Whether ``torch.autocast`` supports ``device_type`` (``"cpu"``, ``"cuda"``, ...).

    Example::

        >>> autocast_available("cpu"), autocast_available("gpu")
        (True, False)
    """
    if not isinstance(device_type, str):
        return False
    is_available = getattr(torch.amp, "is_autocast_available", None)
    try:
        if is_available is not None:
            return bool(is_available(device_type))
        # torch < 2.4 has no query: building the context refuses a device type it cannot autocast.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "CUDA is not available": a property of this machine, not the type
            torch.autocast(device_type)
        return True
    except RuntimeError:  # not a device type torch knows
        return False


_REQUIRES_CLOSURE: dict[type, bool] = {}


def _requires_closure(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``type(optimizer).step`` cannot run without a closure (LBFGS); cached per type."""
    kind, cache = type(optimizer), _REQUIRES_CLOSURE
    if kind not in cache:
        try:
            param = inspect.signature(kind.step).parameters.get("closure")
        except (TypeError, ValueError):
            param = None
        cache[kind] = param is not None and param.default is inspect.Parameter.empty
    return cache[kind]


def _has_grads(optimizer: torch.optim.Optimizer) -> bool:
    return any(p.grad is not None for group in optimizer.param_groups for p in group["params"])


class MixedPrecision(Precision):
    """Automatic mixed precision: autocast in float16 (with loss scaling) or bfloat16.

    The Trainer builds it for ``precision="16-mixed"`` or ``"bf16-mixed"`` (and the
    legacy ``16`` and ``"bf16"``); build it yourself to pass your own scaler.

    Args:
        precision: ``"16-mixed"`` or ``"bf16-mixed"``.
        device: the autocast device type: ``"cpu"``, ``"cuda"``, ``"mps"``, ...
        scaler: a ``torch.amp.GradScaler`` for ``"16-mixed"`` (default: a new one for
            ``device``). ``"bf16-mixed"`` takes none.

    Example::

        >>> import fitkit
        >>> scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
        >>> plugin = MixedPrecision("16-mixed", "cpu", scaler=scaler)
        >>> trainer = fitkit.Trainer(accelerator="cpu", precision=plugin, enable_progress_bar=False)
        >>> trainer.strategy.precision.scaler is scaler
        True
    """

    def __init__(self, precision: str, device: str, scaler: torch.amp.GradScaler | None = None) -> None:
        dtype = _DTYPES.get(precision) if isinstance(precision, str) else None
        if dtype is None:
            raise MisconfigurationError(
                invalid(
                    "precision",
                    precision,
                    "MixedPrecision autocasts to float16 or bfloat16",
                    "'16-mixed' or 'bf16-mixed'",
                )
            )
        if not autocast_available(device):
            raise MisconfigurationError(
                invalid(
                    "device", device, "torch.autocast has no such device type", "a device type such as 'cpu' or 'cuda'"
                )
            )
        if precision == "bf16-mixed" and scaler is not None:
            raise MisconfigurationError(
                invalid("scaler", scaler, "'bf16-mixed' keeps float32's range and scales no loss", "None")
            )
        if precision == "16-mixed" and scaler is None:
            scaler = _new_scaler(device)
        self.name = precision
        self.device = torch.device(device).type
        self.dtype = dtype
        self.scaler = scaler
        # Ids of optimizers whose gradients are unscaled (or stepped) since the last update:
        # unscale_gradients runs before the hooks and again from clip_gradients, only once counts.
        self._unscaled: set[int] = set()
        self._update_pending = False

    def forward_context(self) -> contextlib.AbstractContextManager[Any]:
        """``torch.autocast(device, dtype)``: a fresh one per step, so steps may nest."""
        return torch.autocast(self.device, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        """Backward on the scaled loss (``"16-mixed"``) or on the loss itself."""
        scaler = self.scaler
        if scaler is None:
            loss.backward()
            return
        if self._update_pending:
            self._update()
        scaler.scale(loss).backward()

    def unscale_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide ``optimizer``'s gradients by the scale, once per step (later calls are no-ops).

        Without gradients there is nothing to unscale (a closure has yet to make them):
        ``scaler.step`` unscales them itself then.
        """
        scaler = self.scaler
        if scaler is None or id(optimizer) in self._unscaled or not _has_grads(optimizer):
            return
        scaler.unscale_(optimizer)
        self._unscaled.add(id(optimizer))

    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Callable[[], Any] | None = None) -> Any:
        """Step through the scaler, which skips the step when a gradient is inf or NaN.

        A skipped step is normal while the scaler searches for its scale: nothing is
        raised, and the Trainer counts the step as a hand-written loop would.
        """
        scaler = self.scaler
        if scaler is None:
            return super().optimizer_step(optimizer, closure)
        result = None
        if closure is not None:
            if _requires_closure(optimizer):
                raise MisconfigurationError(
                    invalid(
                        "precision",
                        self.name,
                        f"torch.amp.GradScaler cannot step {type(optimizer).__name__}, whose step() re-evaluates "
                        "the loss through a closure",
                        "'bf16-mixed' or '32-true' with this optimizer, or an optimizer whose step() needs no closure",
                    )
                )
            result = closure()
        stepped = scaler.step(optimizer)
        self._unscaled.add(id(optimizer))
        self._update_pending = True
        return result if closure is not None else stepped

    def _update(self) -> None:
        assert self.scaler is not None
        self.scaler.update()
        self._unscaled.clear()
        self._update_pending = False

    def state_dict(self) -> dict[str, Any]:
        """The scaler's state (scale, growth tracker), or ``{}`` without a scaler."""
        if self.scaler is None:
            return {}
        if self._update_pending:
            self._update()
        return self.scaler.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the scaler; an empty dict (a checkpoint from another format) keeps it as it is."""
        if self.scaler is None or not state_dict:
            return
        self.scaler.load_state_dict(state_dict)
        self._unscaled.clear()
        self._update_pending = False


def _new_scaler(device: str) -> torch.amp.GradScaler:
    with warnings.catch_warnings():
        # torch warns and disables the scaler where the device is missing; we refuse instead.
        warnings.simplefilter("ignore")
        try:
            scaler = torch.amp.GradScaler(device)
        except (RuntimeError, AssertionError, ValueError) as exc:
            why = f"torch.amp.GradScaler({device!r}) failed: {exc}"
        else:
            if scaler.is_enabled():
                return scaler
            why = f"torch.amp.GradScaler is not available on {device!r} in this process"
    raise MisconfigurationError(invalid("precision", "16-mixed", why, "'bf16-mixed', '32-true', or a device with it"))
