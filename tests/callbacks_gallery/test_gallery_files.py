"""Every gallery recipe stands alone: a usage docstring, and imports of fitkit, torch and the stdlib only."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
from _gallery_helpers import GALLERY

RECIPES = sorted(GALLERY.glob("*.py"))
ALLOWED = {"fitkit", "torch", "__future__"} | set(sys.stdlib_module_names)
# A recipe built on a third-party package names it here: {"wandb_logger.py": {"wandb"}}.
THIRD_PARTY: dict[str, set[str]] = {}


def test_the_gallery_has_its_first_recipes() -> None:
    assert {"ema.py", "throughput.py", "grad_norm.py"} <= {p.name for p in RECIPES}
    readme = (GALLERY / "README.md").read_text()
    assert all(p.name in readme for p in RECIPES)


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_is_standalone(path: Path) -> None:
    tree = ast.parse(path.read_text())
    doc = ast.get_docstring(tree)
    assert doc and "Usage::" in doc, f"{path.name} must open with a usage docstring"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 and node.module is not None
            names = [node.module]
            assert not node.module.startswith("fitkit"), f"{path.name}: use `import fitkit` (the public API)"
        else:
            continue
        for name in names:
            allowed = (ALLOWED - {"fitkit"}) | THIRD_PARTY.get(path.name, set())
            assert name == "fitkit" or name.split(".")[0] in allowed, f"{path.name} imports {name}"
