"""The README, the guide and the other Markdown pages stay true to the code.

- the README stays short, and every relative link of every page resolves (file and anchor);
- docs/options.md lists every option of every command once, with the default the program
  really uses (the guide-vs-CLI check);
- every ``bash`` block's commands are real: ``ensemble-driver`` lines parse with the real
  parser, scripts exist and know the options given, i-PI inputs and ``./setup.sh``
  commands exist;
- CHANGELOG.md's newest version is ``ensemble-driver --version``.
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from support.paths import ROOT

from ensemble_driver import __version__
from ensemble_driver.cli import build_parser
from ensemble_driver.run.settings import SETTINGS

PAGES = sorted(
    [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "benchmarks" / "README.md"]
    + list((ROOT / "docs").glob("*.md"))
    + list((ROOT / "examples").glob("*/README.md"))
)
README_LIMIT = 10 * 1024
FENCE = re.compile(r"^```([\w+-]*)[^\n]*\n(.*?)^```\s*$", re.S | re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SETUP_COMMANDS = {"demo", "test", "lint", "install"}
#: commands a bash block may use besides those checked one by one below
OTHER_COMMANDS = {
    "pip", "source", "export", "git", "ls", "cat", "dp", "mkdir", "cp", "rm", "touch", "pre-commit",
    "ruff", "lmp", "echo", "printf", "wait", "kill", "tail", "head", "diff", "srun", "sbatch", "ip", "sed",
}  # fmt: skip


def _pages() -> list[Path]:
    return [p for p in PAGES if p.exists()]


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


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
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


def bash_commands(page: Path):
    """(line, argv, working directory) of every command in the page's bash blocks."""
    for lang, body in FENCE.findall(page.read_text()):
        if lang not in ("bash", "sh", "shell"):
            continue
        cwd = ROOT
        for line in re.sub(r"\\\n", " ", body).splitlines():
            line = line.split(" #")[0].strip() if not line.lstrip().startswith("#") else ""
            for part in filter(None, (p.strip().rstrip("&").strip() for p in re.split(r"&&|;|\|\|", line))):
                argv = shlex.split(part)
                while argv and re.match(r"\w+=", argv[0]):
                    argv = argv[1:]  # VAR=value before the command
                if argv and argv[0] == "cd" and len(argv) > 1 and (cwd / argv[1]).is_dir():
                    cwd = (cwd / argv[1]).resolve()
                if argv:
                    yield part, argv, cwd


_SCRIPT_HELP: dict[Path, str] = {}


def script_help(script: Path) -> str:
    if script not in _SCRIPT_HELP:
        run = subprocess.run(
            [sys.executable, str(script), "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, f"{script} --help: {run.stderr[-500:]}"
        _SCRIPT_HELP[script] = run.stdout
    return _SCRIPT_HELP[script]


def check_command(argv: list[str], cwd: Path, made: frozenset[str] = frozenset()) -> str | None:
    """None if the command is real, else why not (``made``: files earlier commands of the
    block wrote)."""
    name = Path(argv[0]).name
    if name == "netns_ssh":  # the test bed's ssh: the wrapper, then the command on the host
        if not (cwd / argv[0]).is_file():
            return f"no {argv[0]}"
        words = argv[1:]
        while words and words[0].startswith("-"):
            words = words[1:]  # hydra's -x
        return check_command(words[1:], cwd, made) if len(words) > 1 else "netns_ssh runs no command on a host"
    if name in ("mpiexec", "mpirun"):
        starts = [k for k, a in enumerate(argv) if re.fullmatch(r"ensemble-driver|python(3(\.\d+)?)?", Path(a).name)]
        return check_command(argv[starts[0] :], cwd, made) if starts else "mpiexec runs neither the driver nor python"
    if name == "ensemble-driver":
        try:
            build_parser().parse_args(argv[1:])
        except SystemExit as exc:
            return None if exc.code == 0 else "the parser refuses it"
        return None
    if re.fullmatch(r"python(3(\.\d+)?)?", name):
        if argv[1:2] == ["-m"]:
            return None if argv[2] in ("pytest", "pip", "venv", "ensemble_driver") else f"python -m {argv[2]}"
        script = next(((d / argv[1]).resolve() for d in (cwd, ROOT) if (d / argv[1]).is_file()), None)
        if script is None:
            return f"no script {argv[1]}"
        known = script_help(script)
        unknown = [a.split("=")[0] for a in argv[2:] if a.startswith("--") and a.split("=")[0] not in known]
        return f"{argv[1]} has no option {unknown}" if unknown else None
    if name == "i-pi":
        missing = [a for a in argv[1:] if not (cwd / a).exists() and a not in made]
        return f"no i-PI input {missing}" if missing else None
    if name == "setup.sh":
        return None if argv[1:2] and argv[1] in SETUP_COMMANDS else f"setup.sh has no command {argv[1:2]}"
    if name == "cd":
        return None
    return None if name in OTHER_COMMANDS else f"'{name}' is not a command the docs test knows"


@pytest.mark.parametrize("page", _pages(), ids=lambda p: str(p.relative_to(ROOT)))
def test_command_blocks_are_real(page):
    bad, made = [], set()
    for line, argv, cwd in bash_commands(page):
        if why := check_command(argv, cwd, frozenset(made)):
            bad.append(f"{line}: {why}")
        if ">" in argv[:-1]:  # what the block writes, an i-PI input for one
            made.add(argv[argv.index(">") + 1])
        if Path(argv[0]).name == "i-pi":
            made.add("RESTART")  # i-PI writes it where it runs
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


def test_changelog_matches_version():
    text = (ROOT / "CHANGELOG.md").read_text()
    versions = re.findall(r"^## \[?(\d+\.\d+\.\d+)\]?", text, re.M)
    assert versions and versions[0] == __version__, f"CHANGELOG.md's newest {versions[:1]}, package {__version__}"
    run = subprocess.run(
        [sys.executable, "-m", "ensemble_driver", "--version"], capture_output=True, text=True, timeout=60
    )
    assert run.stdout.strip() == f"ensemble-driver {__version__}"
