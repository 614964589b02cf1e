"""Checks for ``examples/custom_components.py``: each component against a reference, and the run."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import _examples
import pytest
import torch
import torch.nn.functional as F
from torch import nn

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "custom_components.py"


@pytest.fixture(scope="module")
def example() -> Iterator[ModuleType]:
    with _examples.loaded(EXAMPLE, "fitkit_example_custom_components") as module:
        yield module


def _inputs(n: int = 5, features: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, features, generator=g), torch.randn(n, features, generator=g)


def test_complex_linear_is_complex_matrix_multiplication(example: ModuleType) -> None:
    torch.manual_seed(0)
    layer = example.ComplexLinear(3, 4)
    assert {n for n, _ in layer.named_parameters()} == {"weight_r", "weight_i", "bias_r", "bias_i"}
    x_r, x_i = _inputs()
    out_r, out_i = layer(x_r, x_i)
    weight = torch.complex(layer.weight_r, layer.weight_i)
    bias = torch.complex(layer.bias_r, layer.bias_i)
    expected = torch.complex(x_r, x_i) @ weight.T + bias
    torch.testing.assert_close(out_r, expected.real)
    torch.testing.assert_close(out_i, expected.imag)


def test_complex_linear_simple_is_the_same_map(example: ModuleType) -> None:
    torch.manual_seed(0)
    layer = example.ComplexLinearSimple(3, 4)
    x_r, x_i = _inputs(seed=1)
    out_r, out_i = layer(x_r, x_i)
    weight = torch.complex(layer.fc_r.weight, layer.fc_i.weight)
    bias = torch.complex(layer.fc_r.bias - layer.fc_i.bias, layer.fc_r.bias + layer.fc_i.bias)
    expected = torch.complex(x_r, x_i) @ weight.T + bias
    torch.testing.assert_close(out_r, expected.real)
    torch.testing.assert_close(out_i, expected.imag)


def test_complex_relu_and_threshold_relu(example: ModuleType) -> None:
    x_r, x_i = _inputs(seed=2)
    out_r, out_i = example.ComplexReLU()(x_r, x_i)
    assert torch.equal(out_r, F.relu(x_r)) and torch.equal(out_i, F.relu(x_i))
    out = example.MyReLU(thresh=0.5)(x_r)
    assert torch.equal(out, x_r * (x_r > 0.5))
    assert torch.equal(example.MyReLU()(x_r), F.relu(x_r))


def test_complex_mse_loss_both_modes(example: ModuleType) -> None:
    p_r, p_i = _inputs(seed=3)
    t_r, t_i = _inputs(seed=4)
    error = torch.complex(p_r, p_i) - torch.complex(t_r, t_i)
    full = example.ComplexMSELoss()(p_r, p_i, t_r, t_i)
    torch.testing.assert_close(full, (error.abs() ** 2).mean())  # mean of |prediction - target|^2
    real_only = example.ComplexMSELoss(real_only=True)(p_r, p_i, t_r, t_i)
    torch.testing.assert_close(real_only, ((p_r - t_r) ** 2).mean())
    assert torch.equal(real_only, example.ComplexMSELoss(real_only=True)(p_r, p_i + 1.0, t_r, t_i))


def test_simple_sgd_equals_torch_sgd_per_group(example: ModuleType) -> None:
    def two_groups(net: nn.Sequential) -> list[dict]:
        return [{"params": net[0].parameters(), "lr": 0.1}, {"params": net[2].parameters(), "lr": 0.01}]

    torch.manual_seed(0)
    ours = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    theirs = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))
    theirs.load_state_dict(ours.state_dict())
    initial = [p.detach().clone() for p in ours.parameters()]
    opt_ours = example.SimpleSGD(two_groups(ours), lr=0.5)
    opt_theirs = torch.optim.SGD(two_groups(theirs), lr=0.5, momentum=0.0)
    x, y = torch.randn(16, 4), torch.randn(16, 2)
    for _ in range(5):
        for net, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            opt.zero_grad()
            F.mse_loss(net(x), y).backward()
            opt.step()
    for p, q, p0 in zip(ours.parameters(), theirs.parameters(), initial, strict=True):
        assert not torch.equal(p, p0)
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
    assert [g["lr"] for g in opt_ours.param_groups] == [0.1, 0.01]


def test_simple_sgd_step_takes_no_closure_and_checks_lr(example: ModuleType) -> None:
    assert list(inspect.signature(example.SimpleSGD.step).parameters) == ["self"]
    with pytest.raises(ValueError, match="lr=-1"):
        example.SimpleSGD([nn.Parameter(torch.zeros(1))], lr=-1.0)


def test_training_through_fitkit_cuts_the_loss_tenfold(example: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    losses = example.main(["--max-epochs", "10"])
    assert len(losses) == 10
    assert losses[0] / losses[-1] >= 10.0, losses
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert last_line.startswith("loss fell ") and f"last epoch {losses[-1]:.4f}" in last_line


def test_real_only_loss_trains(example: ModuleType) -> None:
    losses = example.main(["--max-epochs", "3", "--real-only", "--samples", "512"])
    assert len(losses) == 3 and losses[-1] < losses[0]
