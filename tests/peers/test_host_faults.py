"""Faults across hosts, on the test bed of tests/support/netns.py (hosts a, b, c on one switch):
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
  sends no FIN) while i-PI, on host c with <timeout>, waits for a step's forces: i-PI gives
  the request to a replacement driver started on host b, and the run completes; the
  replacement's rows, in files of their own labelled with --step-offset from i-PI's
  output, join the first driver's with no step twice and every row equal to the models'
  deviation at that step. The beads of a step go in one request (i-PI's <batch_size>):
  one by one, a driver dying mid-step leaves beads a step apart, which one --step-offset
  cannot label. i-PI's <timeout> covers only a request in hand, so the link is cut while
  the driver computes (after its log shows a batch received).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from support import faults, hosts
from support.harness import wait_until
from support.ipi_runs import BIN_OUTPUT, expected_rows
from support.netns import MPI_OVER_THE_LINKS, wait_for
from support.paths import IPI_INPUTS, tool

from ensemble_driver.demo.inputs import SocketSettings, prepare_input
from ensemble_driver.demo.launch import ProcessGroup

TIMEOUT = 5  # --server-timeout, s
PORT = hosts.PORT
ENV = {**os.environ, **MPI_OVER_THE_LINKS}


def ipi_input(workdir: Path, address: str, steps: int, timeout: float | None = None, outputs=hosts.OUTPUTS) -> None:
    workdir.mkdir(exist_ok=True)
    prepare_input(
        IPI_INPUTS / "pimd.xml",
        workdir / "input.xml",
        socket=SocketSettings(mode="inet", address=address, port=PORT, timeout=timeout),
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
    wait_until(lambda: all(rows_of(f) >= 3 for f in files) or run.popen.poll() is not None, 240, "three rows per bead")
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
        wait_for(lambda role=role: not bed.pids(role), 10, f"every process of host {role} to end")


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


REPLACE_STEPS = 24
IPI_TIMEOUT = 3  # i-PI's <timeout>: a request unanswered this long goes to another client
BATCH = "batch of 4 structures received"  # the driver's -v log, on rank 0
STEP_OUTPUT = "<properties stride='1' filename='out'> [ step ] </properties>"


def steps_of(path: Path) -> list[int]:
    return [int(row[0]) for row in faults.rows(path)]


def last_step(properties: Path) -> int:
    """The last step i-PI wrote in its properties file: the forces of evaluations 0 to
    that step have reached it (step 0 is the initial structure)."""
    lines = [line for line in properties.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return round(float(lines[-1].split()[0]))


@pytest.mark.timeout(600)
def test_driver_host_dies_and_a_replacement_finishes_the_run(tmp_path, testbed, model_paths, reference, symbols):
    """i-PI on c (INET, <timeout> 3 s, the beads of a step in one batch, so that a step is
    one request); the first driver, 3 ranks, on a; a's link cut and its processes killed
    mid-run (a node that dies: no FIN); the step in progress K is i-PI's last written
    step + 1; a replacement on b, in a directory of its own with --append --step-offset K,
    receives the request i-PI re-queues and the run completes. Per bead, the first
    driver's rows below K and the replacement's rows are the steps 0..N, each once, and
    each row is the models' deviation at that step's structure (i-PI's trajectory)."""
    models = model_paths[:3]
    c = testbed.host("c").name
    ipi_dir = tmp_path / "ipi"
    first, second = ipi_dir / "first", ipi_dir / "second"  # --out-file, from i-PI's directory
    ipi_dir.mkdir()
    prepare_input(
        IPI_INPUTS / "pimd.xml",
        ipi_dir / "input.xml",
        socket=SocketSettings(
            mode="inet",
            address=c,
            port=PORT,
            timeout=IPI_TIMEOUT,
            batch_size=hosts.NBEADS,
            consolidate_messages=True,  # i-PI needs it for batches
        ),
        steps=REPLACE_STEPS,
        nbeads=hosts.NBEADS,
        prefix="sim",
        outputs=(STEP_OUTPUT, BIN_OUTPUT),
    )
    files = [f"model_devi{bead + 1}.out" for bead in range(hosts.NBEADS)]

    def command(out: Path, *extra: str) -> list[str]:  # as docs/multi-node.md shows it
        argv = hosts.driver(models, ipi_dir, c, PORT)
        argv[argv.index("--out-freq") + 1] = "1"
        return [tool("mpiexec"), "-n", "3", *argv, "--out-file", f"{out.name}/model_devi.out", *extra]

    with ProcessGroup(tmp_path / "logs") as group:
        first.mkdir()
        second.mkdir()
        ipi = group.start("i-pi", testbed.on("c", [tool("i-pi"), "input.xml"]), cwd=ipi_dir)
        old = group.start("first", testbed.on("a", command(first)), cwd=ipi_dir)
        wait_until(
            lambda: all(rows_of(first / f) >= 5 for f in files) or None not in group.poll().values(), 240, "five rows"
        )
        assert old.popen.poll() is None and ipi.popen.poll() is None, ipi.tail() + old.tail()
        # host a dies: its link first (no FIN reaches i-PI), then every process of it. The
        # cut is made just after the driver logs a batch received, while it computes: i-PI's
        # <timeout> covers only a request in hand; a client silent while i-PI asks its
        # STATUS between requests blocks i-PI's polling 60 s at a time, again and again
        batches = old.log_path.read_text().count(BATCH)
        wait_until(lambda: old.log_path.read_text().count(BATCH) > batches, 30, "a batch to be received")
        testbed.set_link("a", False)
        wait_until(
            lambda: (
                "died or got unresponsive" in ipi.log_path.read_text()
                or "Couldn't find readable socket" in ipi.log_path.read_text()
            ),
            70,
            "i-PI's timeout",
        )
        assert "died or got unresponsive" in ipi.log_path.read_text(), "the cut fell between requests:\n" + ipi.tail()
        k = last_step(ipi_dir / "sim.out") + 1  # the step whose request i-PI re-queued
        testbed.kill("a")  # no FIN: a's link is down
        new = group.start("second", testbed.on("b", command(second, "--append", "--step-offset", str(k))), cwd=ipi_dir)
        wait_until(lambda: ipi.popen.poll() is not None or new.popen.poll() not in (None, 0), 300, "the end")
        assert ipi.popen.returncode == 0, ipi.tail() + new.tail()
        assert new.popen.wait(timeout=30) == 0, new.tail()
    print(f"first driver killed at step {k}")
    expected = expected_rows(
        type("Run", (), {"workdir": ipi_dir, "prefix": "sim", "nbeads": hosts.NBEADS}),
        models,
        reference,
        symbols,
        steps=REPLACE_STEPS,
        out_freq=1,
    )
    lost = {}
    for bead, name in enumerate(files):
        # the first driver's rows from K on are of structures whose forces i-PI never got
        # (at most the one in flight when the link went): the replacement has them
        kept = [r for r in faults.rows(first / name) if r[0] < k]
        late = [int(r[0]) for r in faults.rows(first / name) if r[0] >= k]
        assert late in ([], [k]), (name, late)
        added = faults.rows(second / name)
        assert [int(r[0]) for r in added] == list(range(k, REPLACE_STEPS + 1)), (name, added)
        # the first driver's kept rows are steps 0..j, j < K; the rows of j+1..K-1 were in
        # flight on the dead host (rank 0 writes a row once models 1 and 2 have answered)
        old_steps = [int(r[0]) for r in kept]
        assert old_steps == list(range(len(old_steps))), (name, old_steps)
        lost[bead] = list(range(len(old_steps), k))
        want = {int(line.split()[0]): [float(x) for x in line.split()] for line in expected[bead]}
        merged = kept + added
        np.testing.assert_allclose(
            np.array(merged), np.array([want[int(r[0])] for r in merged]), rtol=1e-6, atol=1e-9, err_msg=name
        )
    print(f"steps lost with the dead host, per bead: {lost}")
