"""The fixtures that bring a real peer: a socket name for i-PI, the shipped trained models
and deepmd-kit's own evaluation of them, their conversions and compression, the hosts'
test bed. They live here, under tests/peers/, so that a test elsewhere (the fast tier,
tests/unit/) cannot ask for one: it fails with "fixture not found"."""

from __future__ import annotations

import itertools
import os
import subprocess
from pathlib import Path

import pytest
from support.models import Reference, convert_backend
from support.paths import MODELS, tool

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
