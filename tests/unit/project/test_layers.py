"""The house's layering as docs/development.md draws it: every module of the package in
one group (the top level's commands and foundations, or a wing), importing only its own
group and what its line allows; no import cycle; mpi4py only in ``ranks``; deepmd, torch
and tensorflow only in ``models/deepmd`` and ``models/direct`` (so that ``--help`` and the
unit tests never pay for them)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from support.paths import ROOT

PACKAGE = ROOT / "driver" / "ensemble_driver"
BACKENDS = ("models.deepmd", "models.direct", "models.backends")
ONLY_IN = {"mpi4py": ("ranks",), "deepmd": BACKENDS, "torch": BACKENDS, "tensorflow": BACKENDS}
MAX_LINES = 400


def groups() -> dict[str, tuple[set[str], list[str]]]:
    """group -> (its modules as dotted names below the package, what it may import)."""
    text = (ROOT / "docs" / "development.md").read_text()
    block = re.search(r"```text\n(commands:.*?)```", text, re.S)
    assert block, "docs/development.md has no ```text block with the groups"
    found = {}
    for line in block.group(1).strip().splitlines():
        head, allowed = line.split("->")
        name, modules = head.split(":")
        prefix = name.strip() if name.strip().endswith("/") else ""
        found[name.strip()] = ({prefix.replace("/", ".") + m for m in modules.split()}, allowed.split())
    return found


def modules() -> dict[str, Path]:
    return {
        ".".join(path.relative_to(PACKAGE).with_suffix("").parts): path
        for path in PACKAGE.rglob("*.py")
        if not path.name.startswith("__")
    }


def imports(name: str, path: Path) -> list[tuple[str, int]]:
    """(dotted module or outside package, line) of every import of a module."""
    package = name.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name.split(".")[0], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module.split(".")[0], node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - (node.level - 1)]
            if node.module:
                found.append((".".join(base + node.module.split(".")) + "@own", node.lineno))
            else:
                found += [(".".join(base + [alias.name]) + "@own", node.lineno) for alias in node.names]
    return found


def own_imports(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, int]]:
    """The package's modules a module imports (``from . import x`` names a module or a
    package's ``__init__``; ``from .x import y`` names x)."""
    out = []
    for target, line in imports(name, path):
        if target.endswith("@own"):
            target = target[: -len("@own")]
            while target and target not in known and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in known:
                out.append((target, line))
    return out


def test_every_module_is_in_one_group_and_in_the_module_table():
    text = (ROOT / "docs" / "development.md").read_text()
    placed = [m for members, _ in groups().values() for m in members]
    assert len(placed) == len(set(placed)), "a module is in two groups"
    assert set(placed) == set(modules()), (
        f"not in a group: {set(modules()) - set(placed)}; gone: {set(placed) - set(modules())}"
    )
    for name in modules():
        assert f"`{name.split('.')[-1]}`" in text, f"{name} is not in docs/development.md's module table"


def test_wings_import_only_what_their_line_allows():
    table = groups()
    group_of = {m: g for g, (members, _) in table.items() for m in members}
    known = modules()
    wrong = []
    for name, path in sorted(known.items()):
        mine = group_of[name]
        allowed = table[mine][1]
        for target, line in own_imports(name, path, known):
            theirs = group_of[target]
            ok = theirs == mine or "any" in allowed or theirs in allowed or target in allowed
            if not ok:
                wrong.append(
                    f"{path.relative_to(PACKAGE)}:{line} imports {target} ({theirs}); {mine} may import {' '.join(allowed)}"
                )
        for target, line in imports(name, path):
            if target in ONLY_IN and name not in ONLY_IN[target]:
                wrong.append(
                    f"{path.relative_to(PACKAGE)}:{line} imports {target}, which only {', '.join(ONLY_IN[target])} may"
                )
    assert not wrong, "\n".join(wrong)


def test_no_import_cycle():
    known = modules()
    graph = {name: {t for t, _ in own_imports(name, path, known)} for name, path in known.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join(trail + [node, nxt])
            if nxt not in state:
                visit(nxt, trail + [node])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [])


def test_the_house_has_wings_and_no_module_is_too_long():
    wings = [g for g, (members, _) in groups().items() if g.endswith("/")]
    assert len([g for g in wings if len(groups()[g][0]) >= 2]) >= 4
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_messages_between_ranks_move_only_through_the_conversation():
    """Every point-to-point call on a communicator is a verb of messages.Conversation (or
    one of the ranks module's helpers it calls): a deadlock review reads one class."""
    calls = re.compile(r"\.(Isend|Irecv|isend|irecv|Send|Recv|send|recv|Iprobe|Probe|Abort)\(")
    allowed = {"ensemble.messages", "ranks"}
    found = []
    for name, path in modules().items():
        if name in allowed:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if calls.search(line) and "comm" in line:
                found.append(f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}")
    assert not found, "\n".join(found)


def test_the_leader_takes_few_parameters():
    """Leader's constructor takes what every connection rank has and one record of what
    only rank 0 has (RankZero): 8 parameters or fewer, none only for tests."""
    import inspect

    from ensemble_driver.ensemble.leader import Leader

    parameters = list(inspect.signature(Leader.__init__).parameters)[1:]
    assert len(parameters) <= 8, parameters


def test_a_group_of_settings_is_declared_in_one_record():
    """What a row holds and the model parameters are each one record (deviation.DeviationKind,
    models.parameters.ParameterOptions) that run's and devi's settings hold as a field."""
    declared: dict[str, list[str]] = {}
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                for item in node.body:
                    if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                        declared.setdefault(item.target.id, []).append(f"{name}.{node.name}")
    assert declared["relative_v"] == ["deviation.DeviationKind"]
    records = {"deviation.DeviationKind": ("atomic", "relative"), "models.parameters.ParameterOptions": ("fparam", "aparam", "aparam_array", "charge_spin")}  # fmt: skip
    for record, settings in records.items():
        for setting in settings:
            assert record in declared[setting], (setting, declared[setting])
            # the commands' settings records (RunConfig, DeviSettings, ...) hold the record, not the setting
            again = [c for c in declared[setting] if c != record and c.endswith(("Settings", "Config", "Options"))]
            assert not again, (setting, again)


def test_the_tests_are_laid_out_like_the_code():
    """tests/unit/<wing>/ for a wing of the package (or foundation, project), tests/peers/,
    tests/support/; no test module imports conftest or another test module (what they
    share is in tests/support/)."""
    tests = ROOT / "tests"
    wings = {g.rstrip("/") for g in groups() if g.endswith("/")} | {"foundation", "project"}
    for path in tests.rglob("test_*.py"):
        parts = path.relative_to(tests).parts
        assert parts[0] in ("unit", "peers"), f"{path}: outside tests/unit/<wing>/ and tests/peers/"
        if parts[0] == "unit":
            assert len(parts) == 3 and parts[1] in wings, f"{path}: tests/unit/<wing>/ with a wing of {sorted(wings)}"
        for target, line in imports(path.stem, path):
            assert target != "conftest" and not target.startswith("test_"), f"{path}:{line} imports {target}"
