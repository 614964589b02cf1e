"""Fully sharded data parallel training on PyTorch's ``fully_shard`` (FSDP2).

:class:`FSDPStrategy` shards every parameter, gradient and optimizer state across
the processes: each rank keeps ``1/world_size`` of each tensor as a ``DTensor``
shard and all-gathers a layer's full weights just before the layer runs. What it
owns: which submodules are sharded as units (``auto_wrap_policy``), the
``fully_shard`` options, running the step methods through the root module's
forward (so its hooks gather the weights), ``no_sync`` for gradient accumulation,
and the conversion between sharded state and checkpoints (in
``fitkit.strategies._fsdp_checkpoint``). Processes, ranks and collectives are
:class:`~fitkit.strategies.parallel.ParallelStrategy`'s.

The module is sharded in :meth:`FSDPStrategy.setup_module`, before
``configure_optimizers`` runs, so the optimizer is built over the shards.
``torch.distributed`` is imported only once a method needs it.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from fitkit.accelerators.accelerator import Accelerator
from fitkit.precision.precision import Precision
from fitkit.strategies import _fsdp_checkpoint as ckpt
from fitkit.strategies.parallel import DEFAULT_TIMEOUT, ParallelStrategy
from fitkit.utilities.exceptions import FitkitRuntimeError, FitkitTypeError, MisconfigurationError, invalid

if TYPE_CHECKING:
    from torch.distributed.fsdp import MixedPrecisionPolicy

STATE_DICT_TYPES = ("full", "sharded")
STEP_METHODS = ("training_step", "validation_step", "test_step", "predict_step")
_NULL_CONTEXT = contextlib.nullcontext()

WrapPolicy = set[type[nn.Module]] | list[type[nn.Module]] | tuple[type[nn.Module], ...] | Callable[[nn.Module], bool]


class FSDPStrategy(ParallelStrategy):
    """One process per device; parameters, gradients and optimizer state sharded with ``fully_shard``.

    Args:
        accelerator, precision, parallel_devices, num_nodes, process_group_backend, timeout:
            as for :class:`~fitkit.strategies.parallel.ParallelStrategy`.
        auto_wrap_policy: which submodules become their own sharding unit (gathered
            and freed one at a time, which is what saves memory): a set of module
            classes (e.g. ``{TransformerBlock}``) or a function ``module -> bool``.
            None shards the root module only (every weight in one unit).
        mixed_precision: a ``torch.distributed.fsdp.MixedPrecisionPolicy`` (the dtype
            weights are gathered in for compute, the dtype gradients are reduced in).
        reshard_after_forward: free the gathered weights after each unit's forward
            (``True``, least memory), keep them until backward (``False``), or reshard
            to groups of this many ranks (an ``int``); passed to ``fully_shard``.
        cpu_offload: keep the shards (and the optimizer step) on the CPU; ``True`` or a
            ``torch.distributed.fsdp.CPUOffloadPolicy``.
        state_dict_type: ``"full"`` writes one ordinary checkpoint file from rank 0 with
            the whole, unsharded weights and optimizer state, which loads into
            single-device training; ``"sharded"`` writes a directory in
            ``torch.distributed.checkpoint`` format, each rank its own shards, which loads
            back into FSDP with the same number of processes (see ``docs/fsdp.md``).
        **fully_shard_kwargs: any other ``fully_shard`` argument (``shard_placement_fn``...).

    Example::

        >>> import fitkit
        >>> trainer = fitkit.Trainer(accelerator="cpu", devices=2, strategy=FSDPStrategy(auto_wrap_policy={nn.Linear}))
        >>> trainer.strategy.world_size
        2
    """

    name = "fsdp"

    def __init__(
        self,
        accelerator: Accelerator | None = None,
        precision: Precision | None = None,
        *,
        parallel_devices: list[torch.device] | None = None,
        num_nodes: int = 1,
        process_group_backend: str | None = None,
        timeout: datetime.timedelta = DEFAULT_TIMEOUT,
        auto_wrap_policy: WrapPolicy | None = None,
        mixed_precision: MixedPrecisionPolicy | None = None,
        reshard_after_forward: bool | int = True,
        cpu_offload: Any = False,
        state_dict_type: str = "full",
        **fully_shard_kwargs: Any,
    ) -> None:
        import torch.distributed.fsdp as fsdp

        if not hasattr(fsdp, "fully_shard"):
            raise MisconfigurationError(
                invalid(
                    "strategy",
                    "fsdp",
                    f"FSDPStrategy is built on torch.distributed.fsdp.fully_shard (FSDP2), which torch "
                    f"{torch.__version__} does not have",
                    "torch >= 2.6, or strategy='ddp'",
                )
            )
        super().__init__(
            accelerator,
            precision,
            parallel_devices=parallel_devices,
            num_nodes=num_nodes,
            process_group_backend=process_group_backend,
            timeout=timeout,
        )
        self._wrap = _check_wrap_policy(auto_wrap_policy)
        self.auto_wrap_policy = auto_wrap_policy
        self.mixed_precision = _check_mixed_precision(mixed_precision)
        if not isinstance(reshard_after_forward, (bool, int)) or (
            not isinstance(reshard_after_forward, bool) and reshard_after_forward < 1
        ):
            raise MisconfigurationError(
                invalid(
                    "reshard_after_forward",
                    reshard_after_forward,
                    "it says whether (or to how many ranks) weights are resharded after forward",
                    "True, False or an int >= 1",
                )
            )
        self.reshard_after_forward = reshard_after_forward
        self.cpu_offload = _check_cpu_offload(cpu_offload)
        if state_dict_type not in STATE_DICT_TYPES:
            raise MisconfigurationError(
                invalid("state_dict_type", state_dict_type, "no such checkpoint format", f"one of {STATE_DICT_TYPES}")
            )
        self.state_dict_type = state_dict_type
        self.fully_shard_kwargs = fully_shard_kwargs
        self._sharded = False  # True once setup_module applied fully_shard

    # -- set-up ---------------------------------------------------------------------------
    def setup_module(self, module: nn.Module) -> nn.Module:
        """Place ``module``, shard the ``auto_wrap_policy`` submodules (innermost first), then the root.

        The module object stays the same (``fully_shard`` changes its class in place),
        so hooks and ``isinstance`` checks keep working. With one process nothing is sharded.
        """
        fsdp = sys.modules.get("torch.distributed.fsdp")  # no module is sharded before it loads
        if fsdp is not None and isinstance(module, fsdp.FSDPModule):
            if module is self.module and self._sharded:
                return module  # a later stage (validate/test/predict) of the same Trainer: already sharded
            raise MisconfigurationError(
                invalid(
                    "model",
                    type(module).__name__,
                    "it is already sharded with fully_shard, and FSDPStrategy shards the module itself",
                    "an unsharded Module (choose the units with auto_wrap_policy)",
                )
            )
        module = super().setup_module(module)
        self._sharded = False
        if not self.distributed_ready:
            return module
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(self.root_device.type, (self.world_size,))
        options: dict[str, Any] = {"mesh": mesh, "reshard_after_forward": self.reshard_after_forward}
        if self.mixed_precision is not None:
            options["mp_policy"] = self.mixed_precision
        if self.cpu_offload is not None and self.root_device.type != "cpu":
            # On CPU devices the shards already live in host memory (and pinning needs CUDA).
            options["offload_policy"] = self.cpu_offload
        options.update(self.fully_shard_kwargs)
        # named_modules() lists parents before children: reversed, inner units shard first,
        # as fully_shard requires for nesting.
        for name, sub in reversed(list(module.named_modules())):
            if name and self._wrap(sub):
                fully_shard(sub, **options)
        fully_shard(module, **options)
        _allocate_outside_inference_mode(module)
        self._sharded = True
        self.module = module
        return module

    def teardown(self) -> None:
        """Release the device, but keep the process group: the shards' device mesh is built on it.

        The module stays sharded after ``fit``, so ``trainer.save_checkpoint`` and later
        ``validate``/``test``/``predict`` calls of the same Trainer still gather its weights.
        A group fitkit started is destroyed when the process exits.
        """
        if self._sharded and self._owns_process_group:
            self._owns_process_group = False
            _destroy_group_at_exit()
        super().teardown()

    def _gathers(self, module: nn.Module) -> bool:
        """Whether ``module``'s state must go through the sharded paths (and the group is there for it)."""
        if not self._sharded or module is not self.module:
            return False
        if not self.distributed_ready:
            raise FitkitRuntimeError(
                "The FSDP-sharded module's state cannot be gathered or loaded: the process group it was "
                "sharded over has been destroyed. Keep the group until the last save or load (fitkit destroys "
                "the one it started at process exit), or save checkpoints during fit (ModelCheckpoint)."
            )
        return True

    # -- the step ---------------------------------------------------------------------------
    def step_method(self, module: nn.Module, name: str) -> Callable[..., Any]:
        """``module.<name>`` run as the root module's forward, so that FSDP's hooks gather the weights.

        A step that only calls ``self(x)`` would work without this; one that calls
        ``self.encoder(x)`` or reads ``self.head.weight`` directly needs the root's
        hooks to have run first.
        """
        method = getattr(module, name)
        if not self._sharded or name not in STEP_METHODS:
            return method  # type: ignore[no-any-return]
        return _RootForwardRedirect(module, method)

    def no_sync(self) -> contextlib.AbstractContextManager[Any]:
        """Keep this micro-batch's gradients local and unsharded; they are reduced on the last one."""
        if not self._sharded or self.module is None:
            return _NULL_CONTEXT
        return _no_gradient_sync(self.module)

    # -- checkpoints ------------------------------------------------------------------------
    def module_state_dict(self, module: nn.Module) -> dict[str, Any]:
        """Full tensors on rank 0's CPU (``"full"``; other ranks get ``{}``), or this rank's shards (``"sharded"``).

        A collective: every rank must call it.
        """
        if not self._gathers(module):
            return super().module_state_dict(module)
        return ckpt.module_state(module, full=self.state_dict_type == "full")

    def load_module_state_dict(self, module: nn.Module, state_dict: Mapping[str, Any], strict: bool = True) -> None:
        """Load a full state dict (any fitkit checkpoint) or a sharded one into the shards. Every rank calls it."""
        if not self._gathers(module):
            super().load_module_state_dict(module, state_dict, strict)
            return
        ckpt.load_module_state(module, state_dict, strict)

    def optimizer_state_dict(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """``"full"``: keyed like a single-device ``optimizer.state_dict()`` (rank 0; others ``{}``).
        ``"sharded"``: keyed by parameter name, with this rank's shards. A collective."""
        if self.module is None or not self._gathers(self.module):
            return super().optimizer_state_dict(optimizer)
        return ckpt.optimizer_state(self.module, optimizer, full=self.state_dict_type == "full")

    def load_optimizer_state_dict(self, optimizer: torch.optim.Optimizer, state_dict: Mapping[str, Any]) -> None:
        """Load a single-device optimizer state, a sharded one, or one still on disk in a sharded checkpoint."""
        if self.module is None or not self._gathers(self.module):
            super().load_optimizer_state_dict(optimizer, state_dict)
            return
        ckpt.load_optimizer_state(self.module, optimizer, state_dict)

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: str | os.PathLike[str]) -> None:
        """``"full"``: rank 0 writes one file atomically. ``"sharded"``: every rank writes its shards
        into a directory at ``filepath`` (see :func:`fitkit.strategies._fsdp_checkpoint.save_sharded`)."""
        if self.state_dict_type == "full" or self.module is None or not self._gathers(self.module):
            super().save_checkpoint(checkpoint, filepath)
            return
        ckpt.save_sharded(self, checkpoint, filepath)

    def load_checkpoint(self, filepath: str | os.PathLike[str]) -> dict[str, Any]:
        """Read a checkpoint file, or a sharded checkpoint directory (weights read into the shards now,
        optimizer state when the optimizers exist)."""
        if os.path.isdir(filepath):
            if self.module is None or not self._gathers(self.module):
                raise MisconfigurationError(
                    invalid(
                        "ckpt_path",
                        os.fspath(filepath),
                        "a sharded checkpoint loads only into a sharded module (several processes)",
                        "FSDPStrategy on as many processes as saved it, or a file made with "
                        "fitkit.strategies.fsdp.sharded_to_full_checkpoint",
                    )
                )
            return ckpt.load_sharded(self.module, filepath)
        return super().load_checkpoint(filepath)


