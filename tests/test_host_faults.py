"""Faults across hosts, on the test bed of tests/netns.py (hosts a, b, c on one switch):
a link cut at the switch (no FIN, no RST reaches anyone) and a host killed.

- The link of i-PI's host c cut mid-run: the driver (rank 0 on a, ranks 1 and 2 on b)
  ends every rank within --server-timeout plus 10 s, status 4, one line saying how long
  it waited, every row whole.
- The link of host b (ranks 1 and 2) cut mid-run: rank 0 goes on serving i-PI until the
  oldest deviation job has waited --server-timeout, then ends the job with one line naming
  the ranks and their host (MPI itself notices nothing first), status 4, every row whole.
  mpiexec and every rank on the hosts it reaches end; the ranks on the cut-off host (and
  hydra's proxy there) cannot be told, and wait, idle, until the link is back: then they
  end at once.
- The driver's host killed (link cut, then every process of it killed: a node that dies
  sends no FIN) while i-PI, on host c with <timeout>, waits for a force: i-PI gives the
  request to a replacement driver started on host b, and the run completes; the
  replacement's rows, in files of their own labelled with --step-offset from i-PI's
  output, join the first driver's with no step twice and every row equal to the models'
  deviation at that step.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import test_faults as faults
import test_hosts as hosts
from conftest import tool
from netns import MPI_OVER_THE_LINKS

from ensemble_driver.launch import ProcessGroup

TIMEOUT = 5  # --server-timeout, s
PORT = hosts.PORT
ENV = {**os.environ, **MPI_OVER_THE_LINKS}


def ipi_input(workdir: Path, address: str, steps: int, timeout: float | None = None, outputs=hosts.OUTPUTS) -> None:
    workdir.mkdir(exist_ok=True)
    hosts.prepare_input(
        hosts.IPI_INPUTS / "pimd.xml",
        workdir / "input.xml",
        socket=hosts.SocketSettings(mode="inet", address=address, port=PORT, timeout=timeout),
        steps=steps,
        nbeads=hosts.NBEADS,
        prefix="sim",
        outputs=outputs,
    )


def driver(models, workdir: Path, address: str, *extra: str) -> list[str]:
    return [*hosts.driver(models, workdir, address, PORT), "--server-timeout", str(TIMEOUT), *extra]


def rows_of(path: Path) -> int:
    return max(0, path.read_text().count("\n") - 1) if path.exists() else 0


def start_across(bed, group: ProcessGroup, workdir: Path, models) -> tuple:
    """i-PI on c (a long run), rank 0 on a, ranks 1 and 2 on b; returns once every bead
    has three rows (the run is well under way)."""
    c = bed.host("c").name
    ipi_input(workdir, c, steps=100000)
    ipi = group.start("i-pi", bed.on("c", [tool("i-pi"), "input.xml"]), cwd=workdir)
    mpiexec = bed.mpiexec(tool("mpiexec"), [("a", 1), ("b", 2)], workdir / "hostfile", driver(models, workdir, c))
    run = group.start("driver", mpiexec, cwd=workdir, env=ENV)
    files = [workdir / f"model_devi{bead + 1}.out" for bead in range(hosts.NBEADS)]
    faults.wait_until(
        lambda: all(rows_of(f) >= 3 for f in files) or run.popen.poll() is not None, 240, "three rows per bead"
    )
    assert run.popen.poll() is None, run.tail()
    return ipi, run, files


def ends_with(run, start: str, deadline: float) -> tuple[float, list[str]]:
    """The driver's mpiexec ends within ``deadline`` s, status 4, with exactly one error
    line, which starts with ``start``; returns the seconds it took and the log's lines."""
    t0 = time.monotonic()
    try:
        status = run.popen.wait(timeout=deadline)
    except Exception:
        pytest.fail(f"the driver did not end within {deadline} s:\n{run.tail()}")
    took = time.monotonic() - t0
    lines = run.log_path.read_text().splitlines()
    errors = [line for line in lines if "error:" in line]
    assert status == 4, run.tail()
    assert len(errors) == 1 and errors[0].startswith("ensemble-driver: error: " + start), run.tail()
    return took, lines


def no_rank_left(bed, roles) -> None:
    for role in roles:
        hosts.wait_for(lambda role=role: not bed.pids(role), 10, f"every process of host {role} to end")


@pytest.mark.timeout(400)
def test_link_to_the_server_cut(tmp_path, testbed, model_paths):
    with ProcessGroup(tmp_path / "logs") as group:
        ipi, run, files = start_across(testbed, group, tmp_path, model_paths[:3])
        testbed.set_link("c", False)  # i-PI's host gone from the network: nothing reaches anyone
        took, _ = ends_with(
            run, f"the server sent nothing for {TIMEOUT} s (--server-timeout {TIMEOUT}): ", TIMEOUT + 10
        )
        no_rank_left(testbed, "ab")
        print(f"the driver ended {took:.1f} s after the link to i-PI's host was cut")
        testbed.kill("c")
    for f in files:
        assert len(faults.rows(f)) >= 3  # every row whole


@pytest.mark.timeout(400)
def test_link_of_a_follower_host_cut(tmp_path, testbed, model_paths):
    b = testbed.host("b").name
    with ProcessGroup(tmp_path / "logs") as group:
        ipi, run, files = start_across(testbed, group, tmp_path, model_paths[:3])
        testbed.set_link("b", False)  # ranks 1 and 2 gone from the network
        took, lines = ends_with(run, f"rank 1 on {b}, rank 2 on {b} has not answered for ", TIMEOUT + 10)
        print(f"the job ended {took:.1f} s after host b's link was cut")
        assert not any("BAD TERMINATION" in line for line in lines), run.tail()  # MPI noticed nothing first
        no_rank_left(testbed, "a")
        # host b cannot be told: MPI_Abort's kill goes to hydra's proxy on b over the cut
        # link, so the proxy and ranks 1 and 2 wait there (as on a cluster, until the host
        # is back or the batch system ends the job); the link back, they end at once
        stranded = testbed.pids("b")
        assert len(stranded) >= 3, stranded  # the proxy (and its sh) and the two ranks
        testbed.set_link("b", True)
        no_rank_left(testbed, "b")
        testbed.kill("c")
