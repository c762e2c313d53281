"""Scale-out under real i-PI and real mpiexec: one MPI job serving a PIMD run over two
connections (--connections 2), or one batched connection split over two model-0 ranks
(--model0-ranks 2), writes the same per-bead rows as one connection, and every bead is
evaluated exactly steps + 1 times.

The reference is a single-connection run of the same input and seed. The dynamics are
model 0's in every layout, so i-PI's trajectories agree and so do the rows; the rows are
compared as text (byte for byte) where the structures are evaluated one at a time, and
to 1e-6 relative where a batch is split (deepmd evaluates a batch's frames together,
which may move the last bits of the forces; a row prints 6 significant digits, so a
printed value can differ in its last digit: say which).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess

import numpy as np
import pytest
from support import faults
from support.harness import CHECK_OUTPUTS, check_run_against_model, driver_command, run_ipi, wait_until
from support.ipi_runs import BIN_OUTPUT, bead_file, expected_rows
from support.mpi import mpiexec
from support.paths import IPI_INPUTS, tool
from support.sockets import free_port

from ensemble_driver.demo.inputs import SocketSettings, prepare_input
from ensemble_driver.demo.launch import ProcessGroup

NBEADS = 4
STEPS = 6
OUT_FREQ = 2  # rows at steps 0, 2, 4, 6


def run_layout(workdir, address, model_paths, nranks, extra, *, matching=None, batch=None):
    command = mpiexec(
        nranks,
        driver_command(
            model_paths[:3],
            workdir / "init.xyz",
            address,
            "--nbeads",
            str(NBEADS),
            "--out-freq",
            str(OUT_FREQ),
            "-v",
            # every row a candidate: the candidate files then hold every deviation frame
            "--trust-lo",
            "0",
            "--trust-hi",
            "1e9",
            *extra,
        ),
    )
    return run_ipi(
        workdir,
        "pimd.xml",
        address=address,
        steps=STEPS,
        nbeads=NBEADS,
        drivers=[command],
        consolidate=True,
        batch_size=batch,
        matching=matching,
        outputs=(*CHECK_OUTPUTS, BIN_OUTPUT),
    )


def rows_of(workdir) -> list[list[str]]:
    return [bead_file(workdir, bead).read_text().splitlines() for bead in range(NBEADS)]


def candidates_of(workdir) -> tuple[list[str], dict]:
    """The candidate files (extended XYZ, one frame per row) and devi_summary.json."""
    frames = [(workdir / f"candidates{bead + 1}.xyz").read_text() for bead in range(NBEADS)]
    return frames, json.loads((workdir / "devi_summary.json").read_text())


@pytest.fixture(scope="module")
def single(tmp_path_factory, model_paths):
    """The reference: one connection, model 0 on rank 0, models 1 and 2 on ranks 1 and 2."""
    workdir = tmp_path_factory.mktemp("single")
    address = f"scale_single_{workdir.name}"
    run = run_layout(workdir, address, model_paths, 3, [])
    assert run.evaluations_per_rid() == {b: STEPS + 1 for b in range(NBEADS)}
    return run, rows_of(workdir), candidates_of(workdir)


def numbers(lines: list[str]) -> np.ndarray:
    return np.array([[float(x) for x in line.split()] for line in lines[1:]])


@pytest.mark.timeout(400)
@pytest.mark.parametrize("matching", ["auto", "any"])
def test_two_connections_write_the_rows_of_one(tmp_path, address, model_paths, reference, symbols, single, matching):
    run = run_layout(tmp_path, address, model_paths, 4, ["--connections", "2"], matching=matching)
    log = run.driver_logs[0]
    # both connections served beads, and the bead counts are global
    assert "rank 1 on" in log and "(connection 1)" in log, log[-3000:]
    served = [int(n) for n in re.findall(r"connection \d \(rank \d\) ended.* after (\d+) evaluations", log)]
    assert len(served) == 2 and sum(served) == NBEADS * (STEPS + 1), log[-3000:]
    if matching == "auto":  # i-PI hands the beads out to both (a free client gets a bead no one served)
        assert min(served) > 0, served
    assert run.evaluations_per_rid() == {b: STEPS + 1 for b in range(NBEADS)}
    check_run_against_model(run, model_paths[0], reference, steps=STEPS)
    rows = rows_of(tmp_path)
    # the rows are those of each bead's own structures (recomputed from i-PI's positions)
    expected = expected_rows(run, model_paths[:3], reference, symbols, steps=STEPS, out_freq=OUT_FREQ)
    for bead in range(NBEADS):
        assert [int(line.split()[0]) for line in rows[bead][1:]] == [0, 2, 4, 6]
        assert [line + "\n" for line in rows[bead][1:]] == expected[bead], bead
    # and those of the single connection, byte for byte: same seed, same model 0
    assert rows == single[1]
    # the candidates (positions and cells sent to rank 0 with the rows) and the counts too
    frames, summary = candidates_of(tmp_path)
    assert summary["total"]["candidate"] == NBEADS * 4
    assert (frames, summary) == single[2]


@pytest.mark.timeout(400)
def test_batch_split_over_two_model0_ranks(tmp_path, address, model_paths, reference, symbols, single):
    run = run_layout(tmp_path, address, model_paths, 4, ["--model0-ranks", "2"], batch=NBEADS)
    log = run.driver_logs[0]
    # step 0's beads are one structure (evaluated once); every later batch is split 2 + 2
    assert re.search(r"rank 1 \(batch replica of model 0\): 12 structures in 6 slices", log), log[-3000:]
    assert run.evaluations_per_rid() == {b: STEPS + 1 for b in range(NBEADS)}
    check_run_against_model(run, model_paths[0], reference, steps=STEPS)
    rows = rows_of(tmp_path)
    expected = expected_rows(run, model_paths[:3], reference, symbols, steps=STEPS, out_freq=OUT_FREQ)
    for bead in range(NBEADS):
        assert [int(line.split()[0]) for line in rows[bead][1:]] == [0, 2, 4, 6]
        np.testing.assert_allclose(numbers(rows[bead]), numbers(["", *expected[bead]]), rtol=1e-6)
        np.testing.assert_allclose(numbers(rows[bead]), numbers(single[1][bead]), rtol=1e-6)


@pytest.mark.parametrize(
    "nranks, extra, message",
    [
        (2, ["--connections", "2"], "(--connections 2): models 1..2 need ranks of their own; run under mpiexec -n 4"),
        (1, ["--connections", "2"], "--connections 2 needs 2 MPI ranks for model 0, but this job has 1"),
        (3, ["--connections", "2", "--model0-ranks", "3"], "--model0-ranks 3 with --connections 2"),
        (3, ["--model0-ranks", "4"], "--model0-ranks 4 needs 4 MPI ranks for model 0, but this job has 3"),
    ],
    ids=["no-rank-for-the-ensemble", "one-rank", "more-model0-ranks", "too-few-ranks"],
)
def test_contradictory_layouts_are_one_line(address, model_paths, nranks, extra, message):
    command = driver_command(model_paths[:3], IPI_INPUTS / "init.xyz", address, *extra)
    proc = subprocess.run(mpiexec(nranks, command), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
    assert "loaded" not in proc.stderr  # refused before any model loads


def _whole_rows_in_step_order(workdir, nbeads: int) -> list[int]:
    counts = []
    for bead in range(nbeads):
        table = faults.rows(workdir / f"model_devi{bead + 1}.out")  # fails on a broken row
        steps = [int(r[0]) for r in table]
        assert steps == list(range(0, 2 * len(steps), 2)), (bead, steps)  # no gap, no repeat
        counts.append(len(steps))
    return counts


@pytest.mark.timeout(400)
@pytest.mark.parametrize("fault", ["SIGTERM", "server-killed"])
def test_two_connections_end_together(tmp_path, address, model_paths, fault):
    """SIGTERM to mpiexec, or the server killed mid-run: every rank of a 2-connection job
    ends within 10 s, every row is whole and each bead's rows are in step order."""
    faults.ipi_input(tmp_path, address, steps=100000, nbeads=NBEADS)
    command = faults.mpi_driver(
        4, model_paths[:3], "init.xyz", address, "--nbeads", str(NBEADS), "--out-freq", "2", "--connections", "2"
    )
    first = tmp_path / "model_devi1.out"
    with ProcessGroup(tmp_path / "logs") as group:
        ipi = group.start("i-pi", [tool("i-pi"), "input.xml"], cwd=tmp_path)
        driver = group.start("driver", command, cwd=tmp_path)
        wait_until(lambda: first.exists() and first.read_text().count("\n") >= 4, 300, "three rows")
        if fault == "SIGTERM":
            os.kill(driver.popen.pid, signal.SIGTERM)
        else:
            ipi.popen.send_signal(signal.SIGKILL)
        status = driver.popen.wait(timeout=10)
        errors = [line for line in driver.log_path.read_text().splitlines() if "error:" in line]
        if fault == "SIGTERM":
            assert status == 128 + signal.SIGTERM, driver.tail()
            assert errors == ["ensemble-driver: error: stopped by SIGTERM"], driver.tail()
        else:  # the end of the stream (0), or a reply that could not be delivered (4)
            assert status in (0, 4), driver.tail()
            assert len(errors) == (1 if status else 0), driver.tail()
    faults.assert_all_gone(address, 10)
    counts = _whole_rows_in_step_order(tmp_path, NBEADS)
    assert min(counts) >= 2 and max(counts) - min(counts) <= 1, counts


