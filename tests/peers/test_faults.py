"""Faults, under real mpiexec with 3 ranks where the fault is not per-process: the server
ending, the server killed (while the driver waits and while it computes), SIGTERM and
SIGINT, a follower killed, a model returning NaN. Each has a deadline; after each, no
process of the run may be left and every row on disk must be whole.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
from support.faults import assert_all_gone, ipi_input, mpi_driver, rank_pid, rows
from support.harness import driver_command, wait_until
from support.paths import IPI_INPUTS, SUPPORT, tool
from support.tap import KillAtPosdata

from ensemble_driver.demo.inputs import SocketSettings, prepare_input
from ensemble_driver.demo.launch import ProcessGroup


def test_exit_ends_every_rank(tmp_path, address, model_paths):
    ipi_input(tmp_path, address, steps=30, nbeads=2)
    with ProcessGroup(tmp_path / "logs") as group:
        ipi = group.start("i-pi", [tool("i-pi"), "input.xml"], cwd=tmp_path)
        driver = group.start(
            "driver", mpi_driver(3, model_paths, "init.xyz", address, "--nbeads", "2", "--out-freq", "5"), cwd=tmp_path
        )
        # i-PI sends EXIT and then writes its final state, so either may end first; a
        # driver that fails ends the wait at once
        wait_until(lambda: ipi.popen.poll() is not None or driver.popen.poll() not in (None, 0), 300, "i-PI to finish")
        assert ipi.popen.returncode == 0, ipi.tail() + driver.tail()
        # the leader first writes the rows still in flight (rank 1 holds two models); the
        # models are warmed up before the run, so the followers are not far behind (before
        # that, their slow first TorchScript calls put them 3 s behind in a CI run)
        assert driver.popen.wait(timeout=5) == 0, driver.tail()
    for bead in (1, 2):
        assert [int(r[0]) for r in rows(tmp_path / f"model_devi{bead}.out")] == [0, 5, 10, 15, 20, 25, 30]
    assert_all_gone(address, 5)


def big_structure(path: Path, *, overlap: bool = False) -> None:
    """2048 atoms (a model evaluation takes a good fraction of a second), or a small
    cell with two atoms on the same site (a real model returns NaN for it)."""
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.87, cubic=True).repeat((2, 2, 2) if overlap else (8, 8, 8))
    atoms.symbols[::2] = "Au"
    if overlap:
        atoms.positions[1] = atoms.positions[0]
    atoms.write(path)


@pytest.mark.parametrize("moment", ["waiting", "computing"])
def test_server_killed(tmp_path, address, model_paths, moment):
    """SIGKILL to the server while the driver waits for its next message (a clean end of
    the stream: status 0) and while the driver computes (its reply cannot be delivered:
    status 4): every rank ends within 10 s, no process is left, every row is whole."""
    structure = tmp_path / "big.extxyz"
    big_structure(structure)
    ncalc = 2 if moment == "waiting" else 3
    with ProcessGroup(tmp_path / "logs") as group:
        server = group.start(
            "server", [sys.executable, str(SUPPORT / "ase_server.py"), str(structure), address, str(ncalc)]
        )
        # the row of the step being computed must be written within the 5 s the leader
        # waits for rows in flight: with two models on one rank (3 ranks) it took longer
        # on a slow day (two 2048-atom evaluations): one model per rank
        driver = group.start(
            "driver",
            mpi_driver(
                4,
                model_paths,
                structure,
                address,
                "--out-freq",
                "1",
                "--out-file",
                str(tmp_path / "model_devi.out"),
                "-v",
            ),
        )
        if moment == "waiting":
            wait_until(lambda: "idle" in server.log_path.read_text(), 300, "the server to be idle")
        else:
            wait_until(
                lambda: "structure received: step 1 " in driver.log_path.read_text(),
                300,
                "the driver to receive its second structure",
            )
        server.popen.send_signal(signal.SIGKILL)
        driver.popen.wait(timeout=10)
        log = driver.log_path.read_text()
        if moment == "waiting":
            assert driver.popen.returncode == 0, driver.tail()
        else:
            assert driver.popen.returncode == 4, driver.tail()
            errors = [line for line in log.splitlines() if "error:" in line]
            # ASE's order: POSDATA, then STATUS; the driver answers HAVEDATA once it has
            # computed, and that is the first thing that cannot be delivered
            assert errors == [
                "ensemble-driver: error: the server closed the connection while the driver sent "
                "its status (HAVEDATA) (Broken pipe)"
            ], driver.tail()
    assert_all_gone(address, 10)
    table = rows(tmp_path / "model_devi.out")
    assert [int(r[0]) for r in table][: ncalc - 1] == list(range(ncalc - 1))


@pytest.mark.parametrize("signame, nranks", [("SIGTERM", 3), ("SIGINT", 1)])
def test_signal_stops_cleanly(tmp_path, address, model_paths, signame, nranks):
    """SIGTERM to mpiexec (which passes it to every rank) or SIGINT to a lone driver: the
    request in hand is finished, files are whole, every rank exits promptly, the status
    is 128 + the signal number and one line says why."""
    sig = getattr(signal, signame)
    ipi_input(tmp_path, address, steps=100000, nbeads=2)
    devi = tmp_path / "model_devi1.out"
    if nranks > 1:
        command = mpi_driver(nranks, model_paths, "init.xyz", address, "--nbeads", "2", "--out-freq", "2")
    else:
        command = driver_command(model_paths[:2], "init.xyz", address, "--nbeads", "2", "--out-freq", "2")
    with ProcessGroup(tmp_path / "logs") as group:
        group.start("i-pi", [tool("i-pi"), "input.xml"], cwd=tmp_path)
        driver = group.start("driver", command, cwd=tmp_path)
        wait_until(lambda: devi.exists() and devi.read_text().count("\n") >= 4, 300, "three deviation rows")
        os.kill(driver.popen.pid, sig)
        assert driver.popen.wait(timeout=10) == 128 + sig, driver.tail()
        errors = [line for line in driver.log_path.read_text().splitlines() if "error:" in line]
        assert errors == [f"ensemble-driver: error: stopped by {signame}"], driver.tail()
    assert_all_gone(address, 10)
    counts = [len(rows(tmp_path / f"model_devi{b}.out")) for b in (1, 2)]  # every row whole
    # bead 1 had 3 rows when the signal came; bead 2's next step may not have come yet
    assert counts[0] >= 3 and counts[0] - 1 <= counts[1] <= counts[0]


def test_follower_killed(tmp_path, address, model_paths):
    """kill -9 of rank 2 mid-run: the job ends within 10 s instead of waiting forever."""
    ipi_input(tmp_path, address, steps=100000, nbeads=2)
    with ProcessGroup(tmp_path / "logs") as group:
        group.start("i-pi", [tool("i-pi"), "input.xml"], cwd=tmp_path)
        driver = group.start(
            "driver", mpi_driver(3, model_paths, "init.xyz", address, "--nbeads", "2", "--out-freq", "1"), cwd=tmp_path
        )
        devi = tmp_path / "model_devi1.out"
        wait_until(lambda: devi.exists() and devi.read_text().count("\n") >= 3, 300, "two deviation rows")
        victim = rank_pid(address, 2)
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        assert driver.popen.wait(timeout=10) != 0
    assert_all_gone(address, 10)
    for bead in (1, 2):
        assert len(rows(tmp_path / f"model_devi{bead}.out")) >= 1


def test_nan_is_never_sent(tmp_path, address, model_paths):
    """Two atoms on one site: a real model returns NaN. The driver sends nothing (ASE's
    server asserts every number it receives is finite) and says which step, bead, model."""
    structure = tmp_path / "overlap.extxyz"
    big_structure(structure, overlap=True)
    with ProcessGroup(tmp_path / "logs") as group:
        server = group.start(
            "server",
            [sys.executable, str(SUPPORT / "ase_server.py"), str(structure), address, "1"],
            env={**os.environ, "ASE_SERVER_RATTLE": "0"},
        )
        driver = group.start("driver", driver_command(model_paths[:1], structure, address))
        assert driver.popen.wait(timeout=120) == 5, driver.tail()
        assert server.popen.wait(timeout=30) == 0, server.tail()
    assert "client closed the connection" in server.log_path.read_text()
    errors = [line for line in driver.log_path.read_text().splitlines() if "error:" in line]
    assert errors == [
        f"ensemble-driver: error: model 0 ({model_paths[0]}) returned non-finite energy, forces or "
        "virial at step 0 of bead 0"
    ], driver.tail()


def test_nan_in_rows_is_impossible():
    """The guard the NaN test relies on, for every model of the ensemble."""
    from ensemble_driver.errors import ModelError
    from ensemble_driver.models.local import LocalModel
    from ensemble_driver.models.results import Evaluation

    class Bad:
        path = "bad.pth"

        def evaluate(self, positions, cell, atom_types):
            return Evaluation(1.0, np.full_like(positions, np.inf), np.eye(3))

    member = LocalModel(3, Bad(), np.zeros(2, np.int32))
    with pytest.raises(ModelError, match=r"model 3 \(bad.pth\) returned non-finite .* at step 7 of bead 1"):
        member.evaluate(np.zeros((2, 3)), None, rid=1, step=7)


def test_ipi_with_shipped_settings_survives_a_lost_driver(tmp_path, address, model_paths):
    """The shipped inputs' consolidate_messages=false and <timeout>: a driver killed -9
    with a request in flight, and a new one started, and i-PI finishes the run. The kill
    comes as i-PI sends the 17th POSDATA (tests/support/tap.py): at a random time it could land in
    the window where i-PI 3.3 loses the request itself (docs/failures.md)."""
    prepare_input(
        IPI_INPUTS / "pimd.xml",
        tmp_path / "input.xml",
        socket=SocketSettings(address=address, timeout=3),
        steps=40,
        nbeads=2,
        prefix="sim",
    )
    props = tmp_path / "sim.out"
    with ProcessGroup(tmp_path / "logs") as group:
        ipi = group.start("i-pi", [tool("i-pi"), "input.xml"], cwd=tmp_path)
        wait_until(lambda: Path(f"/tmp/ipi_{address}").exists(), 120, "i-PI to open its socket")

        def kill_first():
            first.popen.send_signal(signal.SIGKILL)
            first.popen.wait(timeout=10)

        tap = KillAtPosdata(address, f"{address}-tap", nth=17, kill=kill_first)
        try:
            first = group.start("driver1", driver_command(model_paths[:1], "init.xyz", f"{address}-tap"), cwd=tmp_path)
            first.ok_status = frozenset({-signal.SIGKILL})
            wait_until(lambda: tap.fired.is_set() or first.popen.poll() is not None, 300, "the 17th POSDATA")
            assert tap.fired.is_set(), first.tail()
            tap.thread.join(timeout=30)
            assert first.popen.poll() == -signal.SIGKILL
        finally:
            tap.close()
        second = group.start("driver2", driver_command(model_paths[:1], "init.xyz", address), cwd=tmp_path)
        wait_until(lambda: ipi.popen.poll() is not None or second.popen.poll() is not None, 300, "i-PI to finish")
        assert ipi.popen.wait(timeout=60) == 0, ipi.tail()
    assert "died or got unresponsive" in ipi.log_path.read_text(errors="replace")
    steps = [int(float(line.split()[0])) for line in props.read_text().splitlines() if not line.startswith("#")]
    assert steps[-1] == 40


def test_signal_while_computing_answers_first(tmp_path, address, model_paths):
    """SIGTERM while the driver evaluates a 2048-atom structure: the server still gets a
    whole, valid answer for it (ASE's server checks every number), then the driver stops."""
    structure = tmp_path / "big.extxyz"
    big_structure(structure)
    with ProcessGroup(tmp_path / "logs") as group:
        server = group.start("server", [sys.executable, str(SUPPORT / "ase_server.py"), str(structure), address, "3"])
        driver = group.start("driver", driver_command(model_paths[:1], structure, address, "-v"))
        wait_until(
            lambda: "structure received: step 1 " in driver.log_path.read_text(),
            300,
            "the driver to receive its second structure",
        )
        driver.popen.send_signal(signal.SIGTERM)
        assert driver.popen.wait(timeout=30) == 128 + signal.SIGTERM, driver.tail()
        assert server.popen.wait(timeout=30) == 0, server.tail()
    assert "done 1" in server.log_path.read_text()  # the answer in hand was delivered whole
    log = driver.log_path.read_text()
    # the model was warmed up on the template before the driver connected
    assert -1 < log.find("model 0 warmed up on the template") < log.find("connected to"), log[:3000]
    errors = [line for line in log.splitlines() if "error:" in line]
    assert errors == ["ensemble-driver: error: stopped by SIGTERM"]
