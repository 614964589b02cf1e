"""The training script the distributed tests run (under torchrun, fitkit's launcher, or in-process).

Run as ``python _ddp_script.py '<json config>'``; global rank zero saves the result to
``cfg["out"]`` with ``torch.save``. The same ``main(cfg)`` runs in the test process
for the single-process reference.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fitkit as fk


class Regression(fk.Module):
    def __init__(self, cfg: dict[str, Any]) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layer = nn.Linear(4, 1)
        self.cfg = cfg
        self.gathered: torch.Tensor | None = None

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        if self.cfg.get("fail_rank") == self.global_rank and batch_idx == 1:
            raise RuntimeError(f"boom on rank {self.global_rank}")
        loss = ((self.layer(x) - y) ** 2).mean()
        self.log("train_loss", loss, on_step=True, on_epoch=True, sync_dist=True)
        self.log("batches", 1.0, on_step=False, on_epoch=True, reduce_fx="sum", sync_dist=True)
        self.log("top_rank", float(self.global_rank), on_step=False, on_epoch=True, reduce_fx="max", sync_dist=True)
        if self.cfg.get("mismatch") and self.global_rank == 1:
            self.log("only_rank_1", 1.0, on_epoch=True, sync_dist=True)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", ((self.layer(x) - y) ** 2).mean(), sync_dist=True)
        self.log("val_count", float(len(x)), reduce_fx="sum", sync_dist=True)

    def on_train_end(self) -> None:
        self.gathered = self.all_gather(torch.tensor([float(self.global_rank)]))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)


def dataset(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return TensorDataset(x, x.sum(1, keepdim=True) + 0.1 * torch.randn(n, 1, generator=g))


def main(cfg: dict[str, Any]) -> dict[str, Any]:
    model = Regression(cfg)
    trainer = fk.Trainer(
        accelerator="cpu",
        devices=cfg.get("devices", 2),
        strategy=cfg.get("strategy", "auto"),
        max_epochs=cfg.get("max_epochs", 2),
        accumulate_grad_batches=cfg.get("accumulate", 1),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    train = DataLoader(dataset(64, 1), batch_size=cfg.get("batch_size", 8))
    val = DataLoader(dataset(21, 2), batch_size=4)
    trainer.fit(model, train, val, ckpt_path=cfg.get("ckpt_in"))
    if cfg.get("ckpt_out"):
        trainer.save_checkpoint(cfg["ckpt_out"])
    result = {
        "weights": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
        "gathered": model.gathered,
        "world_size": trainer.world_size,
        "global_step": trainer.global_step,
    }
    if trainer.is_global_zero and cfg.get("out"):
        torch.save(result, cfg["out"])
    return result


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
