"""Finding the run's dataloaders, counting their batches and iterating them.

Loaders come from the ``fit``/``validate``/... arguments, else the DataModule,
else the Module's own ``*_dataloader`` methods. Here their length is worked out
once (``limit_*_batches`` applied), the sampler is swapped for ``overfit_batches``
or for a distributed one (:func:`distribute`), DataLoader workers get seeds, and
iteration marks the last batch even for loaders without ``__len__``.

Distributed samplers keep the user's loader's order: a ``SequentialSampler`` stays in
order (``shuffle=False``, so a run on N processes sees the same global batches as one
process with an N times larger batch), a ``RandomSampler`` shuffles with a seed every
rank shares (``seed_everything``'s, else 0) and ``set_epoch`` each epoch. Training
shards are padded to equal length (DDP needs every rank to step together);
evaluation shards are not (:class:`UnpaddedDistributedSampler`), so no sample is
counted twice in a metric.
"""

from __future__ import annotations

import itertools
import math
import operator
import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import BatchSampler, DataLoader, IterableDataset, RandomSampler, SequentialSampler
from torch.utils.data.distributed import DistributedSampler

from fitkit.utilities.exceptions import FitkitTypeError, MisconfigurationError, invalid
from fitkit.utilities.rank_zero import rank_zero_warn
from fitkit.utilities.seed import _SEED_ENV, worker_init_function, workers_should_be_seeded

if TYPE_CHECKING:
    from fitkit.trainer.trainer import Trainer


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
    return _rebuild(loader, shuffle=False)


def _rebuild(loader: DataLoader[Any], **changes: Any) -> DataLoader[Any]:
    """A new ``DataLoader`` with ``loader``'s settings, except ``changes`` (sampler, shuffle...)."""
    kwargs: dict[str, Any] = {
        "batch_size": loader.batch_size,
        "num_workers": loader.num_workers,
        "collate_fn": loader.collate_fn,
        "pin_memory": loader.pin_memory,
        "drop_last": loader.drop_last,
        "timeout": loader.timeout,
        "worker_init_fn": loader.worker_init_fn,
        "multiprocessing_context": loader.multiprocessing_context,
        "generator": loader.generator,
        "persistent_workers": loader.persistent_workers,
        "pin_memory_device": loader.pin_memory_device,
    }
    if loader.num_workers > 0:
        kwargs["prefetch_factor"] = loader.prefetch_factor
    if hasattr(loader, "in_order"):
        kwargs["in_order"] = loader.in_order
    if "batch_sampler" in changes:  # batch_size, shuffle, sampler and drop_last are the batch sampler's
        for key in ("batch_size", "drop_last"):
            kwargs.pop(key)
    kwargs.update(changes)
    return DataLoader(loader.dataset, **kwargs)


