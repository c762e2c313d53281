"""Across hosts, on the test bed of tests/support/netns.py: three network namespaces on one switch,
each a host with its own name and address. MPICH's mpiexec launches ranks on two of them
through tests/support/netns_ssh (its ssh), and i-PI listens on the third over INET.

The bed itself (names, addresses, removal); that MPI between two hosts of the bed really
crosses the link (and would not without MPI_OVER_THE_LINKS); then, that a 3-model ensemble with model 0 on host a,
models 1 and 2 on host b and i-PI on host c writes the very rows of the same run on one
host over loopback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support.hosts import NBEADS, OUT_FREQ, OUTPUTS, PORT, driver
from support.netns import ETC_NETNS, MPI_OVER_THE_LINKS, TestBed, Unavailable, wait_for
from support.paths import IPI_INPUTS, SUPPORT, tool
from support.sockets import free_port

from ensemble_driver.demo.inputs import SocketSettings, prepare_input
from ensemble_driver.demo.launch import ProcessGroup

STEPS = 6
ATOMS = 32  # ipi_inputs/init.xyz


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
    left = subprocess.run([sys.executable, "-c", code], cwd=SUPPORT, capture_output=True, text=True, timeout=30)
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
        [sys.executable, str(SUPPORT / "mpi_probe.py"), str(size)],
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


def ipi_input(workdir: Path, address: str, port: int) -> None:
    """The shipped PIMD input on an INET socket; same seed in every run."""
    prepare_input(
        IPI_INPUTS / "pimd.xml",
        workdir / "input.xml",
        socket=SocketSettings(mode="inet", address=address, port=port),
        steps=STEPS,
        nbeads=NBEADS,
        prefix="sim",
        outputs=OUTPUTS,
    )


def run(workdir: Path, ipi: list[str], mpiexec: list[str], env: dict[str, str] | None = None) -> str:
    """i-PI and the driver's mpiexec, both watched; the driver's log."""
    with ProcessGroup(workdir / "logs") as group:
        group.start("i-pi", ipi, cwd=workdir)
        member = group.start("driver", mpiexec, cwd=workdir, env=env)
        group.wait(150)
    return member.log_path.read_text()


def outputs(workdir: Path) -> dict[str, bytes]:
    names = [f"model_devi{bead + 1}.out" for bead in range(NBEADS)] + ["sim.out"]
    return {name: (workdir / name).read_bytes() for name in names}


@pytest.mark.timeout(300)
def test_ensemble_over_two_hosts_writes_the_rows_of_one(tmp_path, testbed, model_paths):
    models = model_paths[:3]
    a, b, c = (testbed.host(role) for role in "abc")

    # on one host: i-PI and mpiexec -n 3 on loopback, as a user would run it
    one = tmp_path / "one_host"
    port = free_port()
    ipi_input(one, "127.0.0.1", port)
    run(one, [tool("i-pi"), "input.xml"], [tool("mpiexec"), "-n", "3", *driver(models, one, "127.0.0.1", port)])

    # across hosts: i-PI on c (by its name), rank 0 on a, ranks 1 and 2 on b
    hosts = tmp_path / "hosts"
    hosts.mkdir()
    ipi_input(hosts, c.name, PORT)
    mpiexec = testbed.mpiexec(
        tool("mpiexec"), [("a", 1), ("b", 2)], hosts / "hostfile", driver(models, hosts, c.name, PORT)
    )
    before = {role: testbed.link_bytes(role)[0] for role in "bc"}
    log = run(hosts, testbed.on("c", [tool("i-pi"), "input.xml"]), mpiexec, {**os.environ, **MPI_OVER_THE_LINKS})
    received = {role: testbed.link_bytes(role)[0] - before[role] for role in "bc"}

    # the placement the start-up log shows, and the server reached over the switch
    for rank, host in ((0, a), (1, b), (2, b)):
        assert f"rank {rank} on {host.name} " in log, log[-3000:]
    assert f"connected to INET socket {c.name}:{PORT}" in log, log[-3000:]
    # lower bounds (float64 positions or forces only): i-PI got every bead's forces at
    # every step over c's link, and models 1 and 2 each bead's structure at every
    # deviation step over b's. Measured here: b received 68 kB with UCX_TLS=tcp and 20 kB
    # without it (hydra's own traffic, the structures going through shared memory), below
    # this bound of 25 kB; test_mpi_between_hosts_crosses_the_link shows it with 8 MB.
    payload = ATOMS * 3 * 8
    assert received["c"] >= NBEADS * (STEPS + 1) * payload, received
    assert received["b"] >= 2 * NBEADS * (STEPS // OUT_FREQ + 1) * payload, received

    across, single = outputs(hosts), outputs(one)
    for name, data in single.items():
        if name.startswith("model_devi"):
            steps = [int(line.split()[0]) for line in data.decode().splitlines()[1:]]
            assert steps == list(range(0, STEPS + 1, OUT_FREQ)), (name, steps)
        assert across[name] == data, f"{name} differs:\n{across[name].decode()}\n---\n{data.decode()}"
