"""``ModelSummary``: the table of layers and parameter counts printed when ``fit`` starts.

:func:`summarize` does the counting and returns a :class:`Summary` (a table you can
print, or a dict for tests and tools); the :class:`ModelSummary` callback prints it on
global rank zero. The Trainer adds a ``ModelSummary()`` when
``enable_model_summary=True`` (the default) and the user passed none. This module
does not run the model: there are no input/output shapes or FLOPs in the table.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from torch import nn

from fitkit.callbacks.callback import Callback
from fitkit.utilities.exceptions import MisconfigurationError, invalid
from fitkit.utilities.rank_zero import rank_zero_print

if TYPE_CHECKING:
    from fitkit.module import Module
    from fitkit.trainer.trainer import Trainer

_UNITS = ("", "K", "M", "B", "T")


def human_count(n: int) -> str:
    """``1234567`` → ``'1.2 M'``: a parameter count as the summary prints it.

    Example::

        >>> human_count(123), human_count(8_330), human_count(2_500_000_000)
        ('123', '8.3 K', '2.5 B')
    """
    value, unit = float(n), 0
    while abs(value) >= 1000 and unit < len(_UNITS) - 1:
        value, unit = value / 1000, unit + 1
    if unit == 0:
        return str(n)
    return f"{value:.1f} {_UNITS[unit]}"


def _count(params: list[nn.Parameter]) -> int:
    # A lazy module's parameters have no shape until the first forward: count them as 0.
    return sum(0 if isinstance(p, nn.parameter.UninitializedParameter) else p.numel() for p in params)


@dataclass
class LayerSummary:
    """One row of the table: a submodule's name, class, parameters and mode."""

    name: str
    type: str
    params: int
    mode: str  # "train" or "eval"


@dataclass
class Summary:
    """What :func:`summarize` found; ``str(summary)`` is the printed table.

    Attributes:
        layers: one row per submodule down to ``max_depth``.
        total_params: parameters of the whole model (shared ones counted once).
        trainable_params: those with ``requires_grad=True``.
        non_trainable_params: the others.
        size_mb: bytes of all parameters, in MB (10^6 bytes).
        train_modules: submodules (the model included) in train mode.
        eval_modules: submodules in eval mode.
    """

    layers: list[LayerSummary] = field(default_factory=list)
    total_params: int = 0
    trainable_params: int = 0
    non_trainable_params: int = 0
    size_mb: float = 0.0
    train_modules: int = 0
    eval_modules: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Plain data: the layers as a list of dicts, the totals as numbers."""
        return asdict(self)

    def __str__(self) -> str:
        header = ("", "Name", "Type", "Params", "Mode")
        rows = [(str(i), r.name, r.type, human_count(r.params), r.mode) for i, r in enumerate(self.layers)]
        widths = [max(len(row[c]) for row in [header, *rows]) for c in range(len(header))]
        lines = []
        if rows:
            fmt = " | ".join(f"{{:<{w}}}" for w in widths)
            rule = "-" * (sum(widths) + 3 * (len(widths) - 1))
            lines = [fmt.format(*header).rstrip(), rule, *(fmt.format(*row).rstrip() for row in rows), rule]
        lines += [
            f"{human_count(self.trainable_params):<10}Trainable params",
            f"{human_count(self.non_trainable_params):<10}Non-trainable params",
            f"{human_count(self.total_params):<10}Total params",
            f"{self.size_mb:<10.3f}Total estimated model params size (MB)",
            f"{self.train_modules:<10}Modules in train mode",
            f"{self.eval_modules:<10}Modules in eval mode",
        ]
        return "\n".join(lines)


def summarize(model: nn.Module, max_depth: int = 1) -> Summary:
    """Count ``model``'s parameters and list its submodules down to ``max_depth``.

    Args:
        model: any ``torch.nn.Module`` (a :class:`fitkit.Module` included).
        max_depth: how deep the layer table goes: ``1`` the direct children, ``-1`` every
            submodule, ``0`` no rows (the totals only).

    Example::

        >>> from torch import nn
        >>> s = summarize(nn.Sequential(nn.Linear(4, 3), nn.ReLU()))
        >>> s.total_params, [(r.name, r.type, r.params) for r in s.layers]
        (15, [('0', 'Linear', 15), ('1', 'ReLU', 0)])
    """
    _check_depth(max_depth)
    layers = [
        LayerSummary(name, type(m).__name__, _count(list(m.parameters())), "train" if m.training else "eval")
        for name, m in model.named_modules()
        if name and (max_depth == -1 or name.count(".") < max_depth)
    ]
    params = list(model.parameters())
    trainable = _count([p for p in params if p.requires_grad])
    total = _count(params)
    size = sum(
        0 if isinstance(p, nn.parameter.UninitializedParameter) else p.numel() * p.element_size() for p in params
    )
    modes = [m.training for m in model.modules()]
    return Summary(
        layers=layers,
        total_params=total,
        trainable_params=trainable,
        non_trainable_params=total - trainable,
        size_mb=size / 1e6,
        train_modules=sum(modes),
        eval_modules=len(modes) - sum(modes),
    )


def _check_depth(max_depth: int) -> None:
    if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < -1:
        raise MisconfigurationError(
            invalid("max_depth", max_depth, "it must be a whole number >= -1", "an int >= -1 (-1: every layer)")
        )


class ModelSummary(Callback):
    """Print the model's layer table and parameter counts when ``fit`` starts (global rank zero only).

    Args:
        max_depth: how deep the layer table goes: ``1`` (the default) the module's direct
            children, ``-1`` every submodule, ``0`` print nothing.

    Example::

        >>> import fitkit
        >>> from fitkit.callbacks import ModelSummary
        >>> trainer = fitkit.Trainer(max_epochs=1, callbacks=[ModelSummary(max_depth=2)], logger=False)
    """

    def __init__(self, max_depth: int = 1) -> None:
        _check_depth(max_depth)
        self.max_depth = max_depth

    def on_fit_start(self, trainer: Trainer, module: Module) -> None:
        if self.max_depth == 0 or not trainer.is_global_zero:
            return
        rank_zero_print(summarize(module, self.max_depth))
