"""What the ``"-true"`` formats share: a module, its inputs and new tensors in one dtype.

:class:`DtypePrecision` converts the module's parameters and buffers
(:meth:`~DtypePrecision.convert_module`), the floating-point tensors of every batch
(:meth:`~DtypePrecision.convert_input`), and makes its dtype torch's default dtype
while a step runs (:meth:`~DtypePrecision.forward_context`), so that a tensor the
step creates itself (``torch.randn(n)``) matches the module. ``"64-true"``
(:mod:`fitkit.precision.double`) and ``"16-true"``/``"bf16-true"``
(:mod:`fitkit.precision.half`) are its subclasses. Autocast and loss scaling live in
:mod:`fitkit.precision.amp`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from fitkit.precision.precision import Precision

_ATOMIC = (str, bytes, int, float, bool, type(None))


def convert_floats(batch: Any, dtype: torch.dtype) -> Any:
    """Return ``batch`` with each floating-point tensor in it cast to ``dtype``.

    Integer and boolean tensors (labels, masks, indices) and everything that is not a
    tensor stay as they are. Lists, tuples, namedtuples, mappings and dataclasses are
    walked.

    Example::

        >>> out = convert_floats({"x": torch.ones(2), "y": torch.tensor([1, 0])}, torch.float64)
        >>> out["x"].dtype, out["y"].dtype
        (torch.float64, torch.int64)
    """
    if isinstance(batch, torch.Tensor):
        return batch.to(dtype) if batch.is_floating_point() else batch
    if isinstance(batch, _ATOMIC):
        return batch
    if isinstance(batch, tuple):
        converted = [convert_floats(b, dtype) for b in batch]
        return type(batch)(*converted) if hasattr(batch, "_fields") else type(batch)(converted)
    if isinstance(batch, list):
        return [convert_floats(b, dtype) for b in batch]
    if isinstance(batch, Mapping):
        items = {k: convert_floats(v, dtype) for k, v in batch.items()}
        try:
            return type(batch)(items)  # type: ignore[call-arg]
        except TypeError:  # a Mapping type that cannot be built from a dict
            return items
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        changes = {f.name: convert_floats(getattr(batch, f.name), dtype) for f in dataclasses.fields(batch) if f.init}
        return dataclasses.replace(batch, **changes)
    return batch


class _DefaultDtype(contextlib.AbstractContextManager[None]):
    """Make ``dtype`` torch's default dtype inside the block (re-entrant: a stack of saved dtypes)."""

    __slots__ = ("_dtype", "_saved")

    def __init__(self, dtype: torch.dtype) -> None:
        self._dtype = dtype
        self._saved: list[torch.dtype] = []

    def __enter__(self) -> None:
        self._saved.append(torch.get_default_dtype())
        torch.set_default_dtype(self._dtype)

    def __exit__(self, *exc: object) -> None:
        torch.set_default_dtype(self._saved.pop())


class DtypePrecision(Precision):
    """Train everything in ``dtype``: parameters, buffers, floating inputs, new tensors.

    There is no autocast and no loss scaling: the optimizer updates the converted
    parameters in place, in ``dtype``.

    Example::

        >>> p = DtypePrecision(torch.float64)
        >>> p.convert_module(nn.Linear(2, 2)).weight.dtype
        torch.float64
    """

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self._default_dtype = _DefaultDtype(dtype)

    def convert_module(self, module: nn.Module) -> nn.Module:
        """Cast the module's floating-point parameters and buffers to ``dtype`` (in place)."""
        return module.to(dtype=self.dtype)

    def convert_input(self, batch: Any) -> Any:
        """Cast the batch's floating-point tensors to ``dtype``; leave the others alone."""
        return convert_floats(batch, self.dtype)

    def forward_context(self) -> contextlib.AbstractContextManager[Any]:
        """``dtype`` is torch's default dtype while a step runs, and the previous one after."""
        return self._default_dtype
