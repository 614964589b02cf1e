"""callbacks/grad_norm.py: the logged norms equal torch's own (get_total_norm, clip_grad_norm_)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from _gallery_helpers import RecordingLogger, load, loader, trainer
from torch import nn

import fitkit as fk
from fitkit.testing import BoringModule

GradNormLogger = load("grad_norm").GradNormLogger


class TwoLayers(BoringModule):
    train_dataloader = val_dataloader = test_dataloader = None  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__(8, 2)
        self.layer = nn.Sequential(nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 2))
        self.frozen = nn.Linear(2, 2).requires_grad_(False)  # no gradient: not logged

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.layer.parameters(), lr=0.1)


class Expected(fk.Callback):
    """torch's own numbers, computed in the same hook right after GradNormLogger's."""

    def __init__(self, norm_type: float) -> None:
        self.norm_type = norm_type
        self.by_step: dict[int, dict[str, float]] = {}

    def on_before_optimizer_step(self, trainer: fk.Trainer, module: fk.Module, optimizer: Any) -> None:
        params = [p for p in module.parameters() if p.grad is not None]
        grads = [p.grad for p in params]
        # clip_grad_norm_ returns the total norm; max_norm=inf leaves the gradients as they are
        # (torch.nn.utils.get_total_norm does the same but only exists from torch 2.6).
        total = torch.nn.utils.clip_grad_norm_(params, math.inf, self.norm_type)
        by_hand = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(g, self.norm_type) for g in grads]), self.norm_type
        )
        assert torch.allclose(total, by_hand)
        prefix = f"grad_{float(self.norm_type)}_norm"
        expected = {
            f"{prefix}/{n}": p.grad.norm(self.norm_type).item()
            for n, p in module.named_parameters()
            if p.grad is not None
        }
        expected[f"{prefix}_total"] = total.item()
        self.by_step[trainer.global_step] = expected


@pytest.mark.parametrize("norm_type", [2.0, 1.0, math.inf])
def test_norms_equal_torch(norm_type: float) -> None:
    logger, expected = RecordingLogger(), Expected(norm_type)
    cb = GradNormLogger(norm_type=norm_type, log_every_n_steps=2)
    trainer(callbacks=[cb, expected], logger=logger, gradient_clip_val=1e-3).fit(TwoLayers(), loader(5))
    key = f"grad_{float(norm_type)}_norm_total"
    records = logger.with_key(key)
    assert [step for step, _ in records] == [0, 2, 4]  # only on the steps it logs
    for step, metrics in records:
        assert metrics == expected.by_step[step]  # exactly, before clipping
    names = {k.split("/", 1)[1] for k in records[0][1] if "/" in k}
    assert names == {"layer.0.weight", "layer.0.bias", "layer.2.weight", "layer.2.bias"}
    assert cb.norms == records[-1][1]


def test_separator_and_no_logger() -> None:
    cb = GradNormLogger(log_every_n_steps=1, group_separator=".")
    trainer(callbacks=[cb]).fit(TwoLayers(), loader(2))
    assert "grad_2.0_norm.layer.0.weight" in cb.norms and "grad_2.0_norm_total" in cb.norms


@pytest.mark.parametrize(("kwargs", "text"), [({"norm_type": 0}, "`norm_type=0`"), ({"log_every_n_steps": 0}, "`log_")])
def test_bad_arguments(kwargs: dict[str, Any], text: str) -> None:
    with pytest.raises(fk.MisconfigurationError, match=text):
        GradNormLogger(**kwargs)
