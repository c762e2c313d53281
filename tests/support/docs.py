"""The Markdown pages of the checkout and the commands of their ``bash`` blocks, checked one
by one (the real parser for ``ensemble-driver``, the scripts' own ``--help`` for their
options, the files for i-PI's inputs): for tests/unit/project/test_docs.py and
tests/peers/test_docs_process.py (the pages whose blocks run scripts)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

from ensemble_driver.cli import build_parser
from support.paths import ROOT

PAGES = sorted(
    [ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "benchmarks" / "README.md"]
    + list((ROOT / "docs").glob("*.md"))
    + list((ROOT / "examples").glob("*/README.md"))
)
FENCE = re.compile(r"^```([\w+-]*)[^\n]*\n(.*?)^```\s*$", re.S | re.M)
SETUP_COMMANDS = {"demo", "test", "lint", "install"}
#: commands a bash block may use besides those checked one by one below
OTHER_COMMANDS = {
    "pip", "source", "export", "git", "ls", "cat", "dp", "mkdir", "cp", "rm", "touch", "pre-commit",
    "ruff", "lmp", "echo", "printf", "wait", "kill", "tail", "head", "diff", "srun", "sbatch", "ip", "sed",
}  # fmt: skip


def pages() -> list[Path]:
    return [p for p in PAGES if p.exists()]


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


def names_scripts(page: Path) -> bool:
    """Whether a command of the page's blocks runs a Python script (not ``python -m``),
    which :func:`check_command` runs with ``--help`` (a process: a peer test)."""
    return any(
        re.fullmatch(r"python(3(\.\d+)?)?", Path(word).name) and argv[k + 1] != "-m"
        for _, argv, _ in bash_commands(page)
        for k, word in enumerate(argv[:-1])
    )


def block_problems(page: Path) -> list[str]:
    """Every command of the page's bash blocks that is not real, with why."""
    bad, made = [], set()
    for line, argv, cwd in bash_commands(page):
        if why := check_command(argv, cwd, frozenset(made)):
            bad.append(f"{line}: {why}")
        if ">" in argv[:-1]:  # what the block writes, an i-PI input for one
            made.add(argv[argv.index(">") + 1])
        if Path(argv[0]).name == "i-pi":
            made.add("RESTART")  # i-PI writes it where it runs
    return bad
