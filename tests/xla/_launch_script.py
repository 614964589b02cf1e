"""Run by ``test_xla_launch.py`` in a fresh interpreter: a fit through ``XLALauncher``.

torch_xla refuses to launch processes once its runtime has started in the calling
process, so this cannot run inside the pytest process. Prints one JSON line.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import torch
from _xla_helpers import Regressor, loader, trainer

import fitkit as fk
from fitkit.strategies.launchers.xla import XLALauncher


class WhereAmI(fk.Callback):
    """Remembers the process that trained; comes back to the caller with the callback states."""

    def __init__(self) -> None:
        self.pid = 0

    def on_train_start(self, trainer: Any, module: Any) -> None:
        self.pid = os.getpid()

    def state_dict(self) -> dict[str, Any]:
        return {"pid": self.pid}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.pid = state_dict["pid"]


if __name__ == "__main__":
    where = WhereAmI()
    t = trainer(max_epochs=1, callbacks=[where])
    t.strategy.launcher = XLALauncher(num_processes=1)  # xmp.spawn's path, with the one CPU replica
    model = Regressor()
    before = [p.detach().clone() for p in model.parameters()]
    t.fit(model, loader())
    changed = any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    print(json.dumps({"pid": os.getpid(), "worker": where.pid, "step": t.global_step, "changed": changed}))
    sys.stdout.flush()
