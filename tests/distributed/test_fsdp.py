"""FSDPStrategy: real two-process runs (torchrun, gloo, CPU) checked against single-process training,
plus the option checks and small pieces that need no process group.

Each job in ``_fsdp_job.py`` trains several models in one torchrun launch (about ten
seconds, most of it starting Python and importing torch twice); the tests below
share the launches through module-scoped fixtures.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import _fsdp_job as job
import _jobs
import pytest
import torch
import torch.distributed.fsdp
from torch import nn

from fitkit.strategies.fsdp import FSDPStrategy, _RootForwardRedirect, sharded_to_full_checkpoint
from fitkit.testing import quiet_trainer
from fitkit.utilities.exceptions import FitkitTypeError, MisconfigurationError

if not hasattr(torch.distributed.fsdp, "fully_shard"):
    pytest.skip(f"torch {torch.__version__} has no public fully_shard (FSDP2, torch >= 2.6)", allow_module_level=True)

HERE = Path(__file__).parent
ATOL = 1e-6


def _launch(name: str, out: Path, torchrun: bool = True) -> Path:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    if not torchrun:
        cmd = [sys.executable]
    result = _jobs.run([*cmd, str(HERE / "_fsdp_job.py"), name, str(out)], timeout=240, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return out


@pytest.fixture(scope="module")
def full_job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _launch("full", tmp_path_factory.mktemp("fsdp_full"))


@pytest.fixture(scope="module")
def sharded_job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _launch("sharded", tmp_path_factory.mktemp("fsdp_sharded"))


@pytest.fixture(scope="module")
def launched_job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _launch("launcher", tmp_path_factory.mktemp("fsdp_launcher"), torchrun=False)


def _reference(**kwargs: Any) -> dict[str, torch.Tensor]:
    """The same model trained in this process on whole global batches."""
    model = job.Regressor(0)
    trainer = quiet_trainer(accelerator="cpu", devices=1, max_epochs=2, **{**job.FIT_KWARGS, **kwargs})
    trainer.fit(model, job.loader(job.GLOBAL_BATCH))
    return model.state_dict()


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    return _reference()


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _assert_close(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for key, value in want.items():
        assert type(got[key]) is torch.Tensor, key  # plain tensors, not DTensor shards
        torch.testing.assert_close(got[key], value, atol=ATOL, rtol=1e-5, msg=key)


# -- two processes ---------------------------------------------------------------------------------
def test_fsdp_training_matches_single_process(full_job: Path, reference: dict[str, torch.Tensor]) -> None:
    # Each rank sees half of every global batch; clipping by norm runs on DTensor gradients.
    _assert_close(_weights(full_job / "uninterrupted.ckpt"), reference)
    # Validation between epochs (inference_mode) and a step that skips self(x) change nothing.
    _assert_close(_weights(full_job / "validated.ckpt"), reference)
    _assert_close(_weights(full_job / "direct.ckpt"), reference)


def test_fsdp_model_checkpoint_saves_a_full_file(full_job: Path) -> None:
    (best,) = os.listdir(full_job / "best")
    assert best == "epoch=1-step=8.ckpt"
    model = job.Regressor.load_from_checkpoint(full_job / "best" / best)
    _assert_close(model.state_dict(), _weights(full_job / "validated.ckpt"))


def test_fsdp_mixed_precision_and_options_train(sharded_job: Path, reference: dict[str, torch.Tensor]) -> None:
    # bf16 compute with fp32 reduction: near the fp32 run (which moves each weight by 0.1 or more).
    got = _weights(sharded_job / "mixed.ckpt")
    for key, value in reference.items():
        assert got[key].dtype == torch.float32
        torch.testing.assert_close(got[key], value, atol=5e-3, rtol=0, msg=key)


def test_fsdp_accumulation_matches_single_process(full_job: Path) -> None:
    _assert_close(_weights(full_job / "accumulated.ckpt"), _reference(accumulate_grad_batches=2))


def test_fsdp_full_checkpoint_resumes_fsdp(full_job: Path) -> None:
    resumed = torch.load(full_job / "resumed.ckpt", weights_only=True)
    uninterrupted = torch.load(full_job / "uninterrupted.ckpt", weights_only=True)
    assert resumed["global_step"] == uninterrupted["global_step"] == 8
    _assert_close(resumed["state_dict"], uninterrupted["state_dict"])


def test_fsdp_full_checkpoint_loads_on_one_device(full_job: Path, reference: dict[str, torch.Tensor]) -> None:
    mid = full_job / "mid.ckpt"
    checkpoint = torch.load(mid, weights_only=True)
    # Keyed like a single-device optimizer: parameters numbered in param_groups order.
    assert checkpoint["optimizer_states"][0]["param_groups"][0]["params"] == [0, 1, 2, 3, 4]
    assert sorted(checkpoint["optimizer_states"][0]["state"]) == [0, 1, 2, 3, 4]

    model = job.Regressor.load_from_checkpoint(mid)
    _assert_close(model.state_dict(), checkpoint["state_dict"])

    resumed = job.Regressor(seed=5)
    trainer = quiet_trainer(accelerator="cpu", devices=1, max_epochs=2, **job.FIT_KWARGS)
    trainer.fit(resumed, job.loader(job.GLOBAL_BATCH), ckpt_path=str(mid))
    assert trainer.global_step == 8
    _assert_close(resumed.state_dict(), reference)


def test_fsdp_sharded_checkpoint_resume(sharded_job: Path, reference: dict[str, torch.Tensor]) -> None:
    mid = sharded_job / "mid"
    assert {".metadata", "meta.ckpt"} <= set(os.listdir(mid))
    assert not [n for n in os.listdir(sharded_job) if n.endswith((".partial", ".old"))]
    for name in ("uninterrupted", "resumed", "resumed_from_full"):
        sharded_to_full_checkpoint(sharded_job / name, sharded_job / f"{name}.ckpt")
        _assert_close(_weights(sharded_job / f"{name}.ckpt"), reference)


def test_fsdp_sharded_checkpoint_converts_for_one_device(
    sharded_job: Path, reference: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    sharded_to_full_checkpoint(sharded_job / "mid", tmp_path / "mid.ckpt")
    model = job.Regressor(seed=5)
    trainer = quiet_trainer(accelerator="cpu", devices=1, max_epochs=2, **job.FIT_KWARGS)
    trainer.fit(model, job.loader(job.GLOBAL_BATCH), ckpt_path=str(tmp_path / "mid.ckpt"))
    _assert_close(model.state_dict(), reference)
    with pytest.raises(MisconfigurationError, match="sharded checkpoint loads only"):
        quiet_trainer(accelerator="cpu", devices=1, strategy=FSDPStrategy(), max_epochs=2).fit(
            job.Regressor(), job.loader(job.GLOBAL_BATCH), ckpt_path=str(sharded_job / "mid")
        )


def test_fsdp_under_fitkit_launcher(launched_job: Path, reference: dict[str, torch.Tensor]) -> None:
    # Plain `python script.py`: fitkit starts the second process and the group; the group
    # outlives fit, so save_checkpoint and test() after fit still gather the shards.
    _assert_close(_weights(launched_job / "launched.ckpt"), reference)
    model = job.Regressor(0)
    model.load_state_dict(reference)
    (want,) = quiet_trainer(accelerator="cpu", devices=1).test(model, job.loader(job.GLOBAL_BATCH), verbose=False)
    got = torch.load(launched_job / "launched_test.pt", weights_only=True)
    assert got["test_loss"] == pytest.approx(want["test_loss"], abs=1e-6)


# -- one process -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"state_dict_type": "local"}, MisconfigurationError, "state_dict_type='local'"),
        ({"auto_wrap_policy": nn.Linear}, FitkitTypeError, r"Expected \{Linear\}"),
        ({"auto_wrap_policy": {nn.Linear, 3}}, FitkitTypeError, "not a torch.nn.Module subclass"),
        ({"auto_wrap_policy": "transformer"}, FitkitTypeError, "cannot tell which submodules"),
        ({"mixed_precision": "bf16"}, FitkitTypeError, "MixedPrecisionPolicy"),
        ({"cpu_offload": "yes"}, FitkitTypeError, "cpu_offload='yes'"),
        ({"reshard_after_forward": 0}, MisconfigurationError, "reshard_after_forward=0"),
        ({"reshard_after_forward": "yes"}, MisconfigurationError, "True, False or an int"),
    ],
)
def test_fsdp_bad_options(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        FSDPStrategy(**kwargs)


def test_fsdp_good_options() -> None:
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy

    s = FSDPStrategy(
        auto_wrap_policy=lambda m: isinstance(m, nn.Linear),
        mixed_precision=MixedPrecisionPolicy(param_dtype=torch.bfloat16),
        cpu_offload=True,
        reshard_after_forward=False,
        state_dict_type="sharded",
    )
    assert isinstance(s.cpu_offload, CPUOffloadPolicy)
    assert s.name == "fsdp"


def test_fsdp_one_process_trains_unsharded(reference: dict[str, torch.Tensor]) -> None:
    model = job.Regressor(0)
    trainer = quiet_trainer(accelerator="cpu", devices=1, strategy=FSDPStrategy(), max_epochs=2, **job.FIT_KWARGS)
    trainer.fit(model, job.loader(job.GLOBAL_BATCH))
    _assert_close(model.state_dict(), reference)


class _Recorder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[Any] = []

    def set_requires_gradient_sync(self, flag: bool) -> None:
        self.calls.append(flag)

    def forward(self, x: Any) -> Any:
        self.calls.append(("forward", x))
        return x

    def training_step(self, x: Any) -> Any:
        self.calls.append(("step", x))
        return self(x) + 1


def test_fsdp_no_sync_toggles_gradient_sync() -> None:
    s = FSDPStrategy()
    rec = _Recorder()
    assert s.no_sync().__class__.__name__ == "nullcontext"  # nothing sharded yet
    s.module, s._sharded = rec, True
    with s.no_sync():
        assert rec.calls == [False]
    assert rec.calls == [False, True]


def test_fsdp_step_redirect_runs_step_as_forward() -> None:
    rec = _Recorder()
    seen: list[Any] = []
    rec.register_forward_pre_hook(lambda m, args: seen.append(args))
    step = _RootForwardRedirect(rec, rec.training_step)
    assert step(1) == 2
    # The hooks ran for the redirected call and for self(x) inside it; forward is restored.
    assert seen == [(1,), (1,)]
    assert rec.calls == [("step", 1), ("forward", 1)]
    assert "forward" not in rec.__dict__


def test_fsdp_needs_fully_shard(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(torch.distributed.fsdp, "fully_shard")  # as on torch < 2.6
    with pytest.raises(MisconfigurationError, match=r"strategy='fsdp'.*fully_shard.*torch >= 2\.6"):
        FSDPStrategy()
