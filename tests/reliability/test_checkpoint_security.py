"""Loading a checkpoint never runs code from the file, and its hyperparameters stay data.

Each payload here is live: the first test shows that a plain
``torch.load(weights_only=False)`` of it writes a marker file. Every fitkit entry
point that reads a file must refuse the same file with a clear error and leave no
marker. Hyperparameter keys that other tools read as "import and call this"
(Lightning's ``_instantiator``, issue #21822, and ``_class_path``; Hydra's
``_target_``) are refused before anything is built, and a module that such a key
would name is never imported.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

import fitkit as fk
from fitkit import checkpoint as ckpt_io
from fitkit.testing import BoringModule, quiet_trainer


class ExecPayload:
    """``__reduce__`` -> ``exec(code)``: Python that writes the marker."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


class ShellPayload:
    """``__reduce__`` -> ``os.system('touch marker')``: the classic one."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return (os.system, (f"touch '{self.marker}'",))


PAYLOADS = {"exec": ExecPayload, "os.system": ShellPayload}


class Net(BoringModule):
    def __init__(self, width: int = 2, tag: str = "plain") -> None:
        super().__init__(32, width)
        self.save_hyperparameters()


class Data(fk.DataModule):
    def __init__(self, batch_size: int = 2) -> None:
        super().__init__()
        self.save_hyperparameters()


def _trainer(**kwargs: Any) -> fk.Trainer:
    return quiet_trainer(max_steps=1, num_sanity_val_steps=0, limit_val_batches=1, limit_test_batches=1, **kwargs)


def _good_checkpoint(path: Path) -> Path:
    trainer = _trainer()
    trainer.fit(Net(width=2, tag="saved"))
    trainer.save_checkpoint(path)
    return path


def _payload_checkpoint(tmp_path: Path, kind: str, where: str) -> tuple[Path, Path]:
    """A real fitkit checkpoint with a payload put in at ``where``; returns (file, marker)."""
    marker = tmp_path / f"pwned-{kind}-{where}"
    data = torch.load(_good_checkpoint(tmp_path / "good.ckpt"), weights_only=True)
    payload = PAYLOADS[kind](marker)
    if where == "top":
        data["extra"] = payload
    elif where == "hparams":
        data["hyper_parameters"]["tag"] = [1, {"deep": payload}]
    else:  # in place of a tensor of the weights
        data["state_dict"]["layer.weight"] = payload
    path = tmp_path / f"evil-{kind}-{where}.ckpt"
    torch.save(data, path)
    return path, marker


ENTRY_POINTS: dict[str, Callable[[Path], object]] = {
    "fitkit.checkpoint.load": lambda p: ckpt_io.load(p),
    "trainer.fit(ckpt_path=...)": lambda p: _trainer().fit(Net(), ckpt_path=p),
    "trainer.validate(ckpt_path=...)": lambda p: _trainer().validate(Net(), ckpt_path=p, verbose=False),
    "trainer.test(ckpt_path=...)": lambda p: _trainer().test(Net(), ckpt_path=p, verbose=False),
    "trainer.predict(ckpt_path=...)": lambda p: _trainer().predict(Net(), ckpt_path=p),
    "Module.load_from_checkpoint": lambda p: Net.load_from_checkpoint(p),
    "DataModule.load_from_checkpoint": lambda p: Data.load_from_checkpoint(p),
}


@pytest.mark.parametrize("kind", sorted(PAYLOADS))
def test_the_payloads_are_live(tmp_path: Path, kind: str) -> None:
    """Without weights_only, torch.load runs the payload: the refusals below are not vacuous."""
    path, marker = _payload_checkpoint(tmp_path, kind, "top")
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("where", ["top", "hparams", "weights"])
@pytest.mark.parametrize("kind", sorted(PAYLOADS))
@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_no_entry_point_runs_a_payload(tmp_path: Path, entry: str, kind: str, where: str) -> None:
    path, marker = _payload_checkpoint(tmp_path, kind, where)
    with pytest.raises(fk.FitkitRuntimeError) as info:
        ENTRY_POINTS[entry](path)
    message = str(info.value)
    assert "Refusing to load" in message and path.name in message, message
    assert "pickled object" in message and "Nothing from the file was run" in message, message
    assert not marker.exists(), f"{entry} ran the {kind} payload"


def test_a_pickled_module_is_refused_too(tmp_path: Path) -> None:
    """``torch.save(model)`` (the whole object, not its state_dict) is code, not data."""
    path = tmp_path / "whole_model.ckpt"
    torch.save({"format_version": 1, "state_dict": Net()}, path)
    with pytest.raises(fk.FitkitRuntimeError, match="pickled object"):
        Net.load_from_checkpoint(path)


def _evil_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """An importable module that writes a marker when imported, and one when its ``make`` is called."""
    name = f"evil_{os.getpid()}_{tmp_path.name}".replace("-", "_")
    marker = tmp_path / "imported"
    (tmp_path / f"{name}.py").write_text(
        f"open({str(marker)!r}, 'w').write('imported')\n"
        f"def make(*args, **kwargs):\n    open({str(marker)!r} + '.called', 'w').write('called')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return name, marker


@pytest.mark.parametrize("key", ["_instantiator", "_class_path", "_target_", "__target__"])
def test_instantiation_keys_are_refused_and_nothing_is_imported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str
) -> None:
    name, marker = _evil_module(tmp_path, monkeypatch)
    data = torch.load(_good_checkpoint(tmp_path / "good.ckpt"), weights_only=True)
    data["hyper_parameters"][key] = f"{name}.make"
    path = tmp_path / "instantiator.ckpt"
    torch.save(data, path)  # plain dicts and strings: passes weights_only=True

    class AcceptsAnything(Net):
        def __init__(self, **kwargs: Any) -> None:  # would take the key as a keyword argument
            super().__init__(**{k: v for k, v in kwargs.items() if k in ("width", "tag")})
            self.got = kwargs

    for cls in (Net, AcceptsAnything):
        with pytest.raises(fk.MisconfigurationError) as info:
            cls.load_from_checkpoint(path)
        message = str(info.value)
        assert f"`checkpoint['hyper_parameters'][{key!r}]='{name}.make'`" in message, message
        assert "never imports or calls anything a checkpoint names" in message, message
    assert name not in sys.modules
    assert not marker.exists() and not Path(f"{marker}.called").exists()
    # trainer.fit/test use the model you pass: the checkpoint's hyperparameters are not read at all.
    _trainer().test(Net(), ckpt_path=path, verbose=False)
    assert name not in sys.modules and not marker.exists()


def test_a_datamodule_instantiation_key_is_refused(tmp_path: Path) -> None:
    data = torch.load(_good_checkpoint(tmp_path / "good.ckpt"), weights_only=True)
    data["datamodule_hyper_parameters"] = {"batch_size": 4, "_target_": "os.system"}
    path = tmp_path / "dm.ckpt"
    torch.save(data, path)
    with pytest.raises(
        fk.MisconfigurationError, match=r"`checkpoint\['datamodule_hyper_parameters'\]\['_target_'\]='os.system'`"
    ):
        Data.load_from_checkpoint(path)



def test_datamodule_hyperparameters_that_are_not_a_dict_are_refused(tmp_path: Path) -> None:
    data = torch.load(_good_checkpoint(tmp_path / "good.ckpt"), weights_only=True)
    data["datamodule_hyper_parameters"] = ["os.system", "echo"]
    path = tmp_path / "dm.ckpt"
    torch.save(data, path)
    with pytest.raises(fk.FitkitTypeError, match=r"`checkpoint\['datamodule_hyper_parameters'\]='list'`"):
        Data.load_from_checkpoint(path)

def test_hyperparameters_reach_init_as_plain_data(tmp_path: Path) -> None:
    """A value that reads like an import path is passed on as the str it is; nothing is called."""
    data = torch.load(_good_checkpoint(tmp_path / "good.ckpt"), weights_only=True)
    data["hyper_parameters"]["tag"] = "os.system"
    data["hyper_parameters"]["unknown_to_init"] = "subprocess.call"  # dropped: not an __init__ argument
    path = tmp_path / "data.ckpt"
    torch.save(data, path)
    model = Net.load_from_checkpoint(path)
    assert model.hparams == {"width": 2, "tag": "os.system"}
    assert type(model.hparams.tag) is str
    saved = torch.load(path, weights_only=True)["state_dict"]
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())


def test_hyperparameters_that_are_not_a_dict_are_refused(tmp_path: Path) -> None:
    data = torch.load(_good_checkpoint(tmp_path / "good.ckpt"), weights_only=True)
    data["hyper_parameters"] = {1: "one"}
    path = tmp_path / "intkeys.ckpt"
    torch.save(data, path)
    with pytest.raises(fk.FitkitTypeError, match=r"keys.*\[1\].*str keys only"):
        Net.load_from_checkpoint(path)
