"""The references in the package's docstrings and comments resolve: every :mod:, :func:,
:class:, :data:, :meth: and :attr: names a module of the package (from the package, or
from the referring module's wing) or a name defined in one, so a reader following a
reference finds the room it names."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from support.paths import ROOT

PACKAGE = ROOT / "driver" / "ensemble_driver"
REFERENCE = re.compile(r":(mod|func|class|data|meth|attr):`~?([\w.]+)`")


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def defined(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
            names |= {t.attr for t in node.targets if isinstance(t, ast.Attribute)}
        elif isinstance(node, ast.AnnAssign):
            target = node.target
            names.add(target.id if isinstance(target, ast.Name) else getattr(target, "attr", ""))
    return names


def resolves(kind: str, target: str, module: str, known: dict[str, Path], names: dict[str, set[str]]) -> bool:
    target = target.removeprefix("ensemble_driver.").lstrip(".")  # ".name": in the referring module's wing
    wing = module.rsplit(".", 1)[0] if "." in module else ""
    candidates = [target, f"{wing}.{target}"] if wing else [target]
    if kind == "mod":
        return any(c in known for c in candidates)
    head, _, last = target.rpartition(".")
    if not head:  # a bare name: defined anywhere in the package
        return any(last in n for n in names.values())
    heads = [head, f"{wing}.{head}"] if wing else [head]
    if any(h in known and last in names[h] for h in heads):
        return True
    # Class.method or module.Class.attribute
    return any(head.split(".")[-1] in n and last in n for n in names.values())


def test_every_docstring_reference_resolves():
    known = modules()
    names = {m: defined(p) for m, p in known.items()}
    broken = []
    for module, path in sorted(known.items()):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for kind, target in REFERENCE.findall(line):
                if not resolves(kind, target, module, known, names):
                    broken.append(f"{path.relative_to(PACKAGE)}:{number}: :{kind}:`{target}`")
    assert not broken, "references to nothing:\n" + "\n".join(broken)


def test_the_glossary_defines_the_words_of_the_house():
    """docs/development.md's "Words": one meaning for each rank role and for the words the
    code, its docstrings and the pages share."""
    text = (ROOT / "docs" / "development.md").read_text()
    section = re.search(r"^## Words\n(.*?)^## ", text, re.S | re.M)
    assert section, 'docs/development.md has no "## Words" section'
    defined = set(re.findall(r"^\| \*\*(.+?)\*\* \|", section.group(1), re.M))
    wanted = {"run", "system", "series", "bead", "step", "row", "sink", "connection rank", "leader", "follower"}
    assert wanted <= defined, wanted - defined
