"""Checkpoints written to a full or read-only disk, or past the file-size limit.

Real file systems, no mocks: a size-limited tmpfs mounted for the test (root only;
the tests skip with the reason otherwise) that is filled up or remounted read-only in
the middle of a run, and, on any POSIX machine, ``RLIMIT_FSIZE`` set in a child
process so the kernel fails the write with EFBIG. Each time: the error names the path
and the cause and is chained from the ``OSError``, no temporary file is left, the
older checkpoints are byte-for-byte what they were and load, ModelCheckpoint's
bookkeeping names exactly the files that exist, and the run resumes from them.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import _sigkill_script
import pytest
import torch
from torch.utils.data import DataLoader

import fitkit as fk
from fitkit import checkpoint as ckpt_io
from fitkit.callbacks import ModelCheckpoint
from fitkit.utilities.exceptions import FitkitRuntimeError

FEATURES = _sigkill_script.FEATURES
BALLAST = 2**16  # float32s: a checkpoint of about 260 kB
FAIL_AT = 4  # the optimizer step whose checkpoint does not fit
STEPS = 8
posix_only = pytest.mark.skipif(os.name != "posix", reason="RLIMIT_FSIZE and mounts are POSIX")


class Ballasted(_sigkill_script.Ballasted):
    """The SIGKILL test's module, with a ``BALLAST``-float buffer: each checkpoint is about 260 kB."""

    def __init__(self) -> None:
        super().__init__(BALLAST)


class AtStep(fk.Callback):
    """At the end of optimizer step ``step``, before ModelCheckpoint (which runs last) saves it: note what
    ``folder`` holds, then run ``action``."""

    def __init__(self, step: int, folder: Path, action: Callable[[], None]) -> None:
        self.step, self.folder, self.action = step, folder, action
        self.snapshot: dict[str, str] = {}

    def on_train_batch_end(self, trainer: fk.Trainer, module: fk.Module, outputs: Any, batch: Any, i: int) -> None:
        if trainer.global_step == self.step:
            self.snapshot = digests(self.folder)
            self.action()


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def checkpoint_callback(folder: Path) -> ModelCheckpoint:
    return ModelCheckpoint(
        folder, every_n_train_steps=1, save_top_k=2, monitor="train_loss", save_last=True, filename="{step}"
    )


def run(folder: Path, callbacks: list[fk.Callback], ckpt_path: str | None = None) -> Ballasted:
    """Train ``STEPS`` steps; ``callbacks`` hold the run's ModelCheckpoint, or one saving to ``folder`` is added."""
    if not any(isinstance(cb, ModelCheckpoint) for cb in callbacks):
        callbacks = [*callbacks, checkpoint_callback(folder)]
    fk.seed_everything(0, workers=False)
    model = Ballasted()
    loader = DataLoader(torch.randn(STEPS * 2, FEATURES), batch_size=2, shuffle=True)
    trainer = fk.Trainer(
        max_epochs=1,
        callbacks=callbacks,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=folder.parent,
    )
    trainer.fit(model, loader, ckpt_path=ckpt_path)
    return model


def check_write_error(err: BaseException, code: int, path_start: Path) -> None:
    """The house error: a FitkitRuntimeError (and an OSError) naming the path and cause, chained from the OSError."""
    assert isinstance(err, FitkitRuntimeError) and isinstance(err, OSError), type(err).__mro__
    assert err.errno == code
    assert isinstance(err.__cause__, OSError) and err.__cause__.errno == code
    message = str(err)
    assert message.startswith(f"Could not write checkpoint '{path_start}"), message
    assert f"({errno.errorcode[code]})" in message and os.strerror(code) in message, message


def check_left_as_before(ck: ModelCheckpoint, folder: Path, snapshot: dict[str, str]) -> None:
    """Nothing was deleted or changed, every file loads, and the bookkeeping names exactly those files."""
    assert digests(folder) == snapshot
    assert not [n for n in snapshot if n.endswith(".tmp")]
    steps = {name: ckpt_io.load(folder / name)["global_step"] for name in snapshot}
    assert max(steps.values()) == FAIL_AT - 1 and steps["last.ckpt"] == FAIL_AT - 1
    tracked = {*ck.best_k_models, ck.best_model_path, ck.last_model_path}
    assert tracked == {str(folder / name) for name in snapshot}
    assert ck.best_model_path in ck.best_k_models and len(ck.best_k_models) == 2
    assert ck.kth_best_model_path in ck.best_k_models


