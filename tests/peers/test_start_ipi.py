"""``--start-ipi``: one command runs i-PI and the ensemble, and the same command continues
the run after any stop. Each run is real i-PI 3.3 started by rank 0 of a real ``mpiexec -n
2``; after each, no process of the run (i-PI, mpiexec, a rank) is left, found by its working
directory. The pure parts (which checkpoint is newest, the status line, a socket file's
staleness) are tested without a process in tests/unit/run/test_start_ipi_parts.py."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.harness import wait_until
from support.paths import IPI_INPUTS, SUPPORT, tool
from support.waiting import poll_until

from ensemble_driver.run.checkpoint import read_checkpoint
from ensemble_driver.run.ipi_process import EXIT_IPI_FAILED, EXIT_RESTARTABLE, probe_unix_socket

OUT_FREQ = 2
STEPS = 100  # long enough that a signal sent at step 9 lands well before the end


def input_xml(address: str, steps: int, *, prefix: str = "sim") -> str:
    """2 beads; RESTART rolled back to every 4th step, a checkpoint every 2; i-PI's binary
    positions of every bead and its step, every step."""
    return f"""<simulation verbosity='quiet' safe_stride='4'>
  <output prefix='{prefix}'>
    <properties stride='1' flush='1'> [ step ] </properties>
    <trajectory filename='bin' stride='1' format='bin'> positions </trajectory>
    <checkpoint stride='2'/>
  </output>
  <total_steps> {steps} </total_steps>
  <prng><seed> 31415 </seed></prng>
  <ffsocket name='dp' mode='unix'>
    <address> {address} </address>
    <timeout> 600 </timeout>
  </ffsocket>
  <system>
    <initialize nbeads='2'>
      <file mode='xyz' units='angstrom'> init.xyz </file>
      <velocities mode='thermal' units='kelvin'> 600 </velocities>
    </initialize>
    <forces> <force forcefield='dp'/> </forces>
    <ensemble><temperature units='kelvin'> 600 </temperature></ensemble>
    <motion mode='dynamics'>
      <dynamics mode='nvt'>
        <timestep units='femtosecond'> 2.0 </timestep>
        <thermostat mode='pile_l'><tau units='femtosecond'> 100 </tau></thermostat>
      </dynamics>
    </motion>
  </system>
