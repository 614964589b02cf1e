"""DDP pieces that need no second process: strategy selection, samplers, launch set-up."""

from __future__ import annotations

import os

import pytest
import torch
from torch.utils.data import DataLoader, RandomSampler, SequentialSampler, WeightedRandomSampler
from torch.utils.data.distributed import DistributedSampler

import fitkit as fk
from fitkit.strategies import DDPStrategy, ParallelStrategy, SingleDeviceStrategy
from fitkit.strategies.launchers import MultiprocessingLauncher, SubprocessScriptLauncher, find_free_port
from fitkit.trainer import data
from fitkit.trainer.plugins import select_strategy


@pytest.mark.parametrize(
    ("strategy", "devices", "kind", "launcher", "find_unused"),
    [
        ("auto", 1, SingleDeviceStrategy, None, None),
        ("auto", 2, DDPStrategy, SubprocessScriptLauncher, False),
        ("ddp", 3, DDPStrategy, SubprocessScriptLauncher, False),
        ("ddp_spawn", 2, DDPStrategy, MultiprocessingLauncher, False),
        ("ddp_find_unused_parameters_true", 2, DDPStrategy, SubprocessScriptLauncher, True),
    ],
)
def test_strategy_strings(strategy: str, devices: int, kind: type, launcher: type | None, find_unused: bool) -> None:
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        os.environ.pop(var, None)
    s = select_strategy("cpu", devices, strategy, "32-true")
    assert type(s) is kind
    assert s.world_size == devices and s.global_rank == 0
    assert type(getattr(s, "launcher", None)) is (launcher or type(None))
    if isinstance(s, DDPStrategy):
        assert s.ddp_kwargs["find_unused_parameters"] is find_unused


def test_num_nodes_and_user_instance_are_filled_in() -> None:
    s = fk.Trainer(accelerator="cpu", devices=2, num_nodes=2, strategy=DDPStrategy(static_graph=True)).strategy
    assert isinstance(s, ParallelStrategy) and s.world_size == 4 and s.num_processes == 2
    assert s.ddp_kwargs["static_graph"] is True
    t = fk.Trainer(accelerator="cpu", devices=2, sync_batchnorm=True)
    assert t.strategy.sync_batchnorm is True  # type: ignore[attr-defined]


def test_under_torchrun_ranks_come_from_the_environment() -> None:
    os.environ.update({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "1"})
    t = fk.Trainer(accelerator="cpu", devices="auto", num_nodes=2)
    assert isinstance(t.strategy, DDPStrategy) and t.strategy.launcher is None
    assert (t.world_size, t.global_rank, t.local_rank, t.node_rank, t.is_global_zero) == (4, 3, 1, 1, False)


def test_single_device_refuses_several_devices() -> None:
    with pytest.raises(fk.MisconfigurationError, match="strategy='single_device'"):
        fk.Trainer(accelerator="cpu", devices=2, strategy="single_device")


def test_collectives_are_identities_without_a_process_group() -> None:
    s = ParallelStrategy(parallel_devices=[torch.device("cpu")] * 2)
    t = torch.tensor([1.0, 2.0])
    assert torch.equal(s.reduce(t, "sum"), t)
    assert s.all_gather(t).shape == (1, 2)
    assert s.broadcast({"a": 1}) == {"a": 1}
    with pytest.raises(fk.MisconfigurationError, match="reduce_op"):
        s.reduce(t, "median")


def test_cpu_batches_are_not_walked_and_meta_batches_move() -> None:
    batch = {"x": torch.ones(2), "y": (torch.zeros(1), 3)}
    assert DDPStrategy(parallel_devices=[torch.device("cpu")] * 2).batch_to_device(batch) is batch
    moved = DDPStrategy(parallel_devices=[torch.device("meta")] * 2).batch_to_device(batch)
    assert moved["x"].device.type == "meta" and moved["y"][0].device.type == "meta" and moved["y"][1] == 3


def test_free_port_is_bindable() -> None:
    import socket

    port = find_free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


# -- samplers --------------------------------------------------------------------------------------------
def _indices(loader: DataLoader) -> list[int]:
    return [int(i) for batch in loader for i in batch]


def test_sequential_loader_stays_in_order_and_shards_interleave() -> None:
    loader = DataLoader(list(range(10)), batch_size=2)
    shards = [data.distributed_copy(loader, 2, r, train=True) for r in range(2)]
    assert all(isinstance(s.sampler, DistributedSampler) and not s.sampler.shuffle for s in shards)
    assert _indices(shards[0]) == [0, 2, 4, 6, 8] and _indices(shards[1]) == [1, 3, 5, 7, 9]
    assert shards[0].batch_size == 2


def test_random_loader_shuffles_with_one_seed_for_all_ranks_and_set_epoch() -> None:
    loader = DataLoader(list(range(12)), batch_size=3, shuffle=True)
    shards = [data.distributed_copy(loader, 2, r, train=True) for r in range(2)]
    assert all(s.sampler.shuffle for s in shards)
    first = [_indices(s) for s in shards]
    assert sorted(first[0] + first[1]) == list(range(12))  # disjoint, complete: one shared permutation
    for s in shards:
        data.set_epoch(s, 1)
    assert [_indices(s) for s in shards] != first


def test_evaluation_shards_are_not_padded() -> None:
    loader = DataLoader(list(range(5)), batch_size=2)
    train = [_indices(data.distributed_copy(loader, 2, r, train=True)) for r in range(2)]
    evaluation = [_indices(data.distributed_copy(loader, 2, r, train=False)) for r in range(2)]
    assert sum(map(len, train)) == 6  # DistributedSampler pads: every rank steps together
    assert evaluation == [[0, 2, 4], [1, 3]]


def test_batch_sampler_loader_is_sharded() -> None:
    from torch.utils.data import BatchSampler

    loader = DataLoader(list(range(8)), batch_sampler=BatchSampler(SequentialSampler(range(8)), 2, False))
    assert _indices(data.distributed_copy(loader, 2, 1, train=True)) == [1, 3, 5, 7]


def test_custom_sampler_is_left_alone_with_a_warning() -> None:
    loader = DataLoader(list(range(8)), sampler=WeightedRandomSampler([1.0] * 8, 8), batch_size=2)
    with pytest.warns(UserWarning, match="WeightedRandomSampler"):
        assert data.distributed_copy(loader, 2, 0, train=True) is loader
    own = DataLoader(list(range(8)), sampler=DistributedSampler(list(range(8)), 2, 0), batch_size=2)
    assert data.distributed_copy(own, 2, 0, train=True) is own
    replacement = DataLoader(list(range(8)), sampler=RandomSampler(range(8), replacement=True), batch_size=2)
    with pytest.warns(UserWarning, match="RandomSampler"):
        data.distributed_copy(replacement, 2, 0, train=True)


def test_loader_settings_survive_the_copy() -> None:
    loader = DataLoader(list(range(8)), batch_size=3, drop_last=True, collate_fn=lambda b: b)
    copy = data.distributed_copy(loader, 2, 0, train=True)
    assert copy.drop_last and copy.collate_fn is loader.collate_fn and copy.batch_size == 3
