"""Moving nested batches to a device and finding their batch size.

A batch may be a tensor or any nesting of lists, tuples, namedtuples, mappings
and dataclasses; objects with a ``to(device)`` method are moved too. Nothing
else is touched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

_ATOMIC = (str, bytes, int, float, bool, type(None))


def move_data_to_device(batch: Any, device: torch.device, non_blocking: bool = False) -> Any:
    """Return ``batch`` with every tensor in it on ``device``.

    ``non_blocking`` goes to tensor copies only (objects with their own ``to`` get
    ``to(device)``). Use it for host-to-device copies: a non-blocking copy back to the
    host may be read before it has landed.

    Example::

        >>> move_data_to_device({"x": torch.ones(2)}, torch.device("cpu"))["x"].device
        device(type='cpu')
    """
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=non_blocking)
    if isinstance(batch, _ATOMIC):
        return batch
    if isinstance(batch, tuple):
        moved = [move_data_to_device(b, device, non_blocking) for b in batch]
        return type(batch)(*moved) if hasattr(batch, "_fields") else type(batch)(moved)
    if isinstance(batch, list):
        return [move_data_to_device(b, device, non_blocking) for b in batch]
    if isinstance(batch, Mapping):
        items = {k: move_data_to_device(v, device, non_blocking) for k, v in batch.items()}
        try:
            return type(batch)(items)  # type: ignore[call-arg]
        except TypeError:  # a Mapping type that cannot be built from a dict
            return items
    if dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        changes = {
            f.name: move_data_to_device(getattr(batch, f.name), device, non_blocking)
            for f in dataclasses.fields(batch)
            if f.init
        }
        return dataclasses.replace(batch, **changes)
    to = getattr(batch, "to", None)
    if callable(to):
        return to(device)
    return batch


def extract_batch_size(batch: Any) -> int:
    """The size of the first dimension of the first tensor found in ``batch`` (1 if none)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim > 0 else 1
    if isinstance(batch, (list, tuple)):
        for b in batch:
            size = _find_batch_size(b)
            if size is not None:
                return size
    elif isinstance(batch, Mapping):
        for b in batch.values():
            size = _find_batch_size(b)
            if size is not None:
                return size
    elif dataclasses.is_dataclass(batch) and not isinstance(batch, type):
        for f in dataclasses.fields(batch):
            size = _find_batch_size(getattr(batch, f.name))
            if size is not None:
                return size
    return 1


def _find_batch_size(batch: Any) -> int | None:
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim > 0 else 1
    if isinstance(batch, (list, tuple, Mapping)) or dataclasses.is_dataclass(batch):
        if isinstance(batch, (str, bytes)):
            return None
        return extract_batch_size(batch)
    return None
