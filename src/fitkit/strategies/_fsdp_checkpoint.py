"""Checkpoints of FSDP-sharded modules: gathering, scattering, and the sharded directory format.

Two formats (``FSDPStrategy(state_dict_type=...)``):

* ``"full"``: the usual fitkit checkpoint file. Weights are gathered to rank 0's CPU
  under their plain names; optimizer state is re-keyed from parameter names to the
  integer ids a single-device ``optimizer.state_dict()`` uses, so the file resumes
  single-device training too. Loading scatters a full state dict into the shards.
* ``"sharded"``: a directory holding a ``torch.distributed.checkpoint`` (DCP) save of
  ``{"state_dict": ..., "optimizer_0": ...}`` (each rank writes its shards) and
  ``meta.ckpt``, a plain fitkit checkpoint with everything else (progress, schedulers,
  callbacks...). :func:`sharded_to_full` turns one into a ``"full"`` file offline.

Only :mod:`fitkit.strategies.fsdp` uses this module; it never imports
``torch.distributed`` at import time.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from fitkit import checkpoint as ckpt_io
from fitkit.utilities.exceptions import FitkitRuntimeError, MisconfigurationError, invalid

if TYPE_CHECKING:
    from fitkit.strategies.parallel import ParallelStrategy

META_FILE = "meta.ckpt"
_SHARDED_KEY = "sharded_key"  # marks an optimizer state that is still on disk in DCP format
_DIR_KEY = "checkpoint_dir"


def _options(full: bool, strict: bool = True) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    if full:
        return StateDictOptions(full_state_dict=True, cpu_offload=True, strict=strict)
    return StateDictOptions(strict=strict)


def _clean(name: str) -> str:
    # torch.compile'd submodules add `_orig_mod` segments; checkpoints hold clean names.
    return ".".join(part for part in name.split(".") if part != "_orig_mod")


def _is_sharded(values: Any) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(v, DTensor) for v in values)


# -- weights -----------------------------------------------------------------------------------
def module_state(module: nn.Module, full: bool) -> dict[str, Any]:
    """Full tensors on rank 0 (``{}`` elsewhere) or this rank's DTensor shards. A collective."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    _reshard(module)
    state = get_model_state_dict(module, options=_options(full))
    return {_clean(k): v for k, v in state.items()} if full else state


def load_module_state(module: nn.Module, state_dict: Mapping[str, Any], strict: bool) -> None:
    """Scatter a full state dict, or load a sharded one, into ``module``'s shards. A collective."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    _reshard(module)
    # set_model_state_dict replaces the dict's values with shards: give it a copy, not the checkpoint's.
    state = dict(state_dict)
    full = not _is_sharded(state.values())
    set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=full, strict=strict))


def _reshard(module: nn.Module) -> None:
    # After a forward without backward (the root, and the last unit) the weights stay
    # gathered as plain tensors; loading must find every parameter as its shard.
    from torch.distributed.fsdp import FSDPModule

    for sub in module.modules():
        if isinstance(sub, FSDPModule):
            sub.reshard()


# -- optimizer state -------------------------------------------------------------------------------
def param_names(module: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The name of each of ``optimizer``'s parameters, in the order ``optimizer.state_dict()`` numbers them."""
    names = {id(p): _clean(n) for n, p in module.named_parameters()}
    out = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            if id(p) not in names:
                raise MisconfigurationError(
                    invalid(
                        "configure_optimizers()",
                        type(optimizer).__name__,
                        "it optimizes a tensor that is not a parameter of the sharded module",
                        "an optimizer over self.parameters() (or a subset), built in configure_optimizers",
                    )
                )
            out.append(names[id(p)])
    return out


def to_indexed(state: Mapping[str, Any]) -> dict[str, Any]:
    """A name-keyed optimizer state (as DCP's ``get_optimizer_state_dict`` returns) keyed like
    a single-device ``optimizer.state_dict()``: parameters numbered in group order."""
    index: dict[str, int] = {}
    groups = []
    for group in state["param_groups"]:
        ids = [index.setdefault(name, len(index)) for name in group["params"]]
        groups.append({**group, "params": ids})
    return {"state": {index[name]: value for name, value in state["state"].items()}, "param_groups": groups}


def _to_named(state: Mapping[str, Any], names: list[str]) -> dict[str, Any]:
    count = sum(len(g["params"]) for g in state["param_groups"])
    if count != len(names):
        raise MisconfigurationError(
            invalid(
                "ckpt_path",
                f"an optimizer state for {count} parameters",
                f"the optimizer now holds {len(names)} parameters",
                "the optimizer configure_optimizers() returned when the checkpoint was saved",
            )
        )
    return {
        "state": {names[i]: dict(value) for i, value in state["state"].items()},
        "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]],
    }


def optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer, full: bool) -> dict[str, Any]:
    """Full and single-device-keyed on rank 0 (``{}`` elsewhere), or name-keyed shards. A collective."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    state = get_optimizer_state_dict(module, optimizer, options=_options(full))
    if not full:
        return state  # type: ignore[no-any-return]
    return to_indexed(state) if state.get("param_groups") else {}


def load_optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer, state: Mapping[str, Any]) -> None:
    """Load a single-device optimizer state, a name-keyed one (full or sharded), or one
    still on disk in a sharded checkpoint. A collective."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
        set_optimizer_state_dict,
    )

    if _SHARDED_KEY in state:
        import torch.distributed.checkpoint as dcp

        target = get_optimizer_state_dict(module, optimizer)
        dcp.load({state[_SHARDED_KEY]: target}, checkpoint_id=state[_DIR_KEY])
        set_optimizer_state_dict(module, optimizer, target)
        return
    groups = state.get("param_groups") or []
    if groups and groups[0]["params"] and isinstance(groups[0]["params"][0], int):
        named = _to_named(state, param_names(module, optimizer))
    else:
        named = {"state": {k: dict(v) for k, v in state["state"].items()}, "param_groups": list(groups)}
    full = not any(_is_sharded(v.values()) for v in named["state"].values())
    set_optimizer_state_dict(module, optimizer, named, options=StateDictOptions(full_state_dict=full))


# -- the sharded directory ----------------------------------------------------------------------------
def save_sharded(strategy: ParallelStrategy, checkpoint: dict[str, Any], filepath: str | os.PathLike[str]) -> None:
    """Write ``checkpoint`` as a directory at ``filepath``: DCP shards from every rank plus ``meta.ckpt``.

    The shards go to a hidden sibling directory first; rank 0 renames it over
    ``filepath`` once every rank has written, so ``filepath`` is always a whole
    checkpoint (the old one, or the new one).
    """
    import torch.distributed.checkpoint as dcp

    final = Path(filepath)
    partial = final.parent / f".{final.name}.partial"
    if strategy.is_global_zero:
        if partial.exists():
            shutil.rmtree(partial)
        partial.mkdir(parents=True)
    strategy.barrier("fsdp_sharded_save_start")
    shards: dict[str, Any] = {"state_dict": checkpoint["state_dict"]}
    meta = {k: v for k, v in checkpoint.items() if k not in ("state_dict", "optimizer_states")}
    if "optimizer_states" in checkpoint:
        keys = [f"optimizer_{i}" for i in range(len(checkpoint["optimizer_states"]))]
        shards.update(zip(keys, checkpoint["optimizer_states"], strict=True))
        meta["optimizer_states"] = [{_SHARDED_KEY: key} for key in keys]
    meta["sharded"] = {"world_size": strategy.world_size}
    dcp.save(shards, checkpoint_id=partial)
    strategy.barrier("fsdp_sharded_save_written")
    if strategy.is_global_zero:
        ckpt_io.atomic_save(meta, partial / META_FILE)
        _replace_dir(partial, final)
    strategy.barrier("fsdp_sharded_save_done")


def _replace_dir(src: Path, dst: Path) -> None:
    old = dst.parent / f".{dst.name}.old"
    if dst.exists() or dst.is_symlink():
        if old.exists():
            shutil.rmtree(old)
        os.replace(dst, old)
    os.replace(src, dst)
    if old.exists():
        shutil.rmtree(old) if old.is_dir() else old.unlink()
    ckpt_io._fsync_dir(dst.parent)


def read_meta(checkpoint_dir: str | os.PathLike[str]) -> dict[str, Any]:
    meta_path = Path(checkpoint_dir) / META_FILE
    if not meta_path.is_file():
        raise FitkitRuntimeError(
            f"{os.fspath(checkpoint_dir)!r} is a directory but not a sharded fitkit checkpoint (no {META_FILE})."
        )
    return ckpt_io.load(meta_path, map_location="cpu")


def load_sharded(module: nn.Module, checkpoint_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint dict of a sharded directory, with the weights read into ``module``'s shard layout.

    Optimizer states stay on disk (markers) until :func:`load_optimizer_state` has an
    optimizer to read them into. A collective.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    checkpoint = read_meta(checkpoint_dir)
    checkpoint.pop("sharded", None)
    state = get_model_state_dict(module)
    dcp.load({"state_dict": state}, checkpoint_id=checkpoint_dir)
    checkpoint["state_dict"] = state
    if "optimizer_states" in checkpoint:
        where = os.fspath(checkpoint_dir)
        checkpoint["optimizer_states"] = [{**m, _DIR_KEY: where} for m in checkpoint["optimizer_states"]]
    return checkpoint


def sharded_to_full(checkpoint_dir: str | os.PathLike[str], output_path: str | os.PathLike[str]) -> None:
    """One process, no process group: a sharded directory -> a ``"full"`` checkpoint file."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    checkpoint = read_meta(checkpoint_dir)
    checkpoint.pop("sharded", None)
    output = Path(output_path)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".dcp", dir=output.parent)
    os.close(fd)
    try:
        dcp_to_torch_save(checkpoint_dir, tmp)
        data = torch.load(tmp, map_location="cpu", weights_only=True)
    finally:
        os.unlink(tmp)
    checkpoint["state_dict"] = data["state_dict"]
    if "optimizer_states" in checkpoint:
        checkpoint["optimizer_states"] = [to_indexed(data[m[_SHARDED_KEY]]) for m in checkpoint["optimizer_states"]]
    ckpt_io.check_plain(checkpoint)
    ckpt_io.atomic_save(checkpoint, output)
