"""The package's layering as docs/development.md draws it: a module imports only modules of
the layers below its own, mpi4py only in ``parallel``, deepmd and torch only in ``model``
(so that ``--help`` and the unit tests never pay for them)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "driver" / "ensemble_driver"
ONLY_IN = {"mpi4py": "parallel", "deepmd": "model", "torch": "model", "tensorflow": "model"}


def layers() -> dict[str, int]:
    text = (ROOT / "docs" / "development.md").read_text()
    block = re.search(r"```text\n(.*?)```", text, re.S)
    assert block, "docs/development.md has no ```text block with the layers"
    parts = " ".join(block.group(1).split()).split("->")
    return {name.strip(): level for level, part in enumerate(parts) for name in part.split(",") if name.strip()}


def imports(path: Path) -> list[tuple[str, int, bool]]:
    """(top-level name, line, whether it is one of the package's modules) of every import."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name.split(".")[0], node.lineno, False) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 1:
                names = [node.module] if node.module else [alias.name for alias in node.names]
                found += [(name.split(".")[0], node.lineno, True) for name in names]
            elif node.module:
                found.append((node.module.split(".")[0], node.lineno, False))
    return found


def test_every_module_is_in_the_module_map():
    text = (ROOT / "docs" / "development.md").read_text()
    for path in PACKAGE.glob("*.py"):
        if not path.stem.startswith("__"):
            assert f"`{path.stem}`" in text, f"{path.stem} is not in docs/development.md's module table"


def test_imports_point_down():
    level = layers()
    assert len(level) > 20
    wrong = []
    for path in sorted(PACKAGE.glob("*.py")):
        here = path.stem
        for name, line, own in imports(path):
            if own and here in level and name in level and level[name] <= level[here]:
                wrong.append(f"{path.name}:{line} imports {name}, which is not below {here}")
            if not own and name in ONLY_IN and ONLY_IN[name] != here:
                wrong.append(f"{path.name}:{line} imports {name}, which only {ONLY_IN[name]}.py may")
    assert not wrong, "\n".join(wrong)
