"""Checks for ``examples/distributed.py``: a real 2-process DDP run, and the model-parallel variant.

The DDP run starts the example as a subprocess (fitkit's own launcher starts rank 1), in
its own session, and kills the whole process group if it outlives its timeout.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import _examples
import pytest
import torch

import fitkit

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "distributed.py"
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "distributed"))
import _jobs  # noqa: E402  (tests/distributed/_jobs.py: subprocess runs that leave nothing behind)

pytest.importorskip("sklearn")

TIMEOUT_S = 120


@pytest.fixture(scope="module")
def example() -> Iterator[ModuleType]:
    with _examples.loaded(EXAMPLE, "fitkit_example_distributed") as module:
        yield module


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    # Layers this small only lose from a second thread, badly on a busy machine (the
    # example's own default is --num-threads 1); conftest restores the count afterwards.
    torch.set_num_threads(1)


def _trainer(**kwargs: object) -> fitkit.Trainer:
    defaults: dict = dict(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    )
    defaults.update(kwargs)
    return fitkit.Trainer(**defaults)


def test_ddp_run_on_two_processes_prints_the_metric(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK")}
    cmd = [sys.executable, str(EXAMPLE), "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp"]
    cmd += ["--max-epochs", "1", "--default-root-dir", str(tmp_path)]
    proc = _jobs.run(cmd, timeout=TIMEOUT_S, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    reports = [line for line in lines if line.startswith("val accuracy: ")]
    assert len(reports) == 1, proc.stdout[-3000:]  # global rank zero reports, once
    assert 0.0 <= float(reports[0].split(": ")[1]) <= 1.0
    assert any(line.startswith("2 process(es), 1 epochs") for line in lines), proc.stdout[-3000:]


def test_pipelined_model_matches_the_single_device_model(example: ModuleType) -> None:
    torch.manual_seed(0)
    plain = example.DigitsMLP()
    split = example.PipelinedDigitsMLP(split_size=5).place("cpu", "cpu")
    split.load_state_dict(plain.state_dict())
    x = torch.randn(23, 64)  # not a multiple of split_size: the last micro-batch is short
    expected, got = plain(x), split(x)
    torch.testing.assert_close(got, expected)
    expected.square().sum().backward()
    got.square().sum().backward()
    for (name, p), q in zip(plain.named_parameters(), split.parameters(), strict=True):
        torch.testing.assert_close(q.grad, p.grad, msg=name)


def test_pipeline_strategy_places_the_halves_and_trains_like_one_device(example: ModuleType) -> None:
    placed: list[tuple[torch.device, torch.device]] = []

    class Recording(example.PipelinedDigitsMLP):  # type: ignore[name-defined,misc]
        def place(self, device_a: torch.device | str, device_b: torch.device | str) -> object:
            placed.append((torch.device(device_a), torch.device(device_b)))
            return super().place(device_a, device_b)

    results = []
    for model_parallel in (False, True):
        fitkit.seed_everything(0)
        train, val = example.digits_loaders(batch_size=64, seed=0)
        model = Recording(split_size=16) if model_parallel else example.DigitsMLP()
        strategy = example.PipelineStrategy("cpu", "cpu") if model_parallel else "auto"
        trainer = _trainer(max_epochs=4, accelerator="cpu", strategy=strategy)
        trainer.fit(model, train, val)
        results.append((model, float(trainer.callback_metrics["val_acc"])))
    (plain, plain_acc), (split, split_acc) = results
    assert placed == [(torch.device("cpu"), torch.device("cpu"))]  # by the strategy, once
    assert split_acc > 0.8, split_acc  # it trains (chance is 0.1)
    # The same weights, data order and updates; only the float summation order differs.
    for (name, p), q in zip(plain.named_parameters(), split.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5, msg=name)
    assert abs(split_acc - plain_acc) <= 0.01


def test_model_parallel_command_line(example: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    accuracy = example.main(["--model-parallel", "--max-epochs", "1", "--split-size", "20"])
    out = capsys.readouterr().out
    if torch.cuda.device_count() < 2:
        assert "part1 on cpu, part2 on cpu, micro-batches of 20" in out
    assert out.strip().splitlines()[-1] == f"val accuracy: {accuracy:.4f}"
    with pytest.raises(SystemExit, match="runs one process"):
        example.main(["--model-parallel", "--devices", "2"])


@pytest.mark.gpu
def test_halves_on_two_gpus(example: ModuleType) -> None:
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA GPUs")
    torch.manual_seed(0)
    plain = example.DigitsMLP()
    split = example.PipelinedDigitsMLP(split_size=8)
    split.load_state_dict(plain.state_dict())
    split.place("cuda:0", "cuda:1")
    assert {p.device for p in split.part1.parameters()} == {torch.device("cuda:0")}
    assert {p.device for p in split.part2.parameters()} == {torch.device("cuda:1")}
    x = torch.randn(30, 64)
    out = split(x)
    assert out.device == torch.device("cuda:1")
    torch.testing.assert_close(out.cpu(), plain(x), rtol=1e-4, atol=1e-5)
