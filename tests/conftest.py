"""Shared fixtures: paths of the shipped files, unique socket names, reference models."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "examples" / "models"
IPI_INPUTS = ROOT / "ipi_inputs"
BIN = Path(sys.executable).parent
_counter = itertools.count()


def tool(name: str) -> str:
    """A command installed beside the test interpreter (i-pi, mpiexec, dp, ensemble-driver)."""
    candidate = BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (run ./setup.sh test)")
    return found


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


class Reference:
    """In-process DeepPot evaluation, the ground truth the driver is compared with."""

    def __init__(self):
        self._cache: dict[str, object] = {}

    def deeppot(self, path: Path):
        key = str(path)
        if key not in self._cache:
            from deepmd.infer import DeepPot

            self._cache[key] = DeepPot(key)
        return self._cache[key]

    def eval(self, path: Path, atoms, periodic: bool = True):
        """(energy eV, forces (nat,3), virial (3,3) DeePMD layout) of an ASE Atoms."""
        import numpy as np

        dp = self.deeppot(path)
        type_map = dp.get_type_map()
        atype = [type_map.index(s) for s in atoms.get_chemical_symbols()]
        cell = atoms.cell.array.reshape(1, 9) if periodic else None
        e, f, v = dp.eval(atoms.positions.reshape(1, -1), cell, atype)[:3]
        return float(np.ravel(e)[0]), np.asarray(f).reshape(-1, 3), np.asarray(v).reshape(3, 3)


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
    """Model 0 in deepmd-kit's backend-neutral format, by `dp convert-backend` (a NumPy
    evaluator: deepmd.dpmodel); about 10 s."""
    out = tmp_path_factory.mktemp("dp_format") / "m0.dp"
    proc = subprocess.run(
        [tool("dp"), "convert-backend", str(model_paths[0]), str(out)],
        cwd=out.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and out.is_file(), proc.stdout[-2000:] + proc.stderr[-3000:]
    return out


@pytest.fixture(scope="session")
def symbols():
    """The element of every atom of the shipped i-PI inputs' structure, in i-PI's order."""
    from ensemble_driver.template import read_template

    return list(read_template(IPI_INPUTS / "init.xyz").labels)


@pytest.fixture
def testbed():
    """Hosts a, b and c on one switch, made of network namespaces (tests/netns.py), removed
    after the test whatever its outcome; skipped where namespaces cannot be made."""
    from netns import TestBed, Unavailable

    bed = TestBed()
    try:
        bed.create()
    except Unavailable as exc:
        pytest.skip(f"no test bed of hosts: {exc}")
    try:
        yield bed
    finally:
        bed.destroy()


def free_port() -> int:
    """A TCP port no one listens on now, for a test's own INET server."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