class UnpaddedDistributedSampler(DistributedSampler[Any]):
    """A ``DistributedSampler`` for evaluation: rank ``r`` of ``n`` reads samples ``r, r+n, r+2n...``.

    Unlike ``DistributedSampler(drop_last=False)`` it never repeats samples to make the
    shards equal, so ranks may run different numbers of batches and every sample is
    evaluated exactly once.

    Example::

        >>> list(UnpaddedDistributedSampler(range(5), num_replicas=2, rank=1, shuffle=False))
        [1, 3]
    """

    def __init__(self, dataset: Any, num_replicas: int, rank: int, shuffle: bool = False, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
        self.total_size = len(dataset)
        self.num_samples = len(range(rank, self.total_size, num_replicas))

    def __iter__(self) -> Iterator[Any]:
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            indices = torch.randperm(self.total_size, generator=g).tolist()
        else:
            indices = list(range(self.total_size))
        return iter(indices[self.rank : self.total_size : self.num_replicas])


def distribute(trainer: Trainer, loader: Any, train: bool) -> Any:
    """``loader`` as this process should read it: a distributed sampler put in where the
    run has several processes and ``trainer.use_distributed_sampler``, then the
    strategy's own :meth:`~fitkit.strategies.Strategy.process_dataloader`."""
    check_loader(trainer, loader, train)
    strategy = trainer.strategy
    if trainer.use_distributed_sampler and strategy.world_size > 1:
        loader = distributed_copy(loader, strategy.world_size, strategy.global_rank, train)
    return strategy.process_dataloader(loader)


def check_loader(trainer: Trainer, loader: Any, train: bool) -> None:
    """Refuse, once at set-up, a loader that cannot be read: not iterable, or one that is known
    never to end (``itertools.count``/``cycle``/``repeat``) with nothing else to stop the run.

    A generator or ``IterableDataset`` that never ends cannot be told from a long one;
    such a loader runs until ``max_steps``, ``max_time`` or an int ``limit_*_batches``.
    """
    from fitkit.trainer.state import TrainerFn

    fn = trainer.state.fn
    arg = "train_dataloaders" if train else "val_dataloaders" if fn == TrainerFn.FITTING else "dataloaders"
    stage = str(getattr(fn, "value", ""))
    kind = "train" if train else "val" if fn in (TrainerFn.FITTING, TrainerFn.VALIDATING) else stage
    if not (hasattr(type(loader), "__iter__") or hasattr(type(loader), "__getitem__")):
        raise FitkitTypeError(
            invalid(arg, _short(loader), "it is not iterable", "a DataLoader or another iterable of batches")
        )
    endless = isinstance(loader, (itertools.count, itertools.cycle)) or (
        isinstance(loader, itertools.repeat) and operator.length_hint(loader, -1) == -1
    )
    if not endless or isinstance(trainer.limits.get(kind), int):
        return
    if train and (trainer.max_steps != -1 or trainer.max_time is not None):
        return
    stops = "max_steps=N, max_time or an int limit_train_batches" if train else f"an int limit_{kind}_batches"
    raise MisconfigurationError(
        invalid(
            arg,
            _short(loader),
            "it never ends, so "
            + ("an epoch never ends and nothing stops training" if train else "the loop never ends"),
            f"a finite loader, or {stops}",
        )
    )


def _short(value: Any) -> Any:
    """``value`` itself when its repr is short, else its type's name (error path only)."""
    return value if len(repr(value)) <= 40 and " at 0x" not in repr(value) else type(value).__name__


_STEPS = frozenset({"training_step", "validation_step", "test_step", "predict_step"})


def note_batch_without_tensors(exc: BaseException, fx: str | None, batch: Any) -> None:
    """On the error path only: when a step failed with a ``TypeError`` on a batch that holds
    no tensor at all (say, a list of str), add a note saying so to the user's exception."""
    if fx not in _STEPS or not isinstance(exc, TypeError) or _holds_tensor(batch, 0):
        return
    if hasattr(exc, "add_note"):  # Python 3.11+
        exc.add_note(
            f"fitkit: the batch given to {fx} holds no tensor ({_describe(batch)}); strategies move and "
            "precisions convert tensors only. Make the loader yield tensors (the dataset's __getitem__ or "
            "the DataLoader's collate_fn), or convert the batch in the step."
        )


def _holds_tensor(batch: Any, depth: int) -> bool:
    if isinstance(batch, torch.Tensor):
        return True
    if depth > 4 or isinstance(batch, (str, bytes)):
        return False
    if isinstance(batch, dict):
        batch = list(batch.values())
    if isinstance(batch, (list, tuple)):
        return any(_holds_tensor(b, depth + 1) for b in batch[:16])
    return callable(getattr(batch, "to", None))  # an object that moves itself counts


def _describe(batch: Any) -> str:
    if isinstance(batch, (list, tuple)) and batch:
        kinds = sorted({type(b).__name__ for b in batch})
        return f"a {type(batch).__name__} of {len(batch)} {'/'.join(kinds)}"
    return f"a {type(batch).__name__}"


def distributed_copy(loader: Any, num_replicas: int, rank: int, train: bool) -> Any:
    """A copy of a ``DataLoader`` that reads rank ``rank``'s share, in the user's order (see the module doc)."""
    if not isinstance(loader, DataLoader) or isinstance(loader.dataset, IterableDataset):
        return loader  # an iterable shards itself (fitkit cannot tell how)
    batch_sampler = loader.batch_sampler
    plain_batches = batch_sampler is None or type(batch_sampler) is BatchSampler
    sampler = batch_sampler.sampler if loader.batch_size is None and plain_batches else loader.sampler  # type: ignore[union-attr]
    if isinstance(sampler, DistributedSampler) or isinstance(getattr(sampler, "sampler", None), DistributedSampler):
        return loader  # the user sharded it already
    shuffle = _shuffles(sampler)
    if shuffle is None or not plain_batches:
        what = type(batch_sampler if not plain_batches else sampler).__name__
        rank_zero_warn(
            f"The {'training' if train else 'evaluation'} loader uses its own {what}, which fitkit leaves as it is: "
            "every process will read the same samples. Shard it yourself (a DistributedSampler) or pass "
            "Trainer(use_distributed_sampler=False) to silence this."
        )
        return loader
    seed = int(os.environ.get(_SEED_ENV, "0"))
    dataset = loader.dataset
    if train:
        new: DistributedSampler[Any] = DistributedSampler(
            dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed
        )
    else:
        new = UnpaddedDistributedSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed)
    if loader.batch_size is None:
        assert batch_sampler is not None
        bs: Any = batch_sampler
        return _rebuild(loader, batch_sampler=BatchSampler(new, bs.batch_size, bs.drop_last))
    return _rebuild(loader, sampler=new, shuffle=False)


def _shuffles(sampler: Any) -> bool | None:
    """Whether a stock sampler shuffles; None for anything fitkit should not replace."""
    if type(sampler) is SequentialSampler:
        return False
    if type(sampler) is RandomSampler and not sampler.replacement and sampler._num_samples is None:
        return True
    return None


def set_epoch(loader: Any, epoch: int) -> None:
    """Tell the loader's sampler (and batch sampler) which epoch starts, for samplers that ask."""
    for owner in (getattr(loader, "sampler", None), getattr(getattr(loader, "batch_sampler", None), "sampler", None)):
        fn = getattr(owner, "set_epoch", None)
        if callable(fn):
            fn(epoch)


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
