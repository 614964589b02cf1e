"""Finding the run's dataloaders, counting their batches and iterating them.

Loaders come from the ``fit``/``validate``/... arguments, else the DataModule,
else the Module's own ``*_dataloader`` methods. Here their length is worked out
once (``limit_*_batches`` applied), the sampler is swapped for ``overfit_batches``,
DataLoader workers get seeds, and iteration marks the last batch even for loaders
without ``__len__``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any

from torch.utils.data import DataLoader, SequentialSampler

from fitkit.utilities.exceptions import MisconfigurationError, invalid
from fitkit.utilities.rank_zero import rank_zero_warn
from fitkit.utilities.seed import worker_init_function, workers_should_be_seeded


def resolve(explicit: Any, datamodule: Any, module: Any, hook: str) -> Any:
    """The loader(s) for ``hook`` (e.g. ``"train_dataloader"``): argument, DataModule, then Module."""
    if explicit is not None:
        return explicit
    for owner in (datamodule, module):
        if owner is None:
            continue
        fn = getattr(owner, hook, None)
        if callable(fn):
            return fn()
    return None


def as_list(loaders: Any) -> list[Any]:
    """One loader or a list/tuple of them -> a list."""
    if loaders is None:
        return []
    if isinstance(loaders, (list, tuple)):
        return list(loaders)
    return [loaders]


def has_len(loader: Any) -> bool:
    try:
        len(loader)
    except (TypeError, NotImplementedError):
        return False
    return True


def num_batches(loader: Any, limit: int | float, arg_name: str) -> int | float:
    """How many batches a run takes from ``loader`` under ``limit`` (``inf`` if unknown)."""
    if not has_len(loader):
        if isinstance(limit, float) and limit not in (0.0, 1.0):
            raise MisconfigurationError(
                invalid(
                    arg_name,
                    limit,
                    "a fraction needs a loader with __len__, and this one has none",
                    "an int batch count, 0.0 or 1.0",
                )
            )
        if isinstance(limit, int) or limit == 0.0:
            return int(limit)
        return math.inf
    length = len(loader)
    if isinstance(limit, int):
        return min(limit, length)
    count = int(length * limit)
    if limit > 0.0 and count == 0 and length > 0:
        raise MisconfigurationError(
            invalid(
                arg_name,
                limit,
                f"{limit} of {length} batches rounds down to none",
                f"a fraction >= {1 / length:.4g} or an int batch count",
            )
        )
    return count


def sequential_copy(loader: Any) -> Any:
    """A copy of a ``DataLoader`` that reads in order (for ``overfit_batches``)."""
    if not isinstance(loader, DataLoader) or isinstance(loader.sampler, SequentialSampler):
        return loader
    if loader.batch_sampler is not None and type(loader.batch_sampler).__name__ != "BatchSampler":
        rank_zero_warn("overfit_batches: the training loader has a custom batch_sampler, so it is used as is.")
        return loader
    rank_zero_warn("overfit_batches: the training loader shuffles; fitkit reads it in order instead.")
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        shuffle=False,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        generator=loader.generator,
        persistent_workers=loader.persistent_workers,
    )


def seed_workers(loader: Any) -> None:
    """Give DataLoader workers distinct reproducible seeds if ``seed_everything(workers=True)`` asked."""
    if (
        isinstance(loader, DataLoader)
        and loader.num_workers > 0
        and loader.worker_init_fn is None
        and workers_should_be_seeded()
    ):
        loader.worker_init_fn = worker_init_function


def with_last_flag(
    iterable: Iterable[Any], limit: int | float, iterator: Iterator[Any] | None = None, start: int = 0
) -> Iterator[tuple[int, Any, bool]]:
    """Yield ``(batch_idx, batch, is_last)`` for at most ``limit`` batches.

    When the loader's length is known, ``is_last`` is computed from the count; for
    an iterable without length, one batch is read ahead to find the end. A resumed
    epoch passes the ``iterator`` it already advanced past ``start`` batches.
    """
    if limit <= start:
        return
    sized = has_len(iterable)
    if iterator is None:
        iterator = iter(iterable)
    if limit != math.inf and sized:
        last = int(limit) - 1
        for batch_idx in range(start, int(limit)):
            try:
                batch = next(iterator)
            except StopIteration:
                return
            yield batch_idx, batch, batch_idx == last
        if len(iterable) == limit:  # type: ignore[arg-type]
            # Finish the iterator as a plain `for` loop would: RandomSampler draws from its
            # generator once more when exhausted, so stopping one call short would change
            # every later epoch's shuffle order (and break parity with a hand-written loop).
            next(iterator, None)
        return
    # No __len__: read one batch ahead to find the end. An int limit is only an upper
    # bound here, since the iterable may run out first (the last batch must still say so,
    # or an accumulation window would never step).
    try:
        current = next(iterator)
    except StopIteration:
        return
    batch_idx = start
    while batch_idx + 1 < limit:
        try:
            upcoming = next(iterator)
        except StopIteration:
            break
        yield batch_idx, current, False
        current = upcoming
        batch_idx += 1
    yield batch_idx, current, True


def skip_batches(iterator: Iterator[Any], count: int) -> int:
    """Advance a fresh DataLoader iterator past ``count`` batches; return how many it skipped.

    For a single-process ``DataLoader`` only the sampler's indices are drawn, so the
    skipped batches are never loaded; otherwise (workers, plain iterables) they are
    read and dropped, which is slower but gives the same position.
    """
    sampler_iter = getattr(iterator, "_sampler_iter", None)
    single_process = type(iterator).__name__ == "_SingleProcessDataLoaderIter" and sampler_iter is not None
    for skipped in range(count):
        try:
            if single_process:
                next(sampler_iter)  # type: ignore[arg-type]
                iterator._num_yielded += 1  # type: ignore[attr-defined]
            else:
                next(iterator)
        except StopIteration:
            return skipped
    return count
