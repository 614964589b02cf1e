"""``"16-mixed"`` and ``"bf16-mixed"`` on the CPU: autocast, float32 master weights, and for
float16 the gradient scaler, each compared bitwise with the PyTorch AMP recipe."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from _precision_helpers import Net, assert_same_weights, fit, make_loader, needs_cpu_half_kernels, raw_loop, sgd

import fitkit as fk
from fitkit.checkpoint import load
from fitkit.precision import MixedPrecision
from fitkit.testing import quiet_trainer


def small_scaler(**kwargs: Any) -> torch.amp.GradScaler:
    """A scaler whose scale moves within a short run: skips early, grows every 3 good steps."""
    return torch.amp.GradScaler("cpu", **{"init_scale": 2.0**20, "growth_interval": 3, **kwargs})


# -- bf16-mixed ---------------------------------------------------------------------------------
@needs_cpu_half_kernels
def test_bf16_mixed_autocasts_keeps_float32_weights_and_matches_raw_loop() -> None:
    model, trainer, init = fit("bf16-mixed")
    precision = trainer.strategy.precision
    assert isinstance(precision, MixedPrecision) and precision.scaler is None and precision.device == "cpu"
    assert model.seen["hidden"] == {torch.bfloat16}  # the forward ran in bfloat16...
    assert model.seen["param"] == {torch.float32}  # ...on float32 master weights
    assert model.seen["input"] == {torch.float32}  # mixed precision leaves inputs alone
    assert not torch.is_autocast_enabled("cpu")
    trainer.validate(model, make_loader(), verbose=False)
    assert model.seen["val_hidden"] == {torch.bfloat16}

    net, _, _ = raw_loop(init, autocast=torch.bfloat16)
    assert_same_weights(model.net, net, init)
    assert trainer.strategy.precision.state_dict() == {}


# -- 16-mixed -----------------------------------------------------------------------------------
def test_16_mixed_matches_the_raw_amp_loop() -> None:
    model, trainer, init = fit("16-mixed")
    assert model.seen["hidden"] == {torch.float16} and model.seen["param"] == {torch.float32}
    scaler = torch.amp.GradScaler("cpu")
    net, _, _ = raw_loop(init, autocast=torch.float16, scaler=scaler)
    assert_same_weights(model.net, net, init)
    assert trainer.global_step == 16  # skipped steps (the default scale overflows at first) still count
    assert trainer.strategy.precision.state_dict() == scaler.state_dict()
    assert scaler.get_scale() < 2.0**16  # the run did skip steps: the test exercised the scaler


def test_16_mixed_clips_unscaled_gradients_like_the_raw_loop() -> None:
    norms: list[float] = []

    class Record(fk.Callback):
        def on_before_optimizer_step(self, trainer: fk.Trainer, module: Any, optimizer: Any) -> None:
            grads = [p.grad for p in module.parameters() if p.grad is not None]
            norms.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())

    model, _, init = fit("16-mixed", gradient_clip_val=0.05, callbacks=[Record()])
    net, _, _ = raw_loop(init, autocast=torch.float16, scaler=torch.amp.GradScaler("cpu"), clip=0.05)
    assert_same_weights(model.net, net, init)
    finite = [n for n in norms if n == n and n != float("inf")]
    assert finite and max(finite) < 100  # unscaled: true gradients of this model are O(1), never x65536
    assert max(finite) > 0.05  # and clipping had something to clip


def test_inf_gradients_skip_the_step_without_error() -> None:
    snapshots: list[torch.Tensor] = []

    class Snap(fk.Callback):
        def on_train_batch_end(self, trainer: fk.Trainer, module: Any, *args: Any) -> None:
            snapshots.append(module.net[0].weight.detach().clone())

    plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=256.0))
    # The loss is made infinite to force inf gradients; nonfinite_loss='ignore' lets it reach the scaler.
    model, trainer, init = fit(plugin, epochs=1, inf_at={3}, callbacks=[Snap()], nonfinite_loss="ignore")
    assert torch.equal(snapshots[3], snapshots[2])  # batch 3's step was skipped...
    assert not torch.equal(snapshots[2], snapshots[1]) and not torch.equal(snapshots[4], snapshots[3])
    assert trainer.global_step == 8  # ...and counted, as a raw loop counts its iterations
    assert plugin.state_dict()["scale"] == 128.0  # the one inf halved the scale
    scaler = torch.amp.GradScaler("cpu", init_scale=256.0)
    net, _, _ = raw_loop(init, 1, autocast=torch.float16, scaler=scaler, inf_at={3})
    assert_same_weights(model.net, net, init)


@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before `optimizer.step\\(\\)`")
def test_skipped_steps_step_the_scheduler_as_a_raw_loop_does() -> None:
    def sched(opt: torch.optim.Optimizer) -> Any:
        return torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.9)

    def plugin() -> MixedPrecision:
        return MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=256.0))

    model, trainer, init = fit(plugin(), epochs=1, inf_at={0, 4}, scheduler=sched, nonfinite_loss="ignore")
    net, opt, raw_sched = raw_loop(
        init, 1, autocast=torch.float16, scaler=plugin().scaler, inf_at={0, 4}, scheduler=sched
    )
    assert_same_weights(model.net, net, init)
    fitted_sched = trainer.lr_scheduler_configs[0].scheduler
    assert fitted_sched.state_dict() == raw_sched.state_dict()
    assert trainer.optimizers[0].param_groups[0]["lr"] == opt.param_groups[0]["lr"] == pytest.approx(0.05 * 0.9**8)


def test_scaler_state_is_checkpointed_and_resume_is_exact(tmp_path: Path) -> None:
    def plugin() -> MixedPrecision:
        return MixedPrecision("16-mixed", "cpu", scaler=small_scaler())

    reference, ref_trainer, _ = fit(plugin(), epochs=2)

    _, t1, _ = fit(plugin(), epochs=1)
    t1.save_checkpoint(tmp_path / "half.ckpt")
    saved = load(tmp_path / "half.ckpt")["precision"]  # weights_only=True load: plain data
    assert saved == t1.strategy.precision.state_dict()
    assert saved["scale"] != 2.0**20 and saved["_growth_tracker"] >= 0

    def resume(path: Path) -> tuple[Net, fk.Trainer]:
        torch.manual_seed(999)
        model = Net()
        trainer = quiet_trainer(accelerator="cpu", max_epochs=2, precision=plugin())
        trainer.fit(model, make_loader(), ckpt_path=path)
        return model, trainer

    resumed, t2 = resume(tmp_path / "half.ckpt")
    for p, q in zip(resumed.parameters(), reference.parameters(), strict=True):
        assert torch.equal(p, q)
    assert t2.strategy.precision.state_dict() == ref_trainer.strategy.precision.state_dict()
    assert t2.global_step == ref_trainer.global_step == 16

    # Without the scaler's state the resumed run restarts the scale search and ends elsewhere:
    # the comparison above is sensitive to it.
    checkpoint = torch.load(tmp_path / "half.ckpt", weights_only=True)
    checkpoint["precision"] = {}
    torch.save(checkpoint, tmp_path / "no_scaler.ckpt")
    forgetful, _ = resume(tmp_path / "no_scaler.ckpt")
    assert any(not torch.equal(p, q) for p, q in zip(forgetful.parameters(), reference.parameters(), strict=True))


class LBFGSNet(Net):
    def configure_optimizers(self) -> Any:
        return torch.optim.LBFGS(self.parameters(), lr=0.1, max_iter=3)


def test_16_mixed_refuses_closure_optimizers_before_training() -> None:
    torch.manual_seed(0)
    model = LBFGSNet()
    before = [p.detach().clone() for p in model.parameters()]
    trainer = quiet_trainer(accelerator="cpu", max_epochs=1, precision="16-mixed")
    with pytest.raises(fk.MisconfigurationError) as info:
        trainer.fit(model, make_loader())
    message = str(info.value)
    assert "`precision='16-mixed'`" in message and "LBFGS" in message and "'bf16-mixed'" in message
    assert model.batches == 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_bf16_mixed_runs_closure_optimizers() -> None:
    torch.manual_seed(0)
    model = LBFGSNet()
    trainer = quiet_trainer(accelerator="cpu", max_epochs=1, precision="bf16-mixed", limit_train_batches=2)
    trainer.fit(model, make_loader())
    assert trainer.global_step == 2 and model.batches > 2  # LBFGS re-evaluated the closure
    assert model.seen["hidden"] == {torch.bfloat16}


def test_16_mixed_with_accumulation_matches_the_raw_loop() -> None:
    model, _, init = fit("16-mixed", epochs=1, accumulate_grad_batches=2, make_opt=sgd)
    net = copy.deepcopy(init)
    scaler = torch.amp.GradScaler("cpu")
    opt = sgd(net.parameters())
    for i, (x, y) in enumerate(make_loader()):
        with torch.autocast("cpu", dtype=torch.float16):
            loss = torch.nn.functional.mse_loss(net(x), y)
        scaler.scale(loss / 2).backward()
        if i % 2 == 1:
            scaler.step(opt)  # unscales itself: fitkit's explicit unscale_ first is the same arithmetic
            scaler.update()
            opt.zero_grad(set_to_none=True)
    assert_same_weights(model.net, net, init)
