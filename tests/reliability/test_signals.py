"""Ctrl-C and SIGTERM during a stage: real signals, real child processes, real gloo ranks.

In-process tests send the signal to this very process (``os.kill(os.getpid(), ...)``
from inside ``training_step``), so the handler runs for real without paying for a
child. The subprocess tests start ``_signal_script.py``, wait until it says it reached
a step, and signal it from here; the DDP test starts two ranks itself (torchrun-style
variables) and signals one of them only. Resumed runs are compared bitwise with an
uninterrupted one.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

import fitkit as fk
from fitkit.callbacks import OnExceptionCheckpoint
from fitkit.strategies.launchers.launcher import find_free_port
from fitkit.testing import BoringModule, RandomDataset, quiet_trainer
from fitkit.trainer.signals import SIGTERM_EXIT_CODE, SIGTERMException
from fitkit.trainer.state import TrainerStatus

HERE = Path(__file__).parent
SCRIPT = HERE / "_signal_script.py"
sys.path.insert(0, str(HERE))
import _signal_script  # noqa: E402

TIMEOUT_S = 120  # a loaded CI machine; a healthy run takes seconds
STEPS_PER_EPOCH = 16  # 128 samples, batch 8
KILL_AT = 5  # mid-epoch


# -- helpers -----------------------------------------------------------------------------------
def _cfg(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {"ckpt_dir": str(tmp_path / "ckpt"), "out": str(tmp_path / "result.json"), **extra}


def _ckpt(tmp_path: Path) -> Path:
    return tmp_path / "ckpt" / "on_exception.ckpt"


def _reference(tmp_path: Path, **extra: Any) -> dict[str, torch.Tensor]:
    """Final weights of the uninterrupted run (in this process)."""
    model, trainer, _ = _signal_script.train(_cfg(tmp_path / "reference", **extra))
    assert trainer.state.finished and trainer.global_step == 2 * STEPS_PER_EPOCH // extra.get("accumulate", 1)
    return model.state_dict()


def _resume(tmp_path: Path, **extra: Any) -> tuple[dict[str, torch.Tensor], fk.Trainer]:
    model, trainer, _ = _signal_script.train(_cfg(tmp_path, ckpt_path="last", **extra))
    return model.state_dict(), trainer


def _assert_bitwise(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for key in got:
        assert torch.equal(got[key], want[key]), key


def _handlers() -> tuple[Any, Any]:
    return signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)


def _start(cfg: dict[str, Any], stderr: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), json.dumps(cfg)],
        stdout=subprocess.PIPE,
        stderr=stderr.open("wb"),
        env=env,
        start_new_session=True,  # so a timeout can kill it and anything it started
    )


def _wait_for_line(proc: subprocess.Popen[bytes], marker: bytes, timeout: float = TIMEOUT_S) -> None:
    assert proc.stdout is not None
    fd, seen, deadline = proc.stdout.fileno(), b"", time.monotonic() + timeout
    while marker not in seen:
        left = deadline - time.monotonic()
        if left <= 0 or (proc.poll() is not None and not select.select([fd], [], [], 0)[0]):
            _kill(proc)
            raise AssertionError(f"child never printed {marker!r} (exit {proc.returncode}); stdout: {seen!r}")
        if select.select([fd], [], [], min(left, 0.5))[0]:
            seen += os.read(fd, 4096)


def _finish(proc: subprocess.Popen[bytes], timeout: float = TIMEOUT_S) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _kill(proc)
        raise


def _kill(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _result(cfg: dict[str, Any], rank: int = 0) -> dict[str, Any]:
    with open(f"{cfg['out']}.{rank}") as f:
        return json.load(f)  # type: ignore[no-any-return]


class RecordException(fk.Callback):
    def __init__(self) -> None:
        self.seen: list[BaseException] = []

    def on_exception(self, trainer: fk.Trainer, module: fk.Module, exception: BaseException) -> None:
        self.seen.append(exception)


# -- in this process ---------------------------------------------------------------------------
def test_sigint_stops_after_the_step_and_fit_returns(tmp_path: Path) -> None:
    want = _reference(tmp_path)
    before = _handlers()
    record = RecordException()
    cfg = _cfg(tmp_path, kill=[KILL_AT, [signal.SIGINT]], callbacks=[record])
    _, trainer, logger = _signal_script.train(cfg)  # returns: no KeyboardInterrupt reaches us
    assert trainer.interrupted and not trainer.received_sigterm
    assert trainer.state.status == TrainerStatus.INTERRUPTED
    assert trainer.global_step == KILL_AT + 1  # the step the signal arrived in was completed
    assert [type(e) for e in record.seen] == [KeyboardInterrupt]
    assert logger.status == "interrupted"
    assert _handlers() == before
    checkpoint = torch.load(_ckpt(tmp_path), weights_only=True)
    assert checkpoint["global_step"] == KILL_AT + 1 and checkpoint["progress"]["epoch_batches"] == KILL_AT + 1
    got, resumed = _resume(tmp_path)
    assert resumed.ckpt_path == str(_ckpt(tmp_path)) and resumed.global_step == 2 * STEPS_PER_EPOCH
    _assert_bitwise(got, want)


def test_sigterm_saves_then_exits_143(tmp_path: Path) -> None:
    want = _reference(tmp_path)
    before = _handlers()
    cfg = _cfg(tmp_path, kill=[STEPS_PER_EPOCH + KILL_AT, [signal.SIGTERM]])
    model, trainer, loader, logger = _signal_script.build(cfg)
    with pytest.raises(SIGTERMException) as info:
        trainer.fit(model, loader)
    assert isinstance(info.value, SystemExit) and info.value.code == SIGTERM_EXIT_CODE == 143
    assert trainer.received_sigterm and trainer.interrupted and logger.status == "interrupted"
    assert _handlers() == before
    assert torch.load(_ckpt(tmp_path), weights_only=True)["global_step"] == STEPS_PER_EPOCH + KILL_AT + 1
    got, _ = _resume(tmp_path)
    _assert_bitwise(got, want)


def test_interruption_waits_for_the_end_of_an_accumulation_window(tmp_path: Path) -> None:
    want = _reference(tmp_path, accumulate=4)
    cfg = _cfg(tmp_path, accumulate=4, kill=[KILL_AT, [signal.SIGINT]])  # batch 5 of the window 4..7
    _, trainer, _ = _signal_script.train(cfg)
    assert trainer.interrupted and trainer.global_step == 2 and trainer.progress.epoch_batches == 8
    got, _ = _resume(tmp_path, accumulate=4)
    _assert_bitwise(got, want)


def test_keyboard_interrupt_raised_by_code_takes_the_same_path(tmp_path: Path) -> None:
    class Raises(BoringModule):
        def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
            if self.global_step == 3:
                raise KeyboardInterrupt
            return super().training_step(batch, batch_idx)

    record = RecordException()
    callback = OnExceptionCheckpoint(tmp_path)
    trainer = quiet_trainer(max_epochs=1, callbacks=[record, callback], enable_checkpointing=True)
    trainer.fit(Raises(), DataLoader(RandomDataset(32, 16), batch_size=2))
    assert trainer.interrupted and trainer.global_step == 3
    assert [type(e) for e in record.seen] == [KeyboardInterrupt]
    assert os.path.isfile(callback.ckpt_path)


def test_a_second_signal_raises_at_once_and_saves_nothing(tmp_path: Path) -> None:
    before = _handlers()
    record = RecordException()
    cfg = _cfg(tmp_path, kill=[KILL_AT, [signal.SIGINT, signal.SIGINT]], callbacks=[record])
    model, trainer, loader, _ = _signal_script.build(cfg)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(model, loader)
    assert trainer.interrupted and trainer.global_step == KILL_AT  # raised inside the step
    assert record.seen == [] and not _ckpt(tmp_path).exists()
    assert _handlers() == before


def test_sigterm_after_the_last_step_ends_the_process_once_fit_is_done(tmp_path: Path) -> None:
    class LateSigterm(BoringModule):
        def on_train_end(self) -> None:
            os.kill(os.getpid(), signal.SIGTERM)

    trainer = quiet_trainer(max_epochs=1)
    with pytest.raises(SIGTERMException):
        trainer.fit(LateSigterm(), DataLoader(RandomDataset(32, 8), batch_size=2))
    assert trainer.state.finished and not trainer.interrupted and trainer.received_sigterm


@pytest.mark.parametrize("stage", ["test", "predict"])
def test_sigint_stops_evaluation_after_the_batch(tmp_path: Path, stage: str) -> None:
    seen: list[int] = []

    class Eval(BoringModule):
        def test_step(self, batch: Any, batch_idx: int, *args: Any) -> None:
            self.step(batch_idx)

        def predict_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
            self.step(batch_idx)
            return batch

        def step(self, batch_idx: int) -> None:
            seen.append(batch_idx)
            if batch_idx == 2:
                os.kill(os.getpid(), signal.SIGINT)

    trainer = quiet_trainer()
    out = getattr(trainer, stage)(Eval(), DataLoader(RandomDataset(32, 16), batch_size=2))
    assert out is None and trainer.interrupted and seen == [0, 1, 2]


def test_handlers_are_left_alone_outside_the_main_thread(tmp_path: Path) -> None:
    before = _handlers()
    during: list[Any] = []

    class Raises(BoringModule):
        def training_step(self, batch: Any, batch_idx: int, *args: Any) -> Any:
            during.append(_handlers())
            if batch_idx == 1:
                raise KeyboardInterrupt  # still the graceful path, without handlers
            return super().training_step(batch, batch_idx)

    trainer = quiet_trainer(max_epochs=1)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            trainer.fit(Raises(), DataLoader(RandomDataset(32, 8), batch_size=2))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(TIMEOUT_S)
    assert not errors and trainer.interrupted
    assert during == [before, before] and _handlers() == before


# -- a real child process, signalled from here --------------------------------------------------
@pytest.mark.slow
def test_child_sigint_returns_then_a_second_sigint_aborts_at_once(tmp_path: Path) -> None:
    # One child, two fits: the first gets one SIGINT, the second two (to save a start-up).
    second = _cfg(tmp_path / "second", signal_at=2, twice=True)
    cfg = _cfg(tmp_path, signal_at=KILL_AT, then=second)
    proc = _start(cfg, tmp_path / "stderr.txt")
    _wait_for_line(proc, f"REACHED {KILL_AT}".encode())
    proc.send_signal(signal.SIGINT)
    _wait_for_line(proc, b"REACHED 2")  # the first fit returned; the second one is paused
    assert _result(cfg) == {
        "returned": True,
        "interrupted": True,
        "received_sigterm": False,
        "global_step": KILL_AT,
        "logger_status": "interrupted",
        "sigint_restored": True,
        "sigterm_restored": True,
    }
    assert torch.load(_ckpt(tmp_path), weights_only=True)["global_step"] == KILL_AT

    proc.send_signal(signal.SIGINT)
    _wait_for_line(proc, b"GOT1")
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)  # the child is in the middle of a hook: KeyboardInterrupt there
    code = _finish(proc)
    elapsed = time.monotonic() - sent
    stderr = (tmp_path / "stderr.txt").read_text()
    assert code != 0 and "KeyboardInterrupt" in stderr, stderr
    assert elapsed < _signal_script.WAIT_S / 2  # not once the paused hook gave up
    assert not _ckpt(tmp_path / "second").exists()  # no checkpoint from the middle of a step
    assert _result(second)["interrupted"] and _result(second)["global_step"] == 2


@pytest.mark.slow
def test_child_sigterm_exits_143_and_resumes_exactly(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, signal_at=KILL_AT)
    proc = _start(cfg, tmp_path / "stderr.txt")
    _wait_for_line(proc, b"REACHED")
    proc.send_signal(signal.SIGTERM)
    assert _finish(proc) == 143, (tmp_path / "stderr.txt").read_text()
    result = _result(cfg)
    assert result["exit_code"] == 143 and result["received_sigterm"] and result["interrupted"]
    assert result["global_step"] == KILL_AT and result["logger_status"] == "interrupted"
    assert result["sigterm_restored"] and result["sigint_restored"]
    assert torch.load(_ckpt(tmp_path), weights_only=True)["global_step"] == KILL_AT
    got, _ = _resume(tmp_path)
    _assert_bitwise(got, _reference(tmp_path))


# -- two gloo ranks, one of them signalled ------------------------------------------------------
def _rank_env(rank: int, port: int, agreement_s: str | None = "0") -> dict[str, str]:
    # FITKIT_SIGNAL_AGREEMENT_S=0: the ranks exchange flags at every step boundary, so a
    # signal takes effect exactly one boundary later; None keeps the default spacing.
    env = {k: v for k, v in os.environ.items() if k != "FITKIT_SIGNAL_AGREEMENT_S"}
    if agreement_s is not None:
        env["FITKIT_SIGNAL_AGREEMENT_S"] = agreement_s
    return {
        **env,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
        "WORLD_SIZE": "2",
        "LOCAL_WORLD_SIZE": "2",
        "RANK": str(rank),
        "LOCAL_RANK": str(rank),
        "GROUP_RANK": "0",
        "NODE_RANK": "0",
    }


def _start_ranks(
    cfg: dict[str, Any], tmp_path: Path, tag: str, agreement_s: str | None = "0"
) -> list[subprocess.Popen[bytes]]:
    port = find_free_port()
    return [_start(cfg, tmp_path / f"{tag}.stderr.{r}", _rank_env(r, port, agreement_s)) for r in (0, 1)]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("agreement_s", "step_sleep", "latest_stop"),
    [
        ("0", 0.0, 4),  # a flag exchange at every boundary: the ranks stop exactly one step later
        # The default spacing (0.05 s) over steps of at least 20 ms: an exchange every 2 or
        # fewer boundaries, read one exchange later, so the stop comes 1 to 5 steps later.
        (None, 0.02, 8),
    ],
    ids=["every-boundary", "default-spacing"],
)
def test_ddp_sigterm_to_one_rank_stops_every_rank_and_resumes_exactly(
    tmp_path: Path, agreement_s: str | None, step_sleep: float, latest_stop: int
) -> None:
    # Three two-rank jobs: the uninterrupted reference (beside the interrupted one, to save
    # time), the interrupted one, and the resumed one. One process runs one fit: a second
    # process group in the same processes is another test's business.
    signal_at = 3  # 8 steps per epoch on each of two ranks: mid-epoch
    reference = tmp_path / "reference.pt"
    ref_cfg = _cfg(tmp_path / "reference", ddp=True, weights_out=str(reference))
    cfg = _cfg(tmp_path, ddp=True, signal_at=signal_at, pause_rank=1, step_sleep=step_sleep)
    procs = _start_ranks(ref_cfg, tmp_path, "reference") + _start_ranks(cfg, tmp_path, "run", agreement_s)
    try:
        _wait_for_line(procs[3], b"REACHED")
        procs[3].send_signal(signal.SIGTERM)  # rank 1 only; rank 0 learns it from the all-reduce
        codes = [_finish(p, timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                _kill(p)
    logs = "".join((tmp_path / f"{tag}.stderr.{r}").read_text() for tag in ("reference", "run") for r in (0, 1))
    assert codes == [0, 0, 143, 143], logs
    stops = {_result(cfg, rank)["global_step"] for rank in (0, 1)}
    assert len(stops) == 1, stops  # every rank stops at the same step
    stop = stops.pop()
    assert signal_at + 1 <= stop <= latest_stop, stop
    for rank in (0, 1):
        result = _result(cfg, rank)
        assert result["exit_code"] == 143 and result["received_sigterm"] and result["interrupted"], result
        assert result["sigterm_restored"], result
    assert torch.load(_ckpt(tmp_path), weights_only=True)["global_step"] == stop

    weights = tmp_path / "resumed.pt"
    resume = _cfg(tmp_path, ddp=True, ckpt_path="last", weights_out=str(weights), out=str(tmp_path / "resumed"))
    procs = _start_ranks(resume, tmp_path, "resume")
    codes = [_finish(p) for p in procs]
    logs = "".join((tmp_path / f"resume.stderr.{r}").read_text() for r in (0, 1))
    assert codes == [0, 0], logs
    assert _result(resume)["global_step"] == 16 and not _result(resume)["interrupted"]
    _assert_bitwise(torch.load(weights, weights_only=True), torch.load(reference, weights_only=True))


@pytest.mark.slow
def test_ddp_sigterm_after_the_last_boundary_ends_every_rank_with_143(tmp_path: Path) -> None:
    # The signal reaches rank 1 during the last step (16 of 16), after the last flag
    # exchange inside the loop. The stage's end settles that exchange and shares the flags
    # once more, so rank 0 learns of the SIGTERM too and both end with 143 once fit is
    # done (as one process does after a late SIGTERM), rather than rank 0 with 0.
    cfg = _cfg(tmp_path, ddp=True, signal_at=16, pause_rank=1)
    procs = _start_ranks(cfg, tmp_path, "run", agreement_s=None)  # shared by the exchange at the stage's end
    try:
        _wait_for_line(procs[1], b"REACHED")
        procs[1].send_signal(signal.SIGTERM)
        codes = [_finish(p, timeout=60) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                _kill(p)
    logs = "".join((tmp_path / f"run.stderr.{r}").read_text() for r in (0, 1))
    assert codes == [143, 143], logs
    for rank in (0, 1):
        result = _result(cfg, rank)
        assert result["exit_code"] == 143 and result["received_sigterm"], result
        assert result["global_step"] == 16 and not result["interrupted"], result  # fit had finished
        assert result["sigterm_restored"], result


@pytest.mark.parametrize("value", ["soon", "-1", "nan"])
def test_a_bad_signal_agreement_spacing_is_refused_with_its_name(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    from fitkit.trainer import signals

    monkeypatch.setenv("FITKIT_SIGNAL_AGREEMENT_S", value)
    with pytest.raises(fk.MisconfigurationError, match=r"FITKIT_SIGNAL_AGREEMENT_S.*seconds >= 0"):
        signals._agreement_seconds()


def test_the_signal_agreement_spacing_defaults_and_accepts_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    from fitkit.trainer import signals

    monkeypatch.delenv("FITKIT_SIGNAL_AGREEMENT_S", raising=False)
    assert signals._agreement_seconds() == 0.05
    monkeypatch.setenv("FITKIT_SIGNAL_AGREEMENT_S", "0")
    assert signals._agreement_seconds() == 0.0


@pytest.mark.parametrize(("agreement_s", "fewest", "most"), [("0", 60, 60), ("0.02", 3, 30)])
def test_the_flag_exchanges_are_spaced_by_the_step_time(
    monkeypatch: pytest.MonkeyPatch, agreement_s: str, fewest: int, most: int
) -> None:
    """60 boundaries of about 2 ms: every one exchanges with 0, about one in ten with 0.02 s.

    The bounds are wide for a loaded machine, where a 2 ms sleep lasts longer.
    """
    import torch.distributed as dist

    from fitkit.trainer import signals

    monkeypatch.setenv("FITKIT_SIGNAL_AGREEMENT_S", agreement_s)
    trainer = fk.Trainer(accelerator="cpu", devices=2, strategy="ddp", logger=False, enable_progress_bar=False)
    guard = signals.SignalGuard(trainer, "fit")
    assert guard.collective  # two processes planned: the flags are agreed through all-reduces
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)  # a real one-rank group
    try:
        exchanges, work = 0, None
        for _ in range(60):
            time.sleep(0.002)  # a step
            assert guard.exchange(signals._NONE) == signals._NONE
            exchanges += guard._work is not work
            work = guard._work
    finally:
        guard._agreed()
        dist.destroy_process_group()
    assert fewest <= exchanges <= most, exchanges