@pytest.mark.timeout(400)
def test_one_connection_lost_ends_the_job(tmp_path, address, model_paths):
    """i-PI over INET; the socket of connection 1 destroyed by the kernel (ss -K) while
    connection 0 lives: the job ends with status 4 and one line naming connection 1,
    every rank gone within 10 s, the rows whole and in step order. (i-PI itself never
    closes one client alone without EXIT; a dead link or host does.)"""
    port = free_port()
    prepare_input(
        IPI_INPUTS / "pimd.xml",
        tmp_path / "input.xml",
        socket=SocketSettings(address="127.0.0.1", mode="inet", port=port),
        steps=100000,
        nbeads=NBEADS,
        prefix="sim",
    )
    command = faults.mpi_driver(
        4, model_paths[:3], "init.xyz", address, "--nbeads", str(NBEADS), "--out-freq", "2", "--connections", "2"
    )
    command[command.index("--unix")] = "--port=" + str(port)  # INET, to 127.0.0.1 given below
    command[command.index("--address") + 1] = "127.0.0.1"
    command.append(f"--sockets-prefix=/tmp/{address}-")  # only to name the processes after the test
    first = tmp_path / "model_devi1.out"
    with ProcessGroup(tmp_path / "logs") as group:
        group.start("i-pi", [tool("i-pi"), "input.xml"], cwd=tmp_path)
        driver = group.start("driver", command, cwd=tmp_path)
        wait_until(lambda: first.exists() and first.read_text().count("\n") >= 4, 300, "three rows")
        rank1 = faults.rank_pid(address, 1)
        assert rank1 is not None
        local = _local_port_of(rank1, port)
        killed = subprocess.run(
            ["ss", "-K", "src", f"127.0.0.1:{local}", "dst", f"127.0.0.1:{port}"], capture_output=True, text=True
        )
        assert killed.returncode == 0, killed.stderr
        status = driver.popen.wait(timeout=10)
        errors = [line for line in driver.log_path.read_text().splitlines() if "error:" in line]
        assert status == 4, driver.tail()
        assert len(errors) == 1 and errors[0].startswith("ensemble-driver: error: connection 1 (rank 1): "), errors
    faults.assert_all_gone(address, 10)
    counts = _whole_rows_in_step_order(tmp_path, NBEADS)
    assert min(counts) >= 2 and max(counts) - min(counts) <= 1, counts


def _local_port_of(pid: int, remote_port: int) -> int:
    """The local port of ``pid``'s TCP connection to ``remote_port`` (from ss -tnp)."""
    out = subprocess.run(["ss", "-tnpH", "dst", f"127.0.0.1:{remote_port}"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if f"pid={pid}," in line:
            return int(line.split()[3].rsplit(":", 1)[1])
    raise AssertionError(f"no connection of pid {pid} to port {remote_port} in:\n{out}")
