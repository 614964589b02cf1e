"""What the XLA support costs a run that does not use it (main lane: no torch_xla installed).

``import fitkit`` (and building a CPU Trainer) never imports torch_xla; asking for
``accelerator="xla"`` without it says what to install; and the strategy's
``execute_pending`` seam runs at log steps and epoch ends only, never per step.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

import fitkit as fk
from fitkit.strategies import SingleDeviceStrategy
from fitkit.testing import BoringModule, RandomDataset
from fitkit.utilities.exceptions import MisconfigurationError


def test_import_fitkit_never_imports_torch_xla() -> None:
    code = (
        "import sys, fitkit, fitkit.accelerators, fitkit.strategies, fitkit.precision\n"
        "from fitkit.accelerators.xla import XLAAccelerator\n"
        "from fitkit.strategies.xla import XLAStrategy\n"
        "fitkit.Trainer(accelerator='cpu', logger=False, enable_progress_bar=False)\n"
        "assert 'torch_xla' not in sys.modules, sorted(m for m in sys.modules if 'xla' in m)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("name", ["xla", "tpu"])
def test_xla_without_torch_xla_says_what_to_install(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch_xla", None)  # importlib then finds no torch_xla, as in the main lane
    version = torch.__version__.split("+")[0]
    with pytest.raises(MisconfigurationError) as err:
        fk.Trainer(accelerator=name)
    message = str(err.value)
    assert f"`accelerator={name!r}` is not valid: torch_xla is not installed" in message
    assert f"pip install torch_xla=={version}" in message and "pip install 'fitkit[xla]'" in message


class CountingStrategy(SingleDeviceStrategy):
    def __init__(self) -> None:
        super().__init__("cpu")
        self.pending_calls = 0

    def execute_pending(self) -> None:
        self.pending_calls += 1


def test_pending_work_runs_at_log_steps_and_epoch_ends_only() -> None:
    strategy = CountingStrategy()
    t = fk.Trainer(
        strategy=strategy,
        max_epochs=1,
        log_every_n_steps=5,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
    )

    class Logs(BoringModule):
        def training_step(self, batch: Any, batch_idx: int) -> Any:
            loss = super().training_step(batch, batch_idx)
            self.log("train_loss", loss)
            return loss

    t.fit(Logs(), DataLoader(RandomDataset(32, 20), batch_size=2))  # 10 steps
    # Steps 5 and 10, then the epoch's two reductions (before and after on_train_epoch_end).
    assert strategy.pending_calls == 4
