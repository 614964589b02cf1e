"""The FSDP jobs ``test_fsdp.py`` runs under ``torchrun --nproc_per_node=2`` (gloo, CPU).

Run as ``python -m torch.distributed.run --nproc_per_node=2 _fsdp_job.py <job> <outdir>``
(``full``, ``sharded``), or as ``python _fsdp_job.py launcher <outdir>`` (fitkit starts rank 1).
Each job trains several fresh models in one process group (made here, so the
strategies join it rather than create and destroy one each) and leaves checkpoints
in ``outdir`` for the test to compare with single-process training. The model, data
and ``fit_kwargs`` are shared with the test through this module.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import fitkit as fk
from fitkit.testing import quiet_trainer

GLOBAL_BATCH = 8


class Regressor(fk.Module):
    """Two linear layers (each its own FSDP unit with ``auto_wrap_policy={nn.Linear}``) and a bare parameter."""

    def __init__(self, seed: int = 0, lr: float = 0.1, direct: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 3))
        self.scale = nn.Parameter(torch.ones(3))  # lives in the root unit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) * self.scale

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        # direct=True skips self(x): only FSDPStrategy.step_method's redirect gathers the root's weights.
        out = self.body(x) * self.scale if self.hparams.direct else self(x)
        return nn.functional.mse_loss(out, y)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", nn.functional.mse_loss(self(x), y), sync_dist=True)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("test_loss", nn.functional.mse_loss(self(x), y), sync_dist=True)

    def configure_optimizers(self) -> Any:
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9)
        return {"optimizer": opt, "lr_scheduler": torch.optim.lr_scheduler.StepLR(opt, 3, 0.5)}


def loader(batch_size: int) -> DataLoader[Any]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 6, generator=g)
    y = torch.randn(32, 3, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


FIT_KWARGS: dict[str, Any] = {"gradient_clip_val": 0.5}


def _fsdp_trainer(max_epochs: int, strategy: dict[str, Any] | None = None, **kwargs: Any) -> fk.Trainer:
    from fitkit.strategies.fsdp import FSDPStrategy

    fsdp = FSDPStrategy(**{"auto_wrap_policy": {nn.Linear}, **(strategy or {})})
    return quiet_trainer(strategy=fsdp, accelerator="cpu", devices=2, max_epochs=max_epochs, **{**FIT_KWARGS, **kwargs})


def _fit(out: str, name: str, max_epochs: int, seed: int = 0, ckpt_path: str | None = None, **kw: Any) -> None:
    direct = kw.pop("direct", False)
    if "state_dict_type" in kw:
        kw["strategy"] = {"state_dict_type": kw.pop("state_dict_type")}
    trainer = _fsdp_trainer(max_epochs, **kw)
    trainer.fit(Regressor(seed, direct=direct), loader(GLOBAL_BATCH // 2), ckpt_path=ckpt_path)
    trainer.save_checkpoint(os.path.join(out, name))


def job_full(out: str) -> None:
    _fit(out, "uninterrupted.ckpt", 2)
    _fit(out, "mid.ckpt", 1)
    _fit(out, "resumed.ckpt", 2, seed=99, ckpt_path=os.path.join(out, "mid.ckpt"))
    _fit(out, "accumulated.ckpt", 2, accumulate_grad_batches=2)
    _fit(out, "direct.ckpt", 2, direct=True)
    # Validation (under inference_mode, sanity check first) runs between epochs, and
    # ModelCheckpoint saves the best epoch (a collective save on every rank).
    best = fk.callbacks.ModelCheckpoint(dirpath=os.path.join(out, "best"), monitor="val_loss", save_top_k=1)
    trainer = _fsdp_trainer(2, num_sanity_val_steps=1, enable_checkpointing=True, callbacks=[best])
    trainer.fit(Regressor(0), loader(GLOBAL_BATCH // 2), loader(GLOBAL_BATCH // 2))
    trainer.save_checkpoint(os.path.join(out, "validated.ckpt"))


def job_sharded(out: str) -> None:
    _fit(out, "uninterrupted", 2, state_dict_type="sharded")
    _fit(out, "mid", 1, state_dict_type="sharded")
    _fit(out, "resumed", 2, seed=99, ckpt_path=os.path.join(out, "mid"), state_dict_type="sharded")
    # A full checkpoint written by one FSDP run resumes another that saves sharded.
    _fit(out, "mid_full.ckpt", 1)
    _fit(out, "resumed_from_full", 2, seed=99, ckpt_path=os.path.join(out, "mid_full.ckpt"), state_dict_type="sharded")
    # The other fully_shard options run (bf16 compute, fp32 reduction, shards on the CPU).
    from torch.distributed.fsdp import MixedPrecisionPolicy

    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    options = {"mixed_precision": mp, "cpu_offload": True, "reshard_after_forward": False}
    _fit(out, "mixed.ckpt", 2, strategy=options)


def job_launcher(out: str) -> None:
    """Run as plain ``python _fsdp_job.py launcher <out>``: fitkit's launcher starts rank 1 and the group."""
    trainer = _fsdp_trainer(2)
    model = Regressor(0)
    trainer.fit(model, loader(GLOBAL_BATCH // 2), loader(GLOBAL_BATCH // 2))
    trainer.save_checkpoint(os.path.join(out, "launched.ckpt"))  # after fit: the group is still there
    (result,) = trainer.test(model, loader(GLOBAL_BATCH // 2), verbose=False)
    if trainer.is_global_zero:
        torch.save(result, os.path.join(out, "launched_test.pt"))


def main() -> None:
    import torch.distributed as dist

    job, out = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    if job == "launcher":
        job_launcher(out)
        return
    dist.init_process_group("gloo")
    try:
        {"full": job_full, "sharded": job_sharded}[job](out)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