def sharded_to_full_checkpoint(checkpoint_dir: str | os.PathLike[str], output_path: str | os.PathLike[str]) -> None:
    """Convert a sharded FSDP checkpoint directory into one ordinary fitkit checkpoint file.

    Runs in one process, without a process group. The file loads with
    ``Module.load_from_checkpoint`` and resumes single-device training
    (``Trainer(...).fit(model, ckpt_path=output_path)``).

    Example::

        sharded_to_full_checkpoint("checkpoints/epoch=1-step=20.ckpt", "model.ckpt")
        model = MyModel.load_from_checkpoint("model.ckpt")
    """
    ckpt.sharded_to_full(checkpoint_dir, output_path)


class _RootForwardRedirect:
    """Calls ``module(*args)`` with ``forward`` swapped for the step method for the length of the call.

    The swap is undone as soon as the root's pre-forward hooks have run, so a
    ``self(x)`` inside the step reaches the real ``forward``. It writes the
    instance ``__dict__`` directly: ``nn.Module.__setattr__`` costs more per step.
    """

    __slots__ = ("method", "module")

    def __init__(self, module: nn.Module, method: Callable[..., Any]) -> None:
        self.module = module
        self.method = method

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        attrs = self.module.__dict__
        had_forward = "forward" in attrs  # a compiled forward (fitkit.utilities.compile) lives there
        original = attrs.get("forward")
        method = self.method

        def restore() -> None:
            if had_forward:
                attrs["forward"] = original
            else:
                attrs.pop("forward", None)

        def run_step(*a: Any, **k: Any) -> Any:
            restore()
            return method(*a, **k)

        attrs["forward"] = run_step
        try:
            return self.module(*args, **kwargs)
        finally:
            if attrs.get("forward") is run_step:
                restore()


