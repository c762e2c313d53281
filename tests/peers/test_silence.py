"""Silence: a server or a rank that stops answering without closing anything (a stopped
process is as silent as a lost host or a dropped link). With --server-timeout T the job
ends within T plus the usual deadlines, status 4, one line saying how long it waited,
the rows whole and every rank gone. Real i-PI and real mpiexec; the silence is SIGSTOP.
"""

from __future__ import annotations

import os
import signal
import socket

import pytest
from support import faults
from support.harness import wait_until
from support.paths import IPI_INPUTS, tool
from support.sockets import free_port

from ensemble_driver.demo.inputs import SocketSettings, prepare_input
from ensemble_driver.demo.launch import ProcessGroup

TIMEOUT = 3  # --server-timeout for these tests, seconds


def _start(tmp_path, address, model_paths, group, mode: str):
    """i-PI (the shipped PIMD input, 2 beads) and a 3-rank driver with --server-timeout."""
    settings = SocketSettings(address=address)
    extra = ["--nbeads", "2", "--out-freq", "2", "--server-timeout", str(TIMEOUT)]
    if mode == "inet":
        port = free_port()
        settings = SocketSettings(address="127.0.0.1", mode="inet", port=port)
    prepare_input(
        IPI_INPUTS / "pimd.xml", tmp_path / "input.xml", socket=settings, steps=100000, nbeads=2, prefix="sim"
    )
    command = faults.mpi_driver(3, model_paths[:3], "init.xyz", address, *extra)
    if mode == "inet":
        command[command.index("--unix")] = f"--port={port}"
        command[command.index("--address") + 1] = "127.0.0.1"
        command.append(f"--sockets-prefix=/tmp/{address}-")  # names the processes after the test
    ipi = group.start("i-pi", [tool("i-pi"), "input.xml"], cwd=tmp_path)
    driver = group.start("driver", command, cwd=tmp_path)
    first = tmp_path / "model_devi1.out"
    wait_until(lambda: first.exists() and first.read_text().count("\n") >= 4, 300, "three rows")
    return ipi, driver


def _ends_with(driver, start: str) -> None:
    status = driver.popen.wait(timeout=TIMEOUT + 15)
    errors = [line for line in driver.log_path.read_text().splitlines() if "error:" in line]
    assert status == 4, driver.tail()
    assert len(errors) == 1 and errors[0].startswith("ensemble-driver: error: " + start), driver.tail()


@pytest.mark.timeout(400)
@pytest.mark.parametrize("mode", ["unix", "inet"])
def test_stopped_server_ends_the_run(tmp_path, address, model_paths, mode):
    with ProcessGroup(tmp_path / "logs") as group:
        ipi, driver = _start(tmp_path, address, model_paths, group, mode)
        os.kill(ipi.popen.pid, signal.SIGSTOP)
        try:
            _ends_with(driver, f"the server sent nothing for {TIMEOUT} s (--server-timeout {TIMEOUT}): ")
        finally:
            ipi.popen.kill()
    faults.assert_all_gone(address, 10)
    counts = [len(faults.rows(tmp_path / f"model_devi{b}.out")) for b in (1, 2)]  # every row whole
    assert counts[0] >= 3 and counts[0] - 1 <= counts[1] <= counts[0]


@pytest.mark.timeout(400)
def test_silent_rank_is_named(tmp_path, address, model_paths):
    """Rank 2 (model 2) stopped: rank 0 goes on answering i-PI until the oldest deviation
    job has waited --server-timeout for rank 2, then ends the job naming rank 2 and its host."""
    with ProcessGroup(tmp_path / "logs") as group:
        ipi, driver = _start(tmp_path, address, model_paths, group, "unix")
        victim = faults.rank_pid(address, 2)
        assert victim is not None
        os.kill(victim, signal.SIGSTOP)
        try:
            _ends_with(driver, f"rank 2 on {socket.gethostname()} has not answered for ")
        finally:
            if victim in faults.processes_with(address):
                os.kill(victim, signal.SIGKILL)  # stopped: only SIGKILL ends it
    faults.assert_all_gone(address, 10)
    for bead in (1, 2):
        faults.rows(tmp_path / f"model_devi{bead}.out")  # every row whole
