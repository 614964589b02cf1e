"""GradNormLogger: the total and per-parameter gradient norms, sent to the loggers.

Usage::

    # copy this file next to your script (or put the gallery folder on sys.path)
    import fitkit
    from grad_norm import GradNormLogger

    trainer = fitkit.Trainer(max_epochs=5, callbacks=[GradNormLogger(norm_type=2.0, log_every_n_steps=50)])
    trainer.fit(model, train_loader)
    print(trainer.callbacks[0].norms)   # the latest values, e.g. {"grad_2.0_norm_total": 0.83, ...}

On optimizer steps whose index (``trainer.global_step`` before the step) is a
multiple of ``log_every_n_steps`` -- the first step included -- it computes, in
``on_before_optimizer_step`` (after gradients are unscaled, before clipping):

* ``grad_{norm_type}_norm{sep}{name}`` for every parameter with a gradient;
* ``grad_{norm_type}_norm_total``: the norm of all of them together, the number
  ``torch.nn.utils.clip_grad_norm_`` compares with ``max_norm``;

and sends them to every logger in ``trainer.loggers`` at that ``global_step``. Names
follow Lightning's ``grad_norm`` utility. Steps it does not log cost one modulo;
steps it logs cost one norm per parameter and one host sync for all of them.
"""

from __future__ import annotations

from typing import Any

import torch

import fitkit


def _total_norm(norms: list[torch.Tensor], grads: list[torch.Tensor], norm_type: float) -> torch.Tensor:
    get_total_norm = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6
    if get_total_norm is not None:
        return get_total_norm(grads, norm_type)
    return torch.linalg.vector_norm(torch.stack(norms), norm_type)


class GradNormLogger(fitkit.Callback):
    """Log gradient norms every ``log_every_n_steps`` optimizer steps.

    Args:
        norm_type: the ``p`` of the p-norm (``float("inf")`` for the largest absolute value).
        log_every_n_steps: log on steps whose index is a multiple of this.
        group_separator: between the ``grad_..._norm`` prefix and the parameter name (``"/"``
            groups the per-parameter curves in TensorBoard).

    Example::

        >>> trainer = fitkit.Trainer(max_epochs=1, callbacks=[GradNormLogger(log_every_n_steps=10)], logger=False)
    """

    def __init__(self, norm_type: float = 2.0, log_every_n_steps: int = 50, group_separator: str = "/") -> None:
        if isinstance(norm_type, bool) or not isinstance(norm_type, (int, float)) or not norm_type > 0:
            raise fitkit.MisconfigurationError(
                f"`norm_type={norm_type!r}` is not valid: it is the p of a p-norm. Expected a float > 0 or inf."
            )
        if isinstance(log_every_n_steps, bool) or not isinstance(log_every_n_steps, int) or log_every_n_steps < 1:
            raise fitkit.MisconfigurationError(
                f"`log_every_n_steps={log_every_n_steps!r}` is not valid: it counts optimizer steps. "
                "Expected an int >= 1."
            )
        self.norm_type = float(norm_type)
        self.log_every_n_steps = log_every_n_steps
        self.group_separator = group_separator
        self.norms: dict[str, float] = {}  # the latest logged values

    def compute(self, module: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Every parameter's gradient norm and the total, as tensors (no host sync)."""
        prefix = f"grad_{self.norm_type}_norm"
        named = [(name, p.grad) for name, p in module.named_parameters() if p.grad is not None]
        if not named:
            return {}
        grads = [g for _, g in named]
        norms = [torch.linalg.vector_norm(g, self.norm_type) for g in grads]
        out = {f"{prefix}{self.group_separator}{name}": n for (name, _), n in zip(named, norms, strict=True)}
        out[f"{prefix}_total"] = _total_norm(norms, grads, self.norm_type)
        return out

    def on_before_optimizer_step(self, trainer: fitkit.Trainer, module: fitkit.Module, optimizer: Any) -> None:
        if trainer.global_step % self.log_every_n_steps:
            return
        norms = self.compute(module)
        if not norms:
            return
        # One host sync for all values (stack promotes mixed dtypes to the widest).
        device = next(iter(norms.values())).device
        values = torch.stack([v.to(device) for v in norms.values()]).tolist()
        self.norms = dict(zip(norms, values, strict=True))
        for logger in trainer.loggers:
            logger.log_metrics(self.norms, step=trainer.global_step)
