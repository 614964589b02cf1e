"""The Precision base class, which is also the ``"32-true"`` plug-in.

A Precision owns the number format: the autocast context around forward passes,
converting the module, scaling the loss for backward, the optimizer step (where a
gradient scaler would step and update), unscaling before clipping, and its own
state for checkpoints. It knows nothing of devices or processes (the Strategy's
job) or of the loop (the Trainer's).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

_NULL_CONTEXT = contextlib.nullcontext()


class Precision:
    """Full 32-bit precision: every method is the plain PyTorch operation.

    Subclass it to build another number format; the Trainer accepts an instance as
    ``Trainer(precision=MyPrecision())``.

    Example::

        >>> p = Precision()
        >>> with p.forward_context():
        ...     pass
    """

    name = "32-true"

    def convert_module(self, module: nn.Module) -> nn.Module:
        """Change the module's parameters to this format (no-op for 32-bit)."""
        return module

    def convert_input(self, batch: Any) -> Any:
        """Change a batch's floating-point tensors to this format (no-op for 32-bit).

        Strategies call it only when a subclass overrides it, so 32-bit pays nothing.
        """
        return batch

    def forward_context(self) -> contextlib.AbstractContextManager[Any]:
        """The context every forward pass (training, eval and predict steps) runs in."""
        return _NULL_CONTEXT

    def backward(self, loss: torch.Tensor) -> None:
        """Run backward on ``loss`` (a scaler would scale it first)."""
        loss.backward()

    def unscale_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring gradients back to their true scale before clipping (no-op here)."""

    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Callable[[], Any] | None = None) -> Any:
        """Step ``optimizer``; pass ``closure`` only when the optimizer needs one."""
        if closure is None:
            return optimizer.step()
        return optimizer.step(closure)

    def state_dict(self) -> dict[str, Any]:
        """State to checkpoint (a gradient scaler's, for example)."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
