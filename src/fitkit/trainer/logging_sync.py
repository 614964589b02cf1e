"""Reducing ``self.log(..., sync_dist=True)`` values across processes.

``logging.py`` decides what is logged and when it reduces; this module does the
cross-process part, in as few collectives as it can: one ``all_gather_object`` of
the names being reduced (so ranks that logged different names get an error that
says which, instead of waiting for each other forever), then one ``all_reduce`` per
kind of reduction for every name at once. Epoch means are weighted by batch size
across ranks (sum of value x size over sum of sizes), so ranks with uneven
evaluation shards count each sample once; a rank that logged nothing this epoch
takes part with a zero weight.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from fitkit.utilities.exceptions import FitkitRuntimeError

if TYPE_CHECKING:
    from fitkit.strategies.strategy import Strategy
    from fitkit.trainer.logging import _Entry


def check_same_names(strategy: Strategy, names: list[tuple[str, str]], where: str) -> None:
    """Raise on every rank if the ranks are about to reduce different names (or reductions)."""
    gather = getattr(strategy, "all_gather_object", None)
    if gather is None:
        return
    everyone: list[list[tuple[str, str]]] = gather(names)
    if all(theirs == names for theirs in everyone):
        return
    lines = [f"  rank {rank}: {[n for n, _ in theirs]}" for rank, theirs in enumerate(everyone)]
    raise FitkitRuntimeError(
        f"self.log(..., sync_dist=True) at {where}: the processes logged different names (or reduce_fx), "
        "so their values cannot be reduced together:\n" + "\n".join(lines) + "\nLog the same names with "
        "sync_dist=True on every process (log a placeholder where a rank has nothing), or drop sync_dist."
    )


def reduce_epoch(strategy: Strategy, entries: list[_Entry], where: str) -> list[tuple[_Entry, torch.Tensor]]:
    """The cross-rank epoch aggregate of each entry that some rank logged this epoch."""
    entries = sorted(entries, key=lambda e: e.key)
    check_same_names(strategy, [(e.key, e.reduce_fx) for e in entries], where)
    if not entries:
        return []
    device = strategy.root_device
    sums: list[float | torch.Tensor] = []  # two slots per entry: (numerator, weight or "has a value")
    maxes: list[float | torch.Tensor] = []
    mins: list[float | torch.Tensor] = []
    dtypes: list[torch.dtype] = []
    for e in entries:
        if e.values:
            e.compact()
        part = e.partial
        has = part is not None
        dtypes.append(part.dtype if has else torch.float32)  # type: ignore[union-attr]
        if e.reduce_fx == "mean":
            sums += [part if has else 0.0, float(e.partial_size)]  # type: ignore[list-item]
        elif e.reduce_fx == "sum":
            sums += [part if has else 0.0, float(has)]  # type: ignore[list-item]
        else:
            sums += [0.0, float(has)]
            empty = -math.inf if e.reduce_fx == "max" else math.inf  # the identity of the reduction
            (maxes if e.reduce_fx == "max" else mins).append(part if has else empty)  # type: ignore[arg-type]
    total = strategy.reduce(_pack(sums, device), "sum")
    top = strategy.reduce(_pack(maxes, device), "max") if maxes else None
    bottom = strategy.reduce(_pack(mins, device), "min") if mins else None
    out: list[tuple[_Entry, torch.Tensor]] = []
    i_max = i_min = 0
    for i, e in enumerate(entries):
        numerator, weight = total[2 * i], total[2 * i + 1]
        if e.reduce_fx == "max":
            value = top[i_max]  # type: ignore[index]
            i_max += 1
        elif e.reduce_fx == "min":
            value = bottom[i_min]  # type: ignore[index]
            i_min += 1
        elif e.reduce_fx == "mean":
            value = numerator / weight if weight > 0 else numerator
        else:
            value = numerator
        if weight > 0:
            out.append((e, value.to(dtypes[i])))
    return out


def reduce_step(strategy: Strategy, entries: list[_Entry], values: dict[str, Any], where: str) -> dict[str, Any]:
    """The latest step value of each entry, reduced over ranks with its ``reduce_fx`` (mean: unweighted)."""
    entries = sorted(entries, key=lambda e: e.key)
    check_same_names(strategy, [(e.key, e.reduce_fx) for e in entries], where)
    out: dict[str, Any] = {}
    for fx in ("mean", "sum", "max", "min"):
        group = [e for e in entries if e.reduce_fx == fx]
        if not group:
            continue
        local = [values.get(e.step_key, 0.0) for e in group]
        reduced = strategy.reduce(_pack(local, strategy.root_device), fx)
        for e, value, old in zip(group, reduced, local, strict=True):
            out[e.step_key] = value.to(old.dtype) if isinstance(old, torch.Tensor) else value
    return out


def _pack(values: list[Any], device: torch.device) -> torch.Tensor:
    return torch.stack([torch.as_tensor(v, dtype=torch.float64, device=device).reshape(()) for v in values])
