"""Fixtures every test may use, and the one place where a test is marked ``peers``: from
its path.

The layout (docs/development.md, "Tests"):

- ``tests/unit/<wing>/``: the fast tier, one folder per wing of the package (``wire``,
  ``models``, ``ensemble``, ``outputs``, ``devi``, ``run``, ``calibrate``; a wing gets
  its folder with its first unit test), ``foundation`` for the top-level modules
  (deviation, errors, arguments, ranks, signals, logs, the command line's parser) and
  ``project`` for the house itself (its pages, docstrings and layers);
- ``tests/peers/``: every test that needs a real peer: i-PI, ASE's socket server,
  mpiexec, DP-GEN or dpgen2, the command line as a process, a trained model. The
  fixtures that bring one (``model_paths``, ``reference``, ``address``, ``testbed``, ...)
  are in tests/peers/conftest.py, out of the unit tests' reach;
- ``tests/support/``: what the tests share besides fixtures (a package: ``from
  support.paths import ROOT``), and the scripts they run as processes.

Every test under tests/peers/ carries the marker ``peers``, set here from its path,
never by hand in a test file. ``./setup.sh test -m "not peers"`` is the fast tier, the
loop while editing. Every other test is guarded: one that starts a process or imports
deepmd or torch fails and says to move it to tests/peers/, so the fast tier stays fast
and honest; a test module outside tests/unit/ and tests/peers/ fails and says where it
belongs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support.paths import IPI_INPUTS

TESTS = Path(__file__).resolve().parent
UNIT = TESTS / "unit"
PEERS = TESTS / "peers"

#: the files with the longest tests (paths in tests/), run first: on two workers
#: (./setup.sh test: pytest -n 2 --dist loadfile --no-loadscope-reorder) a long file taken
#: last keeps one worker busy while the other is idle (the quick benchmark run, ~7 min,
#: was taken 11 min into a 19-min run); the next two make their test environments on a
#: new machine (~1-3 min each)
LONG_FILES = ("peers/test_benchmarks_run_all.py", "peers/test_tensorflow_models.py", "peers/test_dpgen_readers.py")


def _in(path: Path, folder: Path) -> bool:
    return Path(path).resolve().is_relative_to(folder)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _in(item.path, PEERS):
            item.add_marker(pytest.mark.peers)
    first = {TESTS / name: k for k, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: first.get(Path(item.path).resolve(), len(first)))  # stable: the rest keep their order


class _NoPeers:
    """An import hook that refuses deepmd and torch (a trained model is a peer)."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("deepmd", "torch"):
            raise ImportError(f"{name}: a test outside tests/peers/ imports a backend; move it to tests/peers/")
        return None


@pytest.fixture(autouse=True)
def _peers_only_where_marked(request, monkeypatch):
    """A test without the marker may not start a process or load a model; a test module
    belongs under tests/unit/<wing>/ or tests/peers/."""
    if _in(request.node.path, TESTS) and not (_in(request.node.path, UNIT) or _in(request.node.path, PEERS)):
        pytest.fail(f"{request.node.path}: a test module belongs under tests/unit/<wing>/ or tests/peers/")
    if request.node.get_closest_marker("peers"):
        yield
        return

    def refuse(self, args, *rest, **kwargs):
        raise AssertionError(f"{args!r}: a test outside tests/peers/ starts a process; move it to tests/peers/")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    guard = _NoPeers()
    sys.meta_path.insert(0, guard)
    try:
        yield
    finally:
        sys.meta_path.remove(guard)


@pytest.fixture(scope="session")
def symbols():
    """The element of every atom of the shipped i-PI inputs' structure, in i-PI's order."""
    from ensemble_driver.wire.template import read_template

    return list(read_template(IPI_INPUTS / "init.xyz").labels)


@pytest.fixture(scope="module")
def ipi_files(tmp_path_factory) -> dict[str, Path]:
    """The files of tests/support/ipi_files.py, as i-PI's <trajectory> output writes them,
    one bead each (for devi's reading, tests/unit/devi/, and its rows, tests/peers/)."""
    from support.ipi_files import FILES, write_ipi

    folder = tmp_path_factory.mktemp("ipi_files")
    for bead, (name, spec) in enumerate(FILES.items()):
        write_ipi(folder / name, *spec, bead=bead)
    return {name: folder / name for name in FILES}
