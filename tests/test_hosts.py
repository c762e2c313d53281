"""Across hosts, on the test bed of tests/netns.py: three network namespaces on one switch,
each a host with its own name and address. MPICH's mpiexec launches ranks on two of them
through tests/netns_ssh (its ssh), and i-PI listens on the third over INET.

The bed itself (names, addresses, removal), and that MPI between two hosts of the bed
really crosses the link (and would not without MPI_OVER_THE_LINKS).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tool
from netns import ETC_NETNS, MPI_OVER_THE_LINKS, TestBed, Unavailable, wait_for

HERE = Path(__file__).resolve().parent


def namespaces() -> list[str]:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10).stdout.split()


@pytest.mark.timeout(60)
def test_testbed_hosts_and_their_removal():
    """Each host has its name and resolves the others'; a bed is removed whole even with a
    process still running on a host, and the leftovers of a killed test run are swept."""
    try:
        bed = TestBed().create()
    except Unavailable as exc:
        pytest.skip(f"no test bed of hosts: {exc}")
    try:
        a, b, c = (bed.host(role) for role in "abc")
        shell = 'echo "$(hostname) $(getent hosts $(hostname)) / $(getent hosts {})"'
        seen = subprocess.run(
            bed.on("a", ["sh", "-c", shell.format(c.name)]), capture_output=True, text=True, timeout=10
        )
        assert seen.stdout.split() == [a.name, a.address, a.name, "/", c.address, c.name], seen
        sleeper = subprocess.Popen(bed.on("b", ["sleep", "600"]), start_new_session=True)
        wait_for(lambda: bed.pids("b"), 10, "sleep to run on host b")
    finally:
        bed.destroy()
    assert sleeper.wait(timeout=10) == -signal.SIGKILL
    names = [h.name for h in (a, b, c)] + [bed.switch]
    assert not set(names) & set(namespaces())
    assert not any((ETC_NETNS / name).exists() for name in names)

    # a test process killed outright leaves its bed; the next bed removes it
    code = "import os, netns; print(netns.TestBed().create().switch, flush=True); os._exit(0)"
    left = subprocess.run([sys.executable, "-c", code], cwd=HERE, capture_output=True, text=True, timeout=30)
    stale = left.stdout.strip()
    assert stale in namespaces(), left.stderr
    with TestBed():
        assert stale not in namespaces()


def probe(testbed, workdir: Path, size: int, env: dict[str, str]) -> tuple[list[tuple[int, str, int]], int]:
    """Rank 0 on host a sends ``size`` bytes to rank 2 on host b: (rank, host, ranks on
    its node) of every rank, and the bytes host b received meanwhile."""
    command = testbed.mpiexec(
        tool("mpiexec"),
        [("a", 1), ("b", 2)],
        workdir / "hosts",
        [sys.executable, str(HERE / "mpi_probe.py"), str(size)],
    )
    before = testbed.link_bytes("b")[0]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, cwd=workdir)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    received = testbed.link_bytes("b")[0] - before
    ranks = json.loads(proc.stdout.strip().splitlines()[-1])
    return [tuple(r) for r in ranks], received


@pytest.mark.timeout(120)
def test_mpi_between_hosts_crosses_the_link(tmp_path, testbed):
    a, b = testbed.host("a").name, testbed.host("b").name
    size = 8_000_000
    ranks, received = probe(testbed, tmp_path, size, {**os.environ, **MPI_OVER_THE_LINKS})
    # each rank on its host, and MPICH sees one node per host (its shared-memory split)
    assert ranks == [(0, a, 1), (1, b, 2), (2, b, 2)]
    assert received >= size, f"host b received {received} bytes of the {size} sent by MPI"
    # without it, UCX (MPICH's default netmod here) sends through shared memory: what
    # crosses the link is only hydra's own traffic (a few kB)
    plain = {k: v for k, v in os.environ.items() if not k.startswith("UCX_")}
    ranks, received = probe(testbed, tmp_path, size, plain)
    assert ranks == [(0, a, 1), (1, b, 2), (2, b, 2)]
    assert received < size / 10, f"UCX sent over the link without UCX_TLS=tcp ({received} bytes): update netns.py"
