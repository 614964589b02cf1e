"""Freeze part of a model and unfreeze it later: ``BaseFinetuning`` and ``BackboneFinetuning``.

This file owns freezing (``requires_grad=False``; frozen BatchNorm layers kept in eval
mode, so they normalize with their stored statistics and do not update them),
unfreezing into a new optimizer parameter group, the backbone's LR schedule, and
the state that lets a resumed run rebuild the added parameter groups before the
optimizer's saved state is put back.

Resume order it relies on (the Trainer's): ``setup`` (freeze) -> ``on_load_checkpoint``
(the saved optimizer state is trimmed to the groups ``configure_optimizers`` builds,
and the full state kept) -> ``load_state_dict`` -> ``configure_optimizers`` ->
optimizer state restored -> ``on_fit_start`` (the added groups are re-added and the
full optimizer state loaded).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from fitkit.callbacks.callback import Callback
from fitkit.utilities.exceptions import FitkitRuntimeError, FitkitTypeError, MisconfigurationError, invalid
from fitkit.utilities.rank_zero import rank_zero_print, rank_zero_warn

if TYPE_CHECKING:
    from fitkit.module import Module
    from fitkit.trainer.trainer import Trainer

# Set on BatchNorm layers frozen in eval mode; the callback re-applies eval after module.train().
_FROZEN_BN = "_fitkit_frozen_bn"
Modules = nn.Module | Iterable[nn.Module]


def multiplicative(epoch: int) -> float:
    """The default ``lambda_func``: double the backbone LR every epoch (as in Lightning)."""
    return 2.0


def _without_last_groups(state: dict[str, Any], count: int) -> dict[str, Any]:
    """An optimizer state dict without its last ``count`` param groups (and their per-param state)."""
    groups = state["param_groups"]
    dropped = {i for g in groups[len(groups) - count :] for i in g["params"]}
    return {
        **state,
        "state": {k: v for k, v in state["state"].items() if k not in dropped},
        "param_groups": groups[: len(groups) - count],
    }


class BaseFinetuning(Callback):
    """Base class for callbacks that freeze modules before training and unfreeze them by epoch.

    Override :meth:`freeze_before_training` (called in ``setup``, before
    ``configure_optimizers``, so build the optimizer from trainable parameters only:
    ``filter(lambda p: p.requires_grad, self.parameters())``) and
    :meth:`finetune_function` (called at every training epoch start for each
    optimizer; unfreeze there with :meth:`unfreeze_and_add_param_group`). Parameter
    groups it adds are recorded by parameter name and rebuilt when a run resumes.

    Example::

        >>> import fitkit
        >>> class UnfreezeEncoder(fitkit.callbacks.BaseFinetuning):
        ...     def freeze_before_training(self, module):
        ...         self.freeze(module.encoder)
        ...     def finetune_function(self, module, epoch, optimizer):
        ...         if epoch == 3:
        ...             self.unfreeze_and_add_param_group(module.encoder, optimizer, lr=1e-4)
    """

    def __init__(self) -> None:
        self._added: dict[int, list[dict[str, Any]]] = {}  # optimizer index -> groups added (param names, lr)
        self._last_epoch = -1  # the last epoch finetune_function ran for
        self._restarting = False
        self._full_optimizer_states: dict[int, dict[str, Any]] = {}

    # -- helpers (static, as in Lightning) -----------------------------------------------------
    @staticmethod
    def flatten_modules(modules: Modules) -> list[nn.Module]:
        """The leaf modules (and parents holding parameters directly) of ``modules``."""
        if isinstance(modules, nn.ModuleDict):
            modules = list(modules.values())
        if isinstance(modules, nn.Module) and not isinstance(modules, (nn.Sequential, nn.ModuleList)):
            candidates: Iterable[nn.Module] = modules.modules()
        else:
            candidates = [m for sub in modules for m in BaseFinetuning.flatten_modules(sub)]
        seen: set[int] = set()
        flat = []
        for m in candidates:
            if id(m) not in seen and (not list(m.children()) or m._parameters):
                seen.add(id(m))
                flat.append(m)
        return flat

    @staticmethod
    def filter_params(modules: Modules, train_bn: bool = True, requires_grad: bool = True) -> Iterator[nn.Parameter]:
        """Parameters of ``modules`` whose ``requires_grad`` matches (BatchNorm's only with ``train_bn``)."""
        for mod in BaseFinetuning.flatten_modules(modules):
            if isinstance(mod, _BatchNorm) and not train_bn:
                continue
            for param in mod.parameters(recurse=False):
                if param.requires_grad == requires_grad:
                    yield param

    @staticmethod
    def make_trainable(modules: Modules) -> None:
        """Unfreeze ``modules``: ``requires_grad=True``; frozen BatchNorm layers back to train mode."""
        for mod in BaseFinetuning.flatten_modules(modules):
            if getattr(mod, _FROZEN_BN, False):
                object.__setattr__(mod, _FROZEN_BN, False)
                mod.train()
            for param in mod.parameters(recurse=False):
                param.requires_grad = True

    @staticmethod
    def freeze_module(module: nn.Module) -> None:
        """Freeze one module's own parameters; a BatchNorm layer also goes (and stays) in eval mode."""
        if isinstance(module, _BatchNorm):
            object.__setattr__(module, _FROZEN_BN, True)
            module.eval()
        for param in module.parameters(recurse=False):
            param.requires_grad = False

    @staticmethod
    def freeze(modules: Modules, train_bn: bool = True) -> None:
        """Freeze ``modules``; BatchNorm layers stay trainable when ``train_bn``."""
        for mod in BaseFinetuning.flatten_modules(modules):
            if isinstance(mod, _BatchNorm) and train_bn:
                BaseFinetuning.make_trainable(mod)
            else:
                BaseFinetuning.freeze_module(mod)

    @staticmethod
    def filter_on_optimizer(optimizer: torch.optim.Optimizer, params: Iterable[nn.Parameter]) -> list[nn.Parameter]:
        """``params`` minus those already in ``optimizer`` (with a warning when there are any)."""
        present = {id(p) for group in optimizer.param_groups for p in group["params"]}
        params = list(params)
        kept = [p for p in params if id(p) not in present]
        if len(kept) < len(params):
            rank_zero_warn(
                f"{len(params) - len(kept)} parameters to unfreeze are already in the optimizer and keep their "
                "group's LR. Build the optimizer from trainable parameters only: "
                "`filter(lambda p: p.requires_grad, self.parameters())`."
            )
        return kept

    @staticmethod
    def unfreeze_and_add_param_group(
        modules: Modules,
        optimizer: torch.optim.Optimizer,
        lr: float | None = None,
        initial_denom_lr: float = 10.0,
        train_bn: bool = True,
    ) -> None:
        """Unfreeze ``modules`` and add their parameters to ``optimizer`` as a new group.

        The group's LR is ``lr``, or the first group's LR divided by ``initial_denom_lr``
        when ``lr`` is None. BatchNorm layers stay frozen unless ``train_bn``.
        """
        modules = BaseFinetuning.flatten_modules(modules)
        # Parameters that trained all along (BatchNorm with train_bn) may already be in the
        # optimizer, as they should; only frozen ones found there deserve the warning.
        in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
        trained = {id(p) for p in BaseFinetuning.filter_params(modules, train_bn, True) if id(p) in in_optimizer}
        BaseFinetuning.make_trainable([m for m in modules if train_bn or not isinstance(m, _BatchNorm)])
        group_lr = optimizer.param_groups[0]["lr"] / initial_denom_lr if lr is None else float(lr)
        candidates = [p for p in BaseFinetuning.filter_params(modules, train_bn, True) if id(p) not in trained]
        params = BaseFinetuning.filter_on_optimizer(optimizer, candidates)
        if params:
            optimizer.add_param_group({"params": params, "lr": group_lr})

    # -- to override ----------------------------------------------------------------------------
    def freeze_before_training(self, module: Module) -> None:
        """Freeze what should not train at first (called in ``setup``, before ``configure_optimizers``)."""
        raise NotImplementedError(f"{type(self).__name__} must implement freeze_before_training(module)")

    def finetune_function(self, module: Module, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        """Unfreeze what should train from ``epoch`` on (called at each epoch start, per optimizer)."""
        raise NotImplementedError(f"{type(self).__name__} must implement finetune_function(module, epoch, optimizer)")

    # -- state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "added_param_groups": {i: [dict(g) for g in groups] for i, groups in self._added.items()},
            "last_epoch": self._last_epoch,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        added = state_dict.get("added_param_groups", {})
        self._added = {int(i): [dict(g) for g in groups] for i, groups in added.items()}
        self._last_epoch = int(state_dict.get("last_epoch", -1))
        self._restarting = True

    # -- hooks -----------------------------------------------------------------------------------
    def setup(self, trainer: Trainer, module: Module, stage: str) -> None:
        if stage == "fit":
            self.freeze_before_training(module)

    def on_load_checkpoint(self, trainer: Trainer, module: Module, checkpoint: dict[str, Any]) -> None:
        # The optimizers configure_optimizers builds lack the groups this callback added;
        # hand the Trainer a state without them and keep the full one for on_fit_start.
        if trainer.state.fn != "fit":
            return
        saved = checkpoint.get("callbacks", {}).get(self.state_key) or {}
        states = checkpoint.get("optimizer_states")
        for i, groups in (saved.get("added_param_groups") or {}).items():
            index = int(i)
            if states is not None and groups and index < len(states):
                self._full_optimizer_states[index] = states[index]
                states[index] = _without_last_groups(states[index], len(groups))

    def on_fit_start(self, trainer: Trainer, module: Module) -> None:
        if not self._restarting:
            return
        self._restarting = False
        named = dict(module.named_parameters())
        for index, groups in sorted(self._added.items()):
            optimizer = trainer.optimizers[index]
            present = {id(p) for g in optimizer.param_groups for p in g["params"]}
            for group in groups:
                params = [named[name] for name in group["params"]]
                if any(id(p) in present for p in params):
                    continue  # already there (the optimizer was built with them)
                owners = {id(p) for p in params}
                self.make_trainable(
                    [m for m in module.modules() if m._parameters and all(id(p) in owners for p in m.parameters(False))]
                )
                optimizer.add_param_group({**{k: v for k, v in group.items() if k != "params"}, "params": params})
            full = self._full_optimizer_states.pop(index, None)
            if full is not None:
                optimizer.load_state_dict(full)
        self._full_optimizer_states.clear()

    def on_train_start(self, trainer: Trainer, module: Module) -> None:
        _keep_frozen_bn_in_eval(module)  # module.train() ran just before this hook

    def on_train_epoch_start(self, trainer: Trainer, module: Module) -> None:
        epoch = trainer.current_epoch
        if epoch > self._last_epoch:  # once per epoch, also when a run resumes inside one
            names = {id(p): n for n, p in module.named_parameters()}
            for index, optimizer in enumerate(trainer.optimizers):
                before = len(optimizer.param_groups)
                self.finetune_function(module, epoch, optimizer)
                for group in optimizer.param_groups[before:]:
                    missing = [p for p in group["params"] if id(p) not in names]
                    if missing:
                        raise FitkitRuntimeError(
                            f"{type(self).__name__} added a parameter group with {len(missing)} parameters that are "
                            "not the module's; only the module's parameters can be restored on resume."
                        )
                    self._added.setdefault(index, []).append(
                        {"params": [names[id(p)] for p in group["params"]], "lr": float(group["lr"])}
                    )
            self._last_epoch = epoch
        _keep_frozen_bn_in_eval(module)


def _keep_frozen_bn_in_eval(module: nn.Module) -> None:
    for m in module.modules():
        if m.training and getattr(m, _FROZEN_BN, False):
            m.eval()


class BackboneFinetuning(BaseFinetuning):
    """Train a head on a frozen ``module.backbone``, then unfreeze the backbone with a smaller LR.

    At fit start ``module.backbone`` is frozen (an error if the module has none). At
    epoch ``unfreeze_backbone_at_epoch`` its parameters join the first optimizer as a
    new parameter group with LR ``backbone_initial_lr``, or the first group's LR times
    ``backbone_initial_ratio_lr``. Each later epoch multiplies that LR by
    ``lambda_func(epoch + 1)``, capped at the first group's LR when ``should_align``.
    Build the optimizer from trainable parameters only
    (``filter(lambda p: p.requires_grad, self.parameters())``), otherwise the backbone
    is already in the first group and trains at its LR once unfrozen (with a warning).

    Args:
        unfreeze_backbone_at_epoch: the (0-based) epoch at which the backbone starts training.
        lambda_func: ``epoch -> factor`` applied to the backbone LR each later epoch (default 2.0).
        backbone_initial_ratio_lr: the backbone's first LR as a fraction of the first group's.
        backbone_initial_lr: the backbone's first LR (overrides the ratio).
        should_align: never let the backbone LR exceed the first group's LR.
        initial_denom_lr: accepted for Lightning compatibility; only
            :meth:`unfreeze_and_add_param_group` with ``lr=None`` uses it.
        train_bn: BatchNorm layers of the backbone train throughout; when False they stay
            frozen, in eval mode, the whole run.
        verbose: print the LRs when they change.
        rounding: decimals for ``verbose``.

    Example::

        >>> import fitkit
        >>> finetune = fitkit.callbacks.BackboneFinetuning(unfreeze_backbone_at_epoch=5, backbone_initial_ratio_lr=0.1)
        >>> trainer = fitkit.Trainer(max_epochs=20, callbacks=[finetune], enable_progress_bar=False, logger=False)
        >>> # trainer.fit(model)  # model.backbone frozen for epochs 0-4, then trained at LR/10, doubling each epoch
    """

    def __init__(
        self,
        unfreeze_backbone_at_epoch: int = 10,
        lambda_func: Callable[[int], float] = multiplicative,
        backbone_initial_ratio_lr: float = 10e-2,
        backbone_initial_lr: float | None = None,
        should_align: bool = True,
        initial_denom_lr: float = 10.0,
        train_bn: bool = True,
        verbose: bool = False,
        rounding: int = 12,
    ) -> None:
        super().__init__()
        if isinstance(unfreeze_backbone_at_epoch, bool) or not isinstance(unfreeze_backbone_at_epoch, int):
            raise FitkitTypeError(
                invalid("unfreeze_backbone_at_epoch", unfreeze_backbone_at_epoch, "it is not an int", "an int >= 0")
            )
        if unfreeze_backbone_at_epoch < 0:
            raise MisconfigurationError(
                invalid("unfreeze_backbone_at_epoch", unfreeze_backbone_at_epoch, "epochs start at 0", "an int >= 0")
            )
        if not callable(lambda_func):
            raise FitkitTypeError(
                invalid("lambda_func", lambda_func, "it is not callable", "a function epoch -> factor")
            )
        for name, value in (
            ("backbone_initial_ratio_lr", backbone_initial_ratio_lr),
            ("backbone_initial_lr", backbone_initial_lr),
            ("initial_denom_lr", initial_denom_lr),
        ):
            if value is None and name == "backbone_initial_lr":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise MisconfigurationError(invalid(name, value, "it must be a positive number", "a float > 0"))
        self.unfreeze_backbone_at_epoch = unfreeze_backbone_at_epoch
        self.lambda_func = lambda_func
        self.backbone_initial_ratio_lr = float(backbone_initial_ratio_lr)
        self.backbone_initial_lr = None if backbone_initial_lr is None else float(backbone_initial_lr)
        self.should_align = should_align
        self.initial_denom_lr = float(initial_denom_lr)
        self.train_bn = train_bn
        self.verbose = verbose
        self.rounding = rounding
        self.previous_backbone_lr: float | None = None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "previous_backbone_lr": self.previous_backbone_lr}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.previous_backbone_lr = state_dict.get("previous_backbone_lr")

    def setup(self, trainer: Trainer, module: Module, stage: str) -> None:
        if stage == "fit" and not isinstance(getattr(module, "backbone", None), nn.Module):
            raise MisconfigurationError(
                invalid(
                    f"{type(module).__name__}.backbone",
                    getattr(module, "backbone", None),
                    "BackboneFinetuning freezes and unfreezes `module.backbone`",
                    "an nn.Module attribute named `backbone` (e.g. self.backbone = resnet18(weights=...))",
                )
            )
        super().setup(trainer, module, stage)

    def freeze_before_training(self, module: Module) -> None:
        self.freeze(module.backbone, train_bn=self.train_bn)

    def finetune_function(self, module: Module, epoch: int, optimizer: torch.optim.Optimizer) -> None:
        if optimizer is not module.trainer.optimizers[0]:
            return
        head_lr = float(optimizer.param_groups[0]["lr"])
        if epoch == self.unfreeze_backbone_at_epoch:
            initial = (
                self.backbone_initial_lr
                if self.backbone_initial_lr is not None
                else head_lr * self.backbone_initial_ratio_lr
            )
            before = len(optimizer.param_groups)
            self.unfreeze_and_add_param_group(
                module.backbone, optimizer, initial, initial_denom_lr=self.initial_denom_lr, train_bn=self.train_bn
            )
            if len(optimizer.param_groups) > before:
                self.previous_backbone_lr = initial
                if self.verbose:
                    rank_zero_print(
                        f"Epoch {epoch}: backbone unfrozen. Current lr: {round(head_lr, self.rounding)}, "
                        f"backbone lr: {round(initial, self.rounding)}"
                    )
        elif epoch > self.unfreeze_backbone_at_epoch and self.previous_backbone_lr is not None:
            backbone_lr = float(self.lambda_func(epoch + 1)) * self.previous_backbone_lr
            if self.should_align and backbone_lr > head_lr:
                backbone_lr = head_lr
            optimizer.param_groups[-1]["lr"] = backbone_lr
            self.previous_backbone_lr = backbone_lr
            if self.verbose:
                rank_zero_print(
                    f"Epoch {epoch}: current lr: {round(head_lr, self.rounding)}, "
                    f"backbone lr: {round(backbone_lr, self.rounding)}"
                )
