"""Virtual environments of their own, beside the test environment, for the tests that need
packages the driver's environment must not have (DP-GEN's, dpgen2's, deepmd-kit's
TensorFlow backend). Each is made once per machine, outside the checkout, from PyPI (a
clean clone, as CI's, reuses them): under ``$ENSEMBLE_DRIVER_TEST_CACHE``, else
``~/.cache/ensemble-driver-tests``."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

CACHE = Path(os.environ.get("ENSEMBLE_DRIVER_TEST_CACHE", Path.home() / ".cache" / "ensemble-driver-tests"))


def _index_unreachable() -> str | None:
    """Why PyPI (or ``$PIP_INDEX_URL``) cannot be reached from here, or None if it can."""
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple/").rstrip("/") + "/pip/"
    try:
        with urllib.request.urlopen(index, timeout=20):
            return None
    except Exception as exc:
        return f"{index}: {exc}"


def venv_with(venv: Path, *installs) -> str:
    """The Python of a virtual environment at ``venv`` with each list of ``installs`` (pip
    arguments) installed in turn, made once (a stamp file records what). Where pip fails
    and the package index cannot be reached, the test is skipped (and the environment is
    made by the next run that can reach it); where pip fails otherwise, it fails."""
    venv.parent.mkdir(parents=True, exist_ok=True)
    # one maker at a time: the suite's workers (pytest -n) may ask for the same one at once
    with open(venv.parent / f".{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _made(venv, installs)


def _made(venv: Path, installs) -> str:
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    want = repr(installs)
    if not stamp.exists() or stamp.read_text() != want:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
        for packages in installs:
            proc = subprocess.run(
                [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *packages],
                capture_output=True,
                text=True,
                timeout=1200,
            )
            if proc.returncode:
                offline = _index_unreachable()
                if offline:
                    pytest.skip(f"cannot make {venv}: the package index cannot be reached ({offline})")
                pytest.fail(f"pip install {' '.join(packages)} failed:\n" + proc.stdout[-2000:] + proc.stderr[-3000:])
        stamp.write_text(want)
    return str(python)
