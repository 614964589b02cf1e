"""Run by ``test_xla_spmd.py`` in a fresh interpreter with ``CPU_NUM_DEVICES=2``.

SPMD changes the whole process (``xr.use_spmd()``), so it cannot share the pytest
process with the other XLA tests. Trains the same model on ``"cpu"`` and with
``strategy="xla_spmd"`` over two CPU devices; prints one JSON line.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import torch
from _xla_helpers import LossRecorder, Regressor, loader, trainer


class ShardingProbe(Regressor):
    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        if batch[0].device.type == "xla" and not hasattr(self, "spec"):
            import torch_xla

            self.spec = torch_xla._XLAC._get_xla_sharding_spec(batch[0])
        return super().training_step(batch, batch_idx)


if __name__ == "__main__":
    runs = {}
    # SPMD first: it must own the process before any backward pass runs (see xla_spmd.py).
    for accelerator, kwargs in (("xla", {"strategy": "xla_spmd", "devices": 2}), ("cpu", {})):
        rec = LossRecorder()
        model = ShardingProbe()
        t = trainer(accelerator=accelerator, max_epochs=2, gradient_clip_val=1.0, callbacks=[rec], **kwargs)
        t.fit(model, loader(32, batch_size=8))
        runs[accelerator] = rec.values()
        params = [p.detach().cpu() for p in model.parameters()]
        runs[accelerator + "_params"] = [p.flatten().tolist() for p in params]
        if accelerator == "xla":
            runs["spec"], runs["world_size"] = model.spec, t.world_size
    print(json.dumps(runs))
    sys.stdout.flush()
