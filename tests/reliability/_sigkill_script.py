"""Fork server for ``test_sigkill.py``: import torch and fitkit once, then fork one training run per request.

Importing torch costs seconds of CPU; a trial must be a process of its own (SIGKILL
kills a process), so this server pays the import once and ``fork()``s a fresh child
per run. A child trains a tiny model with a large buffer (so that checkpoint writes
take most of a step) under ``ModelCheckpoint(every_n_train_steps=1, save_last=True,
save_top_k=2)``, then writes its final weights and bookkeeping, and exits.

Protocol, one JSON object per line: ``{"cmd": "start", "dir": ..., "ckpt_path": ...}``
answers ``{"pid": N}`` as soon as the child exists; ``{"cmd": "wait", "pid": N}``
answers ``{"pid": N, "returncode": R}`` (``-9`` for SIGKILL) once it ended. The test
sends the SIGKILL itself. Not a test module (no ``test_`` prefix).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from typing import Any

import torch
from torch.utils.data import DataLoader

import fitkit as fk
from fitkit.callbacks import ModelCheckpoint
from fitkit.testing import BoringModule

FEATURES = 8
BATCHES = 6  # per epoch
EPOCHS = 3
BALLAST = 2**20  # float32s in a buffer: a 4 MiB checkpoint, so a write takes milliseconds


class Ballasted(BoringModule):
    """BoringModule with a large buffer (checkpointed, never trained) and a logged training loss."""

    train_dataloader = val_dataloader = test_dataloader = predict_dataloader = None  # type: ignore[assignment]

    def __init__(self, ballast: int = BALLAST) -> None:
        super().__init__(FEATURES, 2)
        self.register_buffer("ballast", torch.zeros(ballast))

    def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
        loss = self.loss(self(batch))
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.layer.parameters(), lr=0.1, momentum=0.9)


class Clock(fk.Callback):
    """Records when training started, and says so with a ``<out>.started`` file the test waits for."""

    def __init__(self, out: str) -> None:
        self.out = out
        self.train_start = 0.0

    def on_train_start(self, trainer: fk.Trainer, module: fk.Module) -> None:
        self.train_start = time.monotonic()
        open(self.out + ".started", "w").close()


def checkpoint_callback(folder: str) -> ModelCheckpoint:
    return ModelCheckpoint(
        folder, every_n_train_steps=1, save_last=True, save_top_k=2, monitor="train_loss", filename="{step}"
    )


def train(job: dict[str, Any]) -> None:
    began = time.monotonic()
    fk.seed_everything(0, workers=False)
    model = Ballasted()
    data = torch.randn(BATCHES * 4, FEATURES)
    loader = DataLoader(data, batch_size=4, shuffle=True)  # resume must replay the sampler's order too
    ck, clock = checkpoint_callback(job["dir"]), Clock(job["out"])
    trainer = fk.Trainer(
        max_epochs=EPOCHS,
        callbacks=[ck, clock],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=job["dir"],
    )
    trainer.fit(model, loader, ckpt_path=job.get("ckpt_path"))
    weights = {k: v for k, v in model.state_dict().items() if k != "ballast"}
    torch.save(weights, job["out"] + ".weights")
    report = {
        "began": began,
        "train_start": clock.train_start,
        "ended": time.monotonic(),
        "resumed_from": trainer.ckpt_path,
        "global_step": trainer.global_step,
        "best_k_models": sorted(ck.best_k_models),
        "best_model_path": ck.best_model_path,
        "last_model_path": ck.last_model_path,
    }
    with open(job["out"] + ".json", "w") as f:
        json.dump(report, f)


def child(job: dict[str, Any]) -> None:
    code = 1
    try:
        os.makedirs(os.path.dirname(job["out"]), exist_ok=True)
        log = os.open(job["out"] + ".log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)  # the server's stdout is the protocol: keep the child's prints out of it
        os.dup2(log, 2)
        train(job)
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def main() -> None:
    torch.set_num_threads(1)  # before any op: a forked child must not inherit a busy thread pool
    # torch.optim imports torch._dynamo on first use (seconds): pay it here, once, not in every child.
    torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    for line in sys.stdin:
        job = json.loads(line)
        if job["cmd"] == "start":
            pid = os.fork()
            if pid == 0:
                child(job)
            answer = {"pid": pid}
        else:
            _, status = os.waitpid(job["pid"], 0)
            answer = {"pid": job["pid"], "returncode": os.waitstatus_to_exitcode(status)}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
