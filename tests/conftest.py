"""Shared fixtures: paths of the shipped files, unique socket names, reference models; and
the one place where a test is marked ``peers``.

A test needs a real peer when it runs i-PI, mpiexec, a socket server, the command line as
a process, or a trained model. Such tests carry the marker ``peers``, set here from what
they use (:data:`PEER_FIXTURES`, :data:`PEER_MODULES`, :data:`PEER_TESTS`), never by
hand in a test file. ``./setup.sh test -m "not peers"`` is the fast tier, the loop while
editing. Every other test is guarded: one that starts a process or imports deepmd or
torch fails and says to list it here, so the fast tier stays fast and honest."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.models import Reference, convert_backend
from support.paths import IPI_INPUTS, MODELS, tool

#: fixtures that bring a real peer: a trained model, i-PI's socket, the hosts' test bed
PEER_FIXTURES = {
    "model_paths", "reference", "address", "testbed", "compressed_model", "dp_format_model", "yaml_format_model",
}  # fmt: skip
#: modules whose every test runs a real peer
PEER_MODULES = {
    "test_ase", "test_benchmarks_run_all", "test_committee", "test_demo", "test_dpgen_readers",
    "test_ensemble", "test_faults", "test_host_faults", "test_hosts", "test_ipi", "test_model",
    "test_monitoring", "test_parameters", "test_scale", "test_silence", "test_tensorflow_models", "test_traj",
}  # fmt: skip
#: single tests of other modules that start the command line, mpiexec or a script as a process
PEER_TESTS = {
    "test_cli.py::test_help_does_not_import_the_ml_stack",
    "test_cli.py::test_run_help_teaches",
    "test_cli.py::test_help_paragraphs_fit_the_terminal",
    "test_cli.py::test_python_dash_m_works",
    "test_cli.py::test_no_command_prints_help",
    "test_cli.py::test_benchmark_scripts_parse_their_options",
    "test_devices.py::test_node_share_under_mpiexec",
    "test_devices.py::test_device_cuda_without_gpu_fails_before_any_model_loads",
    "test_posthoc.py::test_plot_writes_a_png",
    "test_selection.py::test_active_learning_example_runs",
    "test_cli.py::test_missing_model_file_fails_fast",
    "test_cli.py::test_a_backend_that_is_not_installed_is_named_with_the_fix",
    "test_docs.py::test_changelog_matches_version",
    "test_deviation.py::test_matches_deepmd_reference",  # deepmd-kit's own functions
    # pages whose command blocks name scripts, run with --help to check their options
    "test_docs.py::test_command_blocks_are_real[benchmarks/README.md]",
    "test_docs.py::test_command_blocks_are_real[docs/active-learning.md]",
    "test_docs.py::test_command_blocks_are_real[docs/dp-ipi.md]",
    "test_docs.py::test_command_blocks_are_real[docs/models.md]",
    "test_docs.py::test_command_blocks_are_real[examples/active_learning/README.md]",
}  # fmt: skip


def _is_peer_test(item) -> bool:
    module = Path(str(item.fspath)).stem
    names = {f"{Path(str(item.fspath)).name}::{item.originalname}", f"{Path(str(item.fspath)).name}::{item.name}"}
    return module in PEER_MODULES or bool(names & PEER_TESTS) or bool(PEER_FIXTURES & set(item.fixturenames))


#: the files with the longest tests, run first: on two workers (./setup.sh test: pytest -n 2
#: --dist loadfile --no-loadscope-reorder) a long file taken last keeps one worker busy
#: while the other is idle (the quick benchmark run, ~7 min, was taken 11 min into a
#: 19-min run); the next two make their test environments on a new machine (~1-3 min each)
LONG_FILES = ("test_benchmarks_run_all.py", "test_tensorflow_models.py", "test_dpgen_readers.py")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _is_peer_test(item):
            item.add_marker(pytest.mark.peers)
    first = {name: k for k, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: first.get(item.path.name, len(first)))  # stable: the rest keep their order


class _NoPeers:
    """An import hook that refuses deepmd and torch (a trained model is a peer)."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("deepmd", "torch"):
            raise ImportError(f"{name}: a test not marked 'peers' imports a backend; list it in tests/conftest.py")
        return None


@pytest.fixture(autouse=True)
def _peers_only_where_marked(request, monkeypatch):
    """A test without the marker may not start a process or load a model."""
    if request.node.get_closest_marker("peers"):
        yield
        return

    def refuse(self, args, *rest, **kwargs):
        raise AssertionError(f"{args!r}: a test not marked 'peers' starts a process; list it in tests/conftest.py")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    guard = _NoPeers()
    sys.meta_path.insert(0, guard)
    try:
        yield
    finally:
        sys.meta_path.remove(guard)


_counter = itertools.count()


@pytest.fixture
def address():
    """A socket name of its own for every test; a crashed i-PI leaves /tmp/ipi_<name>."""
    name = f"edt{os.getpid()}-{next(_counter)}"
    path = Path("/tmp/ipi_" + name)
    path.unlink(missing_ok=True)
    yield name
    path.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def model_paths() -> list[Path]:
    paths = [MODELS / f"m{k}.pth" for k in range(4)]
    for p in paths:
        assert p.is_file(), f"{p} missing: run examples/models/make_models.py"
    return paths


@pytest.fixture(scope="session")
def reference() -> Reference:
    return Reference()


@pytest.fixture(scope="session")
def compressed_model(tmp_path_factory, model_paths) -> Path:
    """Model 0 compressed with `dp --pt compress`, as users run in production."""
    out = tmp_path_factory.mktemp("compressed") / "m0_compressed.pth"
    proc = subprocess.run(
        [tool("dp"), "--pt", "compress", "-i", str(model_paths[0]), "-o", str(out)],
        cwd=out.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def dp_format_model(tmp_path_factory, model_paths) -> Path:
    """Model 0 in deepmd-kit's backend-neutral format (a NumPy evaluator: deepmd.dpmodel);
    about 10 s."""
    return convert_backend(tmp_path_factory, model_paths[0], "m0.dp")


@pytest.fixture(scope="session")
def yaml_format_model(tmp_path_factory, model_paths) -> Path:
    """Model 1 in the backend-neutral format's YAML flavour."""
    return convert_backend(tmp_path_factory, model_paths[1], "m1.yaml")


@pytest.fixture(scope="session")
def symbols():
    """The element of every atom of the shipped i-PI inputs' structure, in i-PI's order."""
    from ensemble_driver.wire.template import read_template

    return list(read_template(IPI_INPUTS / "init.xyz").labels)


@pytest.fixture
def testbed():
    """Hosts a, b and c on one switch, made of network namespaces (tests/support/netns.py), removed
    after the test whatever its outcome; skipped where namespaces cannot be made."""
    from support.netns import TestBed, Unavailable

    bed = TestBed()
    try:
        bed.create()
    except Unavailable as exc:
        pytest.skip(f"no test bed of hosts: {exc}")
    try:
        yield bed
    finally:
        bed.destroy()
