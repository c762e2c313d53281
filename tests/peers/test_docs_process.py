"""The Markdown pages' claims that need a process: the commands of the pages whose bash
blocks run scripts (each script run with ``--help`` to check the options given), and
CHANGELOG.md's newest version is ``ensemble-driver --version`` (the rest of the pages'
checks: tests/unit/project/test_docs.py)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from support.docs import ROOT, block_problems, names_scripts, pages

from ensemble_driver import __version__


@pytest.mark.parametrize("page", [p for p in pages() if names_scripts(p)], ids=lambda p: str(p.relative_to(ROOT)))
def test_command_blocks_are_real(page):
    """The pages whose blocks run scripts (the others: tests/unit/project/test_docs.py)."""
    bad = block_problems(page)
    assert not bad, f"{page.relative_to(ROOT)}:\n" + "\n".join(bad)


def test_changelog_matches_version():
    text = (ROOT / "CHANGELOG.md").read_text()
    versions = re.findall(r"^## \[?(\d+\.\d+\.\d+)\]?", text, re.M)
    assert versions and versions[0] == __version__, f"CHANGELOG.md's newest {versions[:1]}, package {__version__}"
    run = subprocess.run(
        [sys.executable, "-m", "ensemble_driver", "--version"], capture_output=True, text=True, timeout=60
    )
    assert run.stdout.strip() == f"ensemble-driver {__version__}"