def check_resumes(folder: Path, elsewhere: Path) -> None:
    """From what the failure left, ``ckpt_path="last"`` reaches the uninterrupted run's (in ``elsewhere``) weights
    bitwise."""
    resumed = run(folder, [], ckpt_path="last")
    reference = run(elsewhere, [])
    for (name, a), b in zip(resumed.state_dict().items(), reference.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


# -- a real tmpfs, full or read-only ---------------------------------------------------------
@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs mounted at ``tmp_path / "mnt"`` for this test, always unmounted afterwards."""
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs Linux, root and mount(8)")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        if subprocess.run(["umount", str(mnt)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mnt)], check=True)


def fill(path: Path) -> None:
    """Write ``path`` until the file system says ENOSPC: nothing more fits (an empty file still does)."""
    chunk = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:  # unbuffered: no data left over for close() to fail on
        try:
            while True:
                f.write(chunk)
        except OSError as err:
            assert err.errno == errno.ENOSPC


def remount(mnt: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(mnt)], check=True, capture_output=True)


def test_a_full_disk_fails_the_save_clearly_and_keeps_the_older_checkpoints(tmpfs: Path) -> None:
    folder, filler = tmpfs / "ck", tmpfs / "filler"
    at, ck = AtStep(FAIL_AT, folder, lambda: fill(filler)), checkpoint_callback(folder)
    with pytest.raises(FitkitRuntimeError) as info:
        run(folder, [at, ck])
    check_write_error(info.value, errno.ENOSPC, folder)
    check_left_as_before(ck, folder, at.snapshot)
    filler.unlink()  # space again: the run resumes from what the failure left
    check_resumes(folder, tmpfs.parent / "reference")


def test_a_read_only_disk_fails_the_save_clearly_and_keeps_the_older_checkpoints(tmpfs: Path) -> None:
    folder = tmpfs / "ck"
    at, ck = AtStep(FAIL_AT, folder, lambda: remount(tmpfs, "ro")), checkpoint_callback(folder)
    with pytest.raises(FitkitRuntimeError) as info:
        run(folder, [at, ck])
    check_write_error(info.value, errno.EROFS, folder)
    check_left_as_before(ck, folder, at.snapshot)
    remount(tmpfs, "rw")
    check_resumes(folder, tmpfs.parent / "reference")


def test_trainer_save_checkpoint_to_a_full_or_read_only_disk(tmpfs: Path) -> None:
    path = tmpfs / "model.ckpt"
    trainer = fk.Trainer(max_steps=1, logger=False, enable_progress_bar=False, enable_checkpointing=False)
    trainer.fit(Ballasted(), DataLoader(torch.randn(2, FEATURES), batch_size=2))
    trainer.save_checkpoint(path)
    before = path.read_bytes()
    with torch.no_grad():
        trainer.module.layer.weight.add_(1.0)  # type: ignore[union-attr]
    fill(tmpfs / "filler")
    with pytest.raises(FitkitRuntimeError) as info:
        trainer.save_checkpoint(path)
    check_write_error(info.value, errno.ENOSPC, path)
    assert path.read_bytes() == before and sorted(os.listdir(tmpfs)) == ["filler", "model.ckpt"]
    (tmpfs / "filler").unlink()
    remount(tmpfs, "ro")
    with pytest.raises(FitkitRuntimeError) as info:
        trainer.save_checkpoint(tmpfs / "sub" / "other.ckpt")  # the folder cannot even be made
    check_write_error(info.value, errno.EROFS, tmpfs / "sub" / "other.ckpt")
    with pytest.raises(OSError, match="Read-only file system") as info:  # `except OSError` still works
        trainer.save_checkpoint(path)
    assert path.read_bytes() == before and sorted(os.listdir(tmpfs)) == ["model.ckpt"]


def test_trainer_save_checkpoint_under_a_file_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    trainer = fk.Trainer(max_steps=1, logger=False, enable_progress_bar=False, enable_checkpointing=False)
    trainer.fit(Ballasted(), DataLoader(torch.randn(2, FEATURES), batch_size=2))
    with pytest.raises(FitkitRuntimeError, match="A part of the path is a file, not a folder") as info:
        trainer.save_checkpoint(tmp_path / "file" / "model.ckpt")
    assert str(tmp_path / "file" / "model.ckpt") in str(info.value)
    assert isinstance(info.value.__cause__, OSError)


# -- RLIMIT_FSIZE in a child process: EFBIG from the kernel, on any POSIX machine -----------------
def rlimit_child(folder: Path) -> None:
    """Run as ``python test_disk_errors.py <folder>``: the file-size limit lets the checkpoints of the
    first ``FAIL_AT - 1`` steps through, then the module's buffer doubles and the next one is refused."""
    import resource

    probe = folder.parent / "probe.ckpt"
    ckpt_io.atomic_save({**ckpt_io.header(), "ballast": torch.zeros(BALLAST)}, probe)
    limit = int(probe.stat().st_size * 1.5)
    probe.unlink()
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    model_ref: list[fk.Module] = []

    def grow() -> None:
        model_ref[0].ballast = torch.zeros(2 * BALLAST)

    class Grab(fk.Callback):
        def on_train_start(self, trainer: fk.Trainer, module: fk.Module) -> None:
            model_ref.append(module)

    at, ck = AtStep(FAIL_AT, folder, grow), checkpoint_callback(folder)
    report: dict[str, Any] = {"limit": limit}
    try:
        run(folder, [Grab(), at, ck])
    except BaseException as err:
        report["fit"] = describe(err)
    report["snapshot"] = at.snapshot
    report["bookkeeping"] = [sorted(ck.best_k_models), ck.best_model_path, ck.last_model_path, ck.kth_best_model_path]
    trainer = fk.Trainer(max_steps=1, logger=False, enable_progress_bar=False, enable_checkpointing=False)
    trainer.fit(model_ref[0], DataLoader(torch.randn(2, FEATURES), batch_size=2))
    try:
        trainer.save_checkpoint(folder.parent / "manual.ckpt")
    except BaseException as err:
        report["save_checkpoint"] = describe(err)
    (folder.parent / "report.json").write_text(json.dumps(report))


def describe(err: BaseException) -> dict[str, Any]:
    cause = err.__cause__
    return {
        "types": [t.__name__ for t in type(err).__mro__],
        "message": str(err),
        "errno": getattr(err, "errno", None),
        "cause_errno": cause.errno if isinstance(cause, OSError) else None,
    }


@posix_only
@pytest.mark.slow
def test_the_file_size_limit_fails_the_save_clearly_and_keeps_the_older_checkpoints(tmp_path: Path) -> None:
    folder = tmp_path / "ck"
    done = subprocess.run(
        [sys.executable, __file__, str(folder)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "report.json").read_text())
    for what, path in (("fit", folder), ("save_checkpoint", tmp_path / "manual.ckpt")):
        err = report[what]
        assert {"FitkitRuntimeError", "OSError"} <= set(err["types"]), err
        assert err["errno"] == err["cause_errno"] == errno.EFBIG, err
        assert err["message"].startswith(f"Could not write checkpoint '{path}"), err
        assert "File too large (EFBIG)" in err["message"] and "ulimit -f" in err["message"], err
    assert not (tmp_path / "manual.ckpt").exists()
    ck = ModelCheckpoint(folder)  # the child's bookkeeping, checked against the files here
    ck.best_k_models = {p: torch.tensor(0.0) for p in report["bookkeeping"][0]}
    ck.best_model_path, ck.last_model_path, ck.kth_best_model_path = report["bookkeeping"][1:]
    check_left_as_before(ck, folder, report["snapshot"])
    check_resumes(folder, tmp_path / "reference")


if __name__ == "__main__":
    rlimit_child(Path(sys.argv[1]))
