"""ModelSummary and summarize(): the numbers for a known model, and when the table prints."""

from __future__ import annotations

import types
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import fitkit as fk
from fitkit.callbacks import ModelSummary
from fitkit.callbacks.model_summary import human_count, summarize
from fitkit.testing import BoringModule, RandomDataset


class Net(BoringModule):
    """encoder 10->20->5 (325 params), head 5->2 (12), a frozen float64 BatchNorm in eval mode (10)."""

    def __init__(self) -> None:
        super().__init__(10, 2)
        del self.layer
        self.encoder = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
        self.head = nn.Linear(5, 2)
        self.bn = nn.BatchNorm1d(5).double().eval().requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    def configure_optimizers(self) -> Any:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> DataLoader[torch.Tensor]:
        return DataLoader(RandomDataset(10, 4), batch_size=2)

    val_dataloader = test_dataloader = None  # type: ignore[assignment]


def test_numbers_for_a_known_model() -> None:
    s = summarize(Net())
    assert [(r.name, r.type, r.params, r.mode) for r in s.layers] == [
        ("encoder", "Sequential", 325, "train"),
        ("head", "Linear", 12, "train"),
        ("bn", "BatchNorm1d", 10, "eval"),
    ]
    assert (s.total_params, s.trainable_params, s.non_trainable_params) == (347, 337, 10)
    assert s.size_mb == pytest.approx((337 * 4 + 10 * 8) / 1e6)  # bytes of each parameter's dtype
    assert (s.train_modules, s.eval_modules) == (6, 1)  # Net, encoder, its 3 layers, head; bn
    d = s.as_dict()
    assert d["total_params"] == 347 and d["layers"][0] == {
        "name": "encoder",
        "type": "Sequential",
        "params": 325,
        "mode": "train",
    }


def test_depth() -> None:
    names = lambda depth: [r.name for r in summarize(Net(), max_depth=depth).layers]  # noqa: E731
    assert names(2) == ["encoder", "encoder.0", "encoder.1", "encoder.2", "head", "bn"]
    assert names(-1) == names(2)
    assert names(0) == []
    assert summarize(Net(), max_depth=0).total_params == 347


def test_shared_and_lazy_parameters() -> None:
    model = nn.Module()
    model.a = nn.Linear(3, 3)  # 12
    model.b = nn.Linear(3, 3)
    model.b.weight = model.a.weight  # shared: counted once in the totals, in each row
    model.lazy = nn.LazyLinear(4)  # no shape before the first forward: 0
    s = summarize(model)
    assert [r.params for r in s.layers] == [12, 12, 0]
    assert s.total_params == 15


def test_table_text() -> None:
    text = str(summarize(Net()))
    lines = text.splitlines()
    assert lines[0].split() == ["|", "Name", "|", "Type", "|", "Params", "|", "Mode"]
    assert lines[2].split() == ["0", "|", "encoder", "|", "Sequential", "|", "325", "|", "train"]
    assert "337       Trainable params" in lines
    assert "10        Non-trainable params" in lines
    assert "347       Total params" in lines
    assert "0.001     Total estimated model params size (MB)" in lines
    assert "1         Modules in eval mode" in lines


def test_human_count() -> None:
    assert [human_count(n) for n in (0, 999, 1000, 8_330, 12_345_678, 2_500_000_000, 10**15)] == [
        "0",
        "999",
        "1.0 K",
        "8.3 K",
        "12.3 M",
        "2.5 B",
        "1000.0 T",
    ]


def test_printed_at_fit_start_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    trainer = fk.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(Net())
    out = capsys.readouterr().out
    assert out.count("Total params") == 1 and "encoder" in out and "Sequential" in out


def test_max_depth_in_the_callback(capsys: pytest.CaptureFixture[str]) -> None:
    kwargs: dict[str, Any] = {"max_epochs": 1, "logger": False, "enable_checkpointing": False}
    fk.Trainer(**kwargs, enable_progress_bar=False, callbacks=[ModelSummary(max_depth=2)]).fit(Net())
    assert "encoder.2" in capsys.readouterr().out
    fk.Trainer(**kwargs, enable_progress_bar=False, callbacks=[ModelSummary(max_depth=0)]).fit(Net())
    assert "Total params" not in capsys.readouterr().out


def test_not_printed_when_disabled_or_off_rank_zero(capsys: pytest.CaptureFixture[str]) -> None:
    fk.Trainer(
        max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False
    ).fit(Net())
    assert "Total params" not in capsys.readouterr().out
    ModelSummary().on_fit_start(types.SimpleNamespace(is_global_zero=False), Net())  # type: ignore[arg-type]
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("depth", [-2, 1.5, True, "1"])
def test_bad_max_depth(depth: Any) -> None:
    with pytest.raises(fk.MisconfigurationError, match="`max_depth="):
        ModelSummary(max_depth=depth)
    with pytest.raises(fk.MisconfigurationError, match="`max_depth="):
        summarize(nn.Linear(1, 1), max_depth=depth)