def _allocate_outside_inference_mode(module: nn.Module) -> None:
    """Gather and free every unit once, here, so FSDP allocates its gathered-weight buffers as normal tensors.

    FSDP2 allocates them at the first gather and reuses them after; allocated under
    ``torch.inference_mode`` (a validation sanity check before training, say) they
    would be inference tensors, which the next training step may not write to.
    """
    from torch.distributed.fsdp import FSDPModule

    with torch.inference_mode(False), torch.no_grad():
        units = [m for m in module.modules() if isinstance(m, FSDPModule)]
        for unit in units:
            unit.unshard()
        for unit in units:
            unit.reshard()


_EXIT_HOOK: list[bool] = []


def _destroy_group_at_exit() -> None:
    if _EXIT_HOOK:
        return
    _EXIT_HOOK.append(True)

    def destroy() -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()

    atexit.register(destroy)


@contextlib.contextmanager
def _no_gradient_sync(module: nn.Module) -> Iterator[None]:
    module.set_requires_gradient_sync(False)  # type: ignore[operator]
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)  # type: ignore[operator]


def _check_wrap_policy(policy: Any) -> Callable[[nn.Module], bool]:
    if policy is None:
        return lambda m: False
    if isinstance(policy, (set, frozenset, list, tuple)):
        bad = [c for c in policy if not (isinstance(c, type) and issubclass(c, nn.Module))]
        if bad:
            raise FitkitTypeError(
                invalid(
                    "auto_wrap_policy",
                    policy,
                    f"{bad[0]!r} is not a torch.nn.Module subclass",
                    "a set of nn.Module classes (e.g. {nn.TransformerEncoderLayer}) or a function module -> bool",
                )
            )
        classes = tuple(policy)
        return lambda m: isinstance(m, classes)
    if isinstance(policy, type) and issubclass(policy, nn.Module):
        raise FitkitTypeError(
            invalid("auto_wrap_policy", policy, "it must be a collection of classes", f"{{{policy.__name__}}}")
        )
    if callable(policy):
        return policy  # type: ignore[no-any-return]
    raise FitkitTypeError(
        invalid(
            "auto_wrap_policy",
            policy,
            "fitkit cannot tell which submodules to shard from it",
            "a set of nn.Module classes, a function module -> bool, or None",
        )
    )


def _check_mixed_precision(policy: Any) -> Any:
    if policy is None:
        return None
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if not isinstance(policy, MixedPrecisionPolicy):
        raise FitkitTypeError(
            invalid(
                "mixed_precision",
                policy,
                "FSDP2 takes its dtypes from a MixedPrecisionPolicy",
                "torch.distributed.fsdp.MixedPrecisionPolicy(param_dtype=..., reduce_dtype=...) or None",
            )
        )
    return policy


def _check_cpu_offload(value: Any) -> Any:
    if value is False or value is None:
        return None
    from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy

    if value is True:
        return CPUOffloadPolicy()
    if isinstance(value, OffloadPolicy):
        return value
    raise FitkitTypeError(
        invalid("cpu_offload", value, "it says whether shards live on the CPU", "True, False or a CPUOffloadPolicy")
    )
