"""A driver replaced mid-run: i-PI outlives its clients, so a job killed outright (a node
lost, an allocation ended) is followed by a new one on the same running i-PI. With
``--ipi-input``, the same command in the same directory continues every file exactly,
whatever instant the old job died at (here: once while i-PI waited for its answer, once
between requests); where it cannot be sure of i-PI's step it refuses in one line.

Each run is real i-PI 3.3 with the driver under real mpiexec; the reference is the same
input run without interruption (i-PI's dynamics are deterministic, so the structures
are the same: checked on i-PI's own full-precision trajectories)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import ase.io
import numpy as np
import pytest
from support.harness import wait_until
from support.ipi_inputs import ipi_input, system, written_rows
from support.mpi import mpiexec
from support.paths import IPI_INPUTS, tool
from support.waiting import poll_until

from ensemble_driver.demo.launch import ProcessGroup
from ensemble_driver.ensemble.journal import NAME as JOURNAL

STEPS = 40
OPTIONS = ["--out-freq", "1", "--traj-files", "dpgen", "--trust-lo", "0.02", "--trust-hi", "10"]


def the_input(address: str) -> str:
    """2 beads, with the <ffsocket> settings under which i-PI 3.3 hands a lost client's
    request to the next one (docs/failures.md; consolidated messages crash its poll loop)."""
    xml = ipi_input(address, system(2, "<force forcefield='dp'/>"))
    xml = xml.replace(
        "<timeout> 600 </timeout>", "<consolidate_messages> false </consolidate_messages>\n    <timeout> 600 </timeout>"
    )
    assert "consolidate_messages" in xml
    return xml.replace("<total_steps> 6 </total_steps>", f"<total_steps> {STEPS} </total_steps>")


def driver(model_paths, *extra: str) -> list[str]:
    command = [tool("ensemble-driver"), "run", "--models", *map(str, model_paths[:2]), "--ipi-input", "input.xml"]
    return mpiexec(2, command + ["--connect-timeout", "120", "-v", *OPTIONS, *extra])


def prepare(workdir: Path, address: str) -> None:
    workdir.mkdir()
    shutil.copy(IPI_INPUTS / "init.xyz", workdir / "init.xyz")
    (workdir / "input.xml").write_text(the_input(address))


def wait_for(condition, what: str, group: ProcessGroup, timeout: float = 300) -> None:
    """Wait for ``condition``; fail at once when a process of the group ends unexpectedly."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, group._report(f"waited {timeout} s for {what}")
        ended = [m.name for m in group.members if m.popen.poll() not in (None, *m.ok_status)]
        assert not ended, group._report(f"{', '.join(ended)} ended while waiting for {what}")
        time.sleep(0.05)


def rows_of(path: Path) -> int:
    return len(written_rows(path)) if path.exists() else 0


def kill_job(member) -> None:
    """SIGKILL to the job's mpiexec, as a batch system ends a job; then its ranks must go
    (a rank left behind after 60 s is killed: it must not serve i-PI on)."""
    pgid = member.popen.pid
    member.popen.send_signal(signal.SIGKILL)
    member.popen.wait(30)

    def gone() -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        return False

    if not poll_until(gone, 60, 0.1):
        os.killpg(pgid, signal.SIGKILL)
        wait_until(gone, 30, f"the ranks of {member.name} to end")


def outputs(workdir: Path) -> dict[str, object]:
    """Every output, per bead: rows, dump frames by step, candidates by step."""
    found: dict[str, object] = {}
    for bead in (1, 2):
        found[f"rows{bead}"] = written_rows(workdir / f"model_devi{bead}.out")
        dumps = sorted((workdir / "traj").glob(f"*.lammpstrj{bead}"), key=lambda p: int(p.name.split(".")[0]))
        found[f"dumps{bead}"] = [(int(p.name.split(".")[0]), p.read_text()) for p in dumps]
        found[f"candidates{bead}"] = [
            (a.info["step"], a.positions) for a in ase.io.read(workdir / f"candidates{bead}.xyz", ":")
        ]
    return found


def assert_same_outputs(mine: dict, theirs: dict) -> None:
    for bead in (1, 2):
        rows, reference = mine[f"rows{bead}"], theirs[f"rows{bead}"]
        assert [int(r.split()[0]) for r in rows] == list(range(STEPS + 1)), rows  # every step once, in order
        np.testing.assert_allclose(
            np.array([r.split() for r in rows], float), np.array([r.split() for r in reference], float), rtol=1e-5
        )
        dumps = mine[f"dumps{bead}"]
        assert [s for s, _ in dumps] == [s for s, _ in theirs[f"dumps{bead}"]] == list(range(STEPS + 1))
        for (_, text), (_, expected) in zip(dumps, theirs[f"dumps{bead}"]):
            values = [np.array(t.split("ITEM: ATOMS")[1].split("\n", 1)[1].split(), float) for t in (text, expected)]
            np.testing.assert_allclose(values[0], values[1], rtol=1e-5, atol=1e-8)
        candidates = mine[f"candidates{bead}"]
        assert [s for s, _ in candidates] == [s for s, _ in theirs[f"candidates{bead}"]]
        assert len({s for s, _ in candidates}) == len(candidates)  # once each
        for (_, p), (_, q) in zip(candidates, theirs[f"candidates{bead}"]):
            np.testing.assert_allclose(p, q, rtol=1e-5, atol=1e-8)


