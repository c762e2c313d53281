"""The checkout's folders and files the tests use, and the commands installed beside the
test interpreter."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

#: the checkout
ROOT = Path(__file__).resolve().parents[2]
#: the test suite: tests/unit (the fast tier), tests/peers, tests/support
TESTS = ROOT / "tests"
#: this folder, with the scripts the tests run as processes (ase_server.py, netns_ssh, ...)
SUPPORT = Path(__file__).resolve().parent
MODELS = ROOT / "examples" / "models"
IPI_INPUTS = ROOT / "ipi_inputs"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    """A command installed beside the test interpreter (i-pi, mpiexec, dp, ensemble-driver)."""
    candidate = BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (run ./setup.sh test)")
    return found
