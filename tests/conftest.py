"""Shared fixtures: every test leaves the process as it found it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _restore_global_state() -> Iterator[None]:
    env = dict(os.environ)
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    benchmark = torch.backends.cudnn.benchmark
    threads = torch.get_num_threads()
    rng = torch.get_rng_state()
    yield
    os.environ.clear()
    os.environ.update(env)
    if (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()) != (
        deterministic,
        warn_only,
    ):
        # Only when a test changed it: the call imports torch._inductor (seconds).
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.backends.cudnn.benchmark = benchmark
    torch.set_num_threads(threads)
    torch.set_rng_state(rng)


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    # default_root_dir defaults to the working directory: keep runs out of the repo.
    monkeypatch.chdir(tmp_path)


# The real datasets next to the repository (see ../shared/data/README.md); absent on
# machines that do not have them, where the tests that read them skip.
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` (real datasets), or a skip when this machine has none."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not present at {SHARED_DATA}")
    return SHARED_DATA