</simulation>
"""


def prepare(workdir: Path, address: str, steps: int = STEPS, xml: str | None = None) -> None:
    """An empty directory with only i-PI's input and its structure (the models stay where
    they are)."""
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copy(IPI_INPUTS / "init.xyz", workdir / "init.xyz")
    (workdir / "input.xml").write_text(xml if xml is not None else input_xml(address, steps))


def command(model_paths, *extra: str, program: list[str] | None = None) -> list[str]:
    """The one command: ``mpiexec -n 2 ensemble-driver run ... --start-ipi``."""
    program = program or [sys.executable, "-m", "ensemble_driver"]
    return [
        tool("mpiexec"),
        "-n",
        "2",
        *program,
        "run",
        "--models",
        *map(str, model_paths[:2]),
        "--ipi-input",
        "input.xml",
        "--start-ipi",
        "--out-freq",
        str(OUT_FREQ),
        "--connect-timeout",
        "120",
        *extra,
    ]


def processes_in(directory: Path) -> list[str]:
    """Live processes working in ``directory`` (i-PI, mpiexec, the ranks), as 'pid cmdline'."""
    found = []
    target = str(directory.resolve())
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if (cwd == target or cwd.startswith(target + "/")) and state != "Z":
            found.append(f"{entry.name} {cmdline}")
    return found


def assert_none_left(directory: Path, timeout: float = 30.0) -> None:
    if not poll_until(lambda: not processes_in(directory), timeout, 0.1):
        left = processes_in(directory)
        for line in left:  # leave nothing behind for the next test
            try:
                os.kill(int(line.split()[0]), signal.SIGKILL)
            except ProcessLookupError:
                pass
        pytest.fail(f"processes of the run left after {timeout} s: {left}")


class Job:
    """The command as a batch job runs it: in the background, its output in a file."""

    def __init__(self, workdir: Path, argv: list[str], name: str):
        self.workdir = workdir
        self.log_path = workdir / f"{name}.log"
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(
                argv, cwd=workdir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            assert_none_left(self.workdir, 10)
            pytest.fail(f"the job did not end within {timeout} s:\n{self.log()[-4000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def errors(self) -> list[str]:
        return [line for line in self.log().splitlines() if line.startswith("ensemble-driver: error:")]


def run_job(workdir: Path, argv: list[str], name: str, timeout: float = 400) -> Job:
    job = Job(workdir, argv, name)
    job.wait(timeout)
    assert_none_left(workdir)
    return job


def last_step(path: Path) -> int:
    if not path.exists():
        return -1
    rows = [line.split() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return int(float(rows[-1][0])) if rows else -1


def written_rows(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if not line.startswith("#")]


def snapshot(directory: Path) -> dict[str, tuple[int, bytes]]:
    return {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in directory.iterdir() if p.is_file()}


def assert_same_rows(mine: Path, theirs: Path, steps: int) -> None:
    """Every step once in every file, equal to the uninterrupted run's rows: i-PI's RESTART
    keeps ~9 digits of the positions, grown by the dynamics over the steps after it."""
    for bead in (1, 2):
        a, b = written_rows(mine / f"model_devi{bead}.out"), written_rows(theirs / f"model_devi{bead}.out")
        assert [int(r.split()[0]) for r in a] == list(range(0, steps + 1, OUT_FREQ)), f"bead {bead}"
        np.testing.assert_allclose(
            np.array([r.split() for r in a], float), np.array([r.split() for r in b], float), rtol=1e-5, atol=1e-8
        )


@pytest.fixture(scope="module")
def whole(tmp_path_factory, model_paths) -> Path:
    """The uninterrupted run, by the one command, that the stopped ones are compared with."""
    workdir = tmp_path_factory.mktemp("whole")
    address = f"edtwhole{os.getpid()}"
    prepare(workdir, address)
    job = run_job(workdir, command(model_paths), "job")
    assert job.popen.returncode == 0, job.log()[-4000:]
    Path("/tmp/ipi_" + address).unlink(missing_ok=True)
    return workdir


@pytest.mark.timeout(900)
def test_one_command_runs_then_leaves_a_finished_run_alone(tmp_path, address, model_paths, reference, symbols):
    """From an empty directory with i-PI's input and structure: i-PI started, its log
    named, status lines with the step and the deviation, every row equal to deepmd-kit's
    on i-PI's own positions; then the same command says the run is complete, exits 0 and
    writes nothing."""
    from support.ipi_inputs import STEPS as steps
    from support.ipi_inputs import bead_frames, expected_rows

    prepare(tmp_path, address, steps)
    job = run_job(tmp_path, command(model_paths, "--status-every", "0.01", "-v"), "job")
    assert job.popen.returncode == 0, job.log()[-4000:]
    log = job.log()
    assert f"its output: {tmp_path / 'ipi.log'}" in log
    assert "i-PI finished the run: i-PI's RESTART is at step 6 of 6" in log
    status = [line for line in log.splitlines() if "status: step" in line]
    assert status, log[-3000:]
    assert any(
        re.search(r"status: step \d+ of 6 \(\d+%\).*max_devi_f since the last line: [0-9.]+ eV/A", s) for s in status
    )
    for bead, beadframes in enumerate(bead_frames(tmp_path, 2)):  # i-PI's binary positions
        assert written_rows(tmp_path / f"model_devi{bead + 1}.out") == expected_rows(
            beadframes, model_paths[:2], reference, symbols
        ), f"bead {bead}"
    before = snapshot(tmp_path)
    again = run_job(tmp_path, command(model_paths), "again")
    assert again.popen.returncode == 0, again.log()[-4000:]
    assert "the run is complete: i-PI's RESTART is at step 6 of 6; nothing to do" in again.log()
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k != "again.log"} == before


def start_and_stop(workdir: Path, model_paths, sig: int) -> Job:
    """The job started, and ``sig`` sent to its mpiexec once i-PI has written step 9."""
    job = Job(workdir, command(model_paths), "job1")
    wait_until(lambda: last_step(workdir / "sim.out") >= 9 or job.popen.poll() is not None, 400, "i-PI's step 9")
    assert job.popen.poll() is None, job.log()[-4000:]
    job.popen.send_signal(sig)
    return job


@pytest.mark.timeout(900)
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGUSR1"])
def test_sigterm_then_the_same_command(tmp_path, address, model_paths, whole, signame):
    """SIGTERM (Slurm's time limit) or SIGUSR1 (its early warning, --signal) to the job's
    mpiexec mid-run: i-PI's RESTART written, the job's status 75, nothing left; the same
    command then completes the run, and every file equals the uninterrupted run's, each
    step once."""
    prepare(tmp_path, address)
    job = start_and_stop(tmp_path, model_paths, getattr(signal, signame))
    assert job.wait(120) == EXIT_RESTARTABLE, job.log()[-4000:]
    assert_none_left(tmp_path)
    errors = job.errors()
    assert len(errors) == 1 and f"stopped by {signame}; i-PI's RESTART is at step" in errors[0], job.log()[-3000:]
    assert "run the same command to continue" in errors[0]
    stopped_at = read_checkpoint(tmp_path / "RESTART").step
    assert 4 <= stopped_at < STEPS
    again = run_job(tmp_path, command(model_paths), "job2")
    assert again.popen.returncode == 0, again.log()[-4000:]
    assert "i-PI continues the run from" in again.log()
    assert_same_rows(tmp_path, whole, STEPS)


@pytest.mark.timeout(900)
def test_sigkill_then_the_same_command(tmp_path, address, model_paths, whole):
    """SIGKILL to the job's mpiexec mid-run (a lost node, a hard limit): within 30 s no
    i-PI of the run is left (the parent-death signal); the same command finds the newest
    checkpoint and completes the run exactly."""
    prepare(tmp_path, address)
    job = start_and_stop(tmp_path, model_paths, signal.SIGKILL)
    assert job.wait(30) == -signal.SIGKILL
    assert_none_left(tmp_path, 30)
    again = run_job(tmp_path, command(model_paths), "job2")
    assert again.popen.returncode == 0, again.log()[-4000:]
    assert_same_rows(tmp_path, whole, STEPS)


@pytest.mark.timeout(900)
def test_a_model_failing_mid_run_leaves_a_restart(tmp_path, address, model_paths):
    """Model 1 returns NaN from its 17th evaluation on (rank 1; 4 warm it up, then 2 per
    deviation step): one line naming it, status 5, i-PI ended by its soft exit with a
    RESTART past step 0, nothing left."""
    prepare(tmp_path, address)
    program = [sys.executable, str(SUPPORT / "failing_model.py")]
    env_command = ["env", f"FAIL_MODEL={model_paths[1]}", "FAIL_AFTER=16", *command(model_paths, program=program)]
    job = run_job(tmp_path, env_command, "job")
    assert job.popen.returncode == 5, job.log()[-4000:]
    errors = job.errors()
    assert len(errors) == 1 and f"model 1 ({model_paths[1]}) returned non-finite" in errors[0], job.log()[-3000:]
    chk = read_checkpoint(tmp_path / "RESTART")
    assert 0 < chk.step < STEPS
    assert "i-PI ended by its soft exit" in job.log()


@pytest.mark.timeout(300)
def test_inputs_ipi_cannot_use(tmp_path, address, model_paths):
    """An input i-PI cannot read: one line with i-PI's message, status 6, before any
    process starts. One it reads but cannot run (its output directory is missing): i-PI
    ends, one line quoting i-PI's own error, status 6. Nothing left either way."""
    bad = tmp_path / "bad"
    prepare(bad, address, xml=input_xml(address, 6).replace("<total_steps> 6 </total_steps>", "<total_steps> x"))
    job = run_job(bad, command(model_paths), "job")
    assert job.popen.returncode == EXIT_IPI_FAILED, job.log()[-4000:]
    errors = job.errors()
    assert len(errors) == 1 and "--ipi-input input.xml: i-PI cannot read it" in errors[0], job.log()[-3000:]
    assert not (bad / "ipi.log").exists()

    missing = tmp_path / "missing"
    prepare(missing, address, xml=input_xml(address, 6, prefix="nowhere/sim"))
    job = run_job(missing, command(model_paths), "job")
    assert job.popen.returncode == EXIT_IPI_FAILED, job.log()[-4000:]
    errors = job.errors()
    assert len(errors) == 1 and "i-PI ended with status" in errors[0], job.log()[-3000:]
    assert "No such file or directory" in errors[0] and "nowhere/sim" in errors[0], errors


@pytest.mark.timeout(300)
def test_a_stale_socket_file_is_removed_and_a_live_one_refused(tmp_path, address, model_paths):
    """The socket file a killed i-PI leaves (no listener) is removed and the run goes on;
    one with a listener is another run's: one line, status 2, no i-PI started."""
    path = f"/tmp/ipi_{address}"
    live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    live.bind(path)
    live.listen(1)
    try:
        prepare(tmp_path, address, 4)
        job = run_job(tmp_path, command(model_paths), "live")
        assert job.popen.returncode == 2, job.log()[-4000:]
        assert len(job.errors()) == 1 and f"a server already listens on {path}" in job.errors()[0]
        assert not (tmp_path / "ipi.log").exists()
    finally:
        live.close()  # the file stays: stale
    assert probe_unix_socket(path) == "stale"
    job = run_job(tmp_path, command(model_paths), "stale")
    assert job.popen.returncode == 0, job.log()[-4000:]
    assert f"removed the stale socket file {path}" in job.log()