@pytest.mark.timeout(1200)
def test_a_driver_killed_twice_is_replaced_exactly(tmp_path, model_paths):
    whole, replaced = tmp_path / "whole", tmp_path / "replaced"
    prepare(whole, f"repl-whole-{os.getpid()}")
    prepare(replaced, f"repl-cut-{os.getpid()}")
    with ProcessGroup(whole / "logs") as group:
        group.start("i-pi", [tool("i-pi"), "input.xml"], cwd=whole)
        group.start("driver", driver(model_paths), cwd=whole)
        group.wait(600)
    assert not (whole / JOURNAL).exists()  # the server ended the run: nothing to continue

    stalled = replaced / "stalled"
    bead1 = replaced / "model_devi1.out"
    with ProcessGroup(replaced / "logs") as group:
        ipi = group.start("i-pi", [tool("i-pi"), "input.xml"], cwd=replaced)
        # job 1 stops answering once it holds its 15th structure (bead 0 or 1 of step 7):
        # i-PI waits for that answer when the job is killed
        env = {**os.environ, "ENSEMBLE_DRIVER_TEST_STALL": f"15:{stalled}"}
        job1 = group.start("job1", driver(model_paths), cwd=replaced, env=env, ok_status=frozenset({-9}))
        wait_for(stalled.exists, "job 1 to hold a request", group)
        kill_job(job1)
        job2 = group.start("job2", driver(model_paths), cwd=replaced, ok_status=frozenset({-9}))
        wait_for(lambda: rows_of(bead1) >= 20, "job 2's rows", group)
        kill_job(job2)  # between requests, or not: wherever it is
        group.start("job3", driver(model_paths), cwd=replaced)
        group.wait(600)
        assert ipi.popen.returncode == 0
    assert_same_outputs(outputs(replaced), outputs(whole))
    # i-PI's own full-precision trajectory: the replaced run is the uninterrupted one
    for bead in (0, 1):
        ours, theirs = [(d / f"sim.bin_{bead}.bin").read_bytes() for d in (replaced, whole)]
        assert ours == theirs
    assert not (replaced / JOURNAL).exists()
    logs = (replaced / "logs").glob("job*.log")
    assert sum("continuing the rows of the driver that stopped" in p.read_text() for p in logs) == 2


@pytest.mark.timeout(600)
def test_a_replacement_that_cannot_be_sure_refuses(tmp_path, model_paths):
    """Rows and a journal, but the i-PI they were written for is gone: refused in one line
    (status 2), every file untouched; --resume on an input at step 0 likewise."""
    workdir = tmp_path / "run"
    prepare(workdir, f"repl-gone-{os.getpid()}")
    stalled = workdir / "stalled"
    with ProcessGroup(workdir / "logs") as group:
        ipi = group.start("i-pi", [tool("i-pi"), "input.xml"], cwd=workdir, ok_status=frozenset({-9}))
        env = {**os.environ, "ENSEMBLE_DRIVER_TEST_STALL": f"9:{stalled}"}
        job = group.start("job1", driver(model_paths), cwd=workdir, env=env, ok_status=frozenset({-9}))
        wait_for(stalled.exists, "job 1 to hold a request", group)
        kill_job(job)
        os.killpg(ipi.popen.pid, signal.SIGKILL)  # i-PI killed as well
        ipi.popen.wait(30)
    before = {p.name: p.read_bytes() for p in workdir.glob("*.out")}
    assert before and any(written_rows(workdir / name) for name in before)
    for extra, words in (((), "no process on this host listens"), (("--resume",), "it is no RESTART")):
        done = subprocess.run(driver(model_paths, *extra), cwd=workdir, capture_output=True, text=True, timeout=300)
        assert done.returncode == 2, done.stderr
        errors = [line for line in done.stderr.splitlines() if "error:" in line]
        assert len(errors) == 1 and words in errors[0], done.stderr
        assert {p.name: p.read_bytes() for p in workdir.glob("*.out")} == before


@pytest.mark.timeout(600)
def test_two_jobs_on_one_socket_are_told(tmp_path, model_paths):
    """Two driver jobs on one i-PI socket (no --connections), each in its own directory:
    i-PI spreads the beads over both, so each job's step labels are wrong; each job says
    so in a WARNING naming --connections as soon as it shows, and again at its end."""
    workdir = tmp_path / "ipi"
    prepare(workdir, f"repl-two-{os.getpid()}")
    xml = (workdir / "input.xml").read_text()
    (workdir / "input.xml").write_text(xml.replace("system(2", "").replace("nbeads='2'", "nbeads='4'"))
    (workdir / "input.xml").write_text(
        (workdir / "input.xml")
        .read_text()
        .replace(f"<total_steps> {STEPS} </total_steps>", "<total_steps> 100000 </total_steps>")
    )
    jobs = []
    with ProcessGroup(workdir / "logs") as group:
        group.start("i-pi", [tool("i-pi"), "input.xml"], cwd=workdir)
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            command = driver(model_paths)
            command[command.index("input.xml")] = str(workdir / "input.xml")
            jobs.append(group.start(name, command, cwd=tmp_path / name))
        warned = [lambda job=job: "another client" in job.log_path.read_text(errors="replace") for job in jobs]
        wait_for(lambda: all(w() for w in warned), "both jobs to warn", group)
        (workdir / "EXIT").touch()  # i-PI's soft exit: both jobs end with their summaries
        group.wait(300)
    for job in jobs:
        lines = [
            line for line in job.log_path.read_text().splitlines() if "WARNING" in line and "another client" in line
        ]
        assert len(lines) == 2 and all("--connections" in line for line in lines), lines
