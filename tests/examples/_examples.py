"""Loading an example script in a test, as ``python examples/<name>.py`` would run it.

``examples/`` is a folder of scripts, not a package: each is loaded by path, with the
folder on ``sys.path`` for the helpers the scripts import (``_cli.py``, ``_idx.py``).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@contextmanager
def loaded(path: Path, name: str) -> Iterator[ModuleType]:
    """The example at ``path`` as module ``name``, removed from ``sys.modules`` afterwards."""
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)
