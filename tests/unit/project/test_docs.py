"""The README, the guide and the other Markdown pages stay true to the code.

- the README stays short, and every relative link of every page resolves (file and anchor);
- docs/options.md lists every option of every command once, with the default the program
  really uses (the guide-vs-CLI check);
- every ``bash`` block's commands are real: ``ensemble-driver`` lines parse with the real
  parser, scripts exist and know the options given, i-PI inputs and ``./setup.sh``
  commands exist (the checker: tests/support/docs.py; the pages whose blocks run scripts,
  which it runs with ``--help``: tests/peers/test_docs_process.py);
- CHANGELOG.md's newest version is ``ensemble-driver --version``
  (tests/peers/test_docs_process.py).
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
from support.docs import FENCE, ROOT, block_problems, check_command, names_scripts, pages

from ensemble_driver.cli import build_parser
from ensemble_driver.run.settings import SETTINGS

README_LIMIT = 10 * 1024
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def _prose(text: str) -> str:
    """The text without fenced blocks and inline code, where links are not links."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to '-'."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in FENCE.sub("", page.read_text()).splitlines():
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if m:
            slug = github_slug(m.group(1))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_readme_is_short():
    size = (ROOT / "README.md").stat().st_size
    assert size <= README_LIMIT, f"README.md is {size} bytes; the front door stays under {README_LIMIT}"


def test_the_guide_exists():
    for name in ("README.md", "options.md", "running.md", "ensemble.md", "failures.md", "multi-node.md"):
        assert (ROOT / "docs" / name).exists(), name


@pytest.mark.parametrize("page", pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_links_resolve(page):
    broken = []
    for target in LINK.findall(_prose(page.read_text())):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto: not ours to check offline
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target}: no {dest.relative_to(ROOT) if dest.is_relative_to(ROOT) else dest}")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading '#{anchor}' in {dest.relative_to(ROOT)}")
    assert not broken, f"{page.relative_to(ROOT)}: " + "; ".join(broken)


# -- the guide's option tables against the parser -----------------------------------------


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _names(action: argparse.Action) -> list[str]:
    return list(action.option_strings) or [action.metavar or action.dest]


def cli_options() -> dict[str, dict[str, argparse.Action]]:
    """Every option string (or positional's name) of every command, to its action."""
    parser = build_parser()
    commands = {"ensemble-driver": parser, **{f"ensemble-driver {k}": v for k, v in _subparsers(parser).items()}}
    out = {}
    for title, p in commands.items():
        out[title] = {}
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            if isinstance(action, argparse._HelpAction) and title != "ensemble-driver":
                continue
            for name in _names(action):
                out[title][name] = action
    return out


def guide_options() -> dict[str, list[tuple[list[str], str]]]:
    """docs/options.md: per '## ensemble-driver ...' section, its table rows as
    (the names in the option cell, the default cell)."""
    sections: dict[str, list] = {}
    current = None
    for line in (ROOT / "docs" / "options.md").read_text().splitlines():
        m = re.match(r"##\s+`?(ensemble-driver(?: \w+)?)`?\s*$", line)
        if m:
            current = sections.setdefault(m.group(1), [])
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if current is None or len(cells) < 3 or cells[0] in ("option", "") or set(cells[0]) <= set("-: "):
            continue
        names = [seg.split()[0] for seg in re.findall(r"`([^`]+)`", cells[0])]
        current.append((names, cells[1]))
    return sections


def effective_default(command: str, action: argparse.Action):
    """What the program uses when the option is not given: for run, RunConfig's default
    (its argparse defaults are None so that a --config file can fill them)."""
    if command == "ensemble-driver run":
        if action.dest in SETTINGS:
            return SETTINGS[action.dest].default
    return action.default


def default_matches(value, cell: str, action: argparse.Action) -> bool:
    literals = re.findall(r"`([^`]*)`", cell)
    if value is None or value == () or value == argparse.SUPPRESS:
        return not literals  # prose: required, none, derived from something else
    if isinstance(value, bool) or (isinstance(action, argparse._CountAction) and value == 0):
        return cell.lower().startswith("on" if value else "off") and not literals
    if isinstance(value, int | float):
        return any(re.fullmatch(r"-?[\d.e+-]+", x) and float(x) == value for x in literals)
    return str(value) in literals


def test_guide_lists_every_option_with_its_default():
    cli, guide = cli_options(), guide_options()
    assert set(guide) == set(cli), f"sections in docs/options.md: {sorted(guide)}; commands: {sorted(cli)}"
    problems = []
    for command, actions in cli.items():
        listed = [name for names, _ in guide[command] for name in names]
        for name in sorted(set(listed)):
            if listed.count(name) > 1:
                problems.append(f"{command} {name}: listed {listed.count(name)} times")
        for name in sorted(set(actions) - set(listed)):
            problems.append(f"{command} {name}: missing from the guide")
        for name in sorted(set(listed) - set(actions)):
            problems.append(f"{command} {name}: in the guide but not an option")
        for names, cell in guide[command]:
            action = actions.get(names[0])
            if action is None or isinstance(action, argparse._HelpAction | argparse._VersionAction):
                continue
            value = effective_default(command, action)
            if not default_matches(value, cell, action):
                problems.append(f"{command} {names[0]}: default cell '{cell}', the program's default {value!r}")
    assert not problems, "docs/options.md vs the CLI:\n" + "\n".join(problems)


# -- command blocks ---------------------------------------------------------------------


@pytest.mark.parametrize("page", [p for p in pages() if not names_scripts(p)], ids=lambda p: str(p.relative_to(ROOT)))
def test_command_blocks_are_real(page):
    """The pages whose blocks run no script (the others, whose scripts are run with
    --help to check their options: tests/peers/test_docs_process.py)."""
    bad = block_problems(page)
    assert not bad, f"{page.relative_to(ROOT)}:\n" + "\n".join(bad)


def test_command_checker_catches_mistakes():
    assert check_command(["ensemble-driver", "run", "--out-frq", "10"], ROOT)
    assert check_command(["mpiexec", "-n", "2", "ensemble-driver", "devi", "a.xyz"], ROOT)  # no --models
    assert check_command(["i-pi", "nope.xml"], ROOT / "ipi_inputs")
    assert check_command(["./setup.sh", "tests"], ROOT)
    assert check_command(["python", "benchmarks/nope.py"], ROOT)
    assert check_command(["frobnicate"], ROOT)
    assert check_command(["i-pi", "pimd.xml"], ROOT / "ipi_inputs") is None
    assert check_command(["tests/support/netns_ssh", "h", "i-pi", "nope.xml"], ROOT)
    assert check_command(["tests/support/netns_ssh", "h", "i-pi", "made.xml"], ROOT, frozenset({"made.xml"})) is None
    assert (
        check_command(["tests/support/netns_ssh", "-x", "h", "mpiexec", "-n", "2", "ensemble-driver", "run"], ROOT)
        is None
    )
    assert check_command(["tests/support/netns_ssh", "h"], ROOT)
    assert check_command(["mpiexec", "-n", "4", "ensemble-driver", "run", "--models", "a.pth", "b.pth"], ROOT) is None
