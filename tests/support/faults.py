"""A run made to fail, watched from outside: its processes (found by the socket name in
their command lines), a rank's process, the rows of its deviation files (whole, or the
test fails), and the run itself: the driver under mpiexec as ``python -m ensemble_driver``
and the shipped PIMD input as users get it (tests/peers/test_faults.py, test_silence,
test_scale, test_monitoring, test_host_faults)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ensemble_driver.demo.inputs import SocketSettings, prepare_input
from support.harness import driver_command, wait_until
from support.paths import IPI_INPUTS, tool


def processes_with(marker: str) -> list[int]:
    """Live processes whose command line contains ``marker`` (the test's socket name)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = (entry / "stat").read_text().split()[2]
            except OSError:
                continue
            if marker in cmdline and state != "Z":
                found.append(int(entry.name))
    return found


def rank_pid(marker: str, rank: int) -> int | None:
    for pid in processes_with(marker):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"PMI_RANK={rank}".encode() in environ and b"ensemble_driver" in Path(f"/proc/{pid}/cmdline").read_bytes():
            return pid
    return None


def rows(path: Path) -> list[list[float]]:
    """The rows of a deviation file; fails unless every line is whole."""
    lines = path.read_text().split("\n")
    assert lines[-1] == "", f"{path}: the last line is not terminated"
    assert lines[0].startswith("#       step")
    table = []
    for line in lines[1:-1]:
        fields = line.split()
        assert len(fields) == 7, f"{path}: broken row {line!r}"
        table.append([float(x) for x in fields])
    return table


def mpi_driver(nranks: int, models, template, address: str, *extra: str) -> list[str]:
    # `python -m ensemble_driver` so that rank processes are easy to tell from mpiexec
    command = driver_command(models, template, address, *extra)
    command[:2] = [sys.executable, "-m", "ensemble_driver", "run"]
    return [tool("mpiexec"), "-n", str(nranks), *command]


def ipi_input(tmp_path: Path, address: str, steps: int, nbeads: int) -> None:
    # the shipped input: consolidate_messages=false and a <timeout>, as users get it
    prepare_input(
        IPI_INPUTS / "pimd.xml",
        tmp_path / "input.xml",
        socket=SocketSettings(address=address),
        steps=steps,
        nbeads=nbeads,
        prefix="sim",
    )


def assert_all_gone(marker: str, timeout: float) -> None:
    wait_until(lambda: not processes_with(marker), timeout, f"every process of {marker} to end")
