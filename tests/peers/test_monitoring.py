"""Monitoring that follows the model: --out-freq-near (denser rows while a bead's latest
max_devi_f is at or above --trust-lo) and the stop rule (--stop-after-failed N with
--exit-file: i-PI's soft exit after N failed rows), under real i-PI and mpiexec."""

from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pytest
from support import faults
from support.harness import driver_command, run_ipi
from support.mpi import mpiexec
from support.paths import IPI_INPUTS, tool

from ensemble_driver.demo.launch import ProcessGroup

NBEADS = 4
STEPS = 24
OUT_FREQ = 6
NEAR = 2
# this run's max_devi_f grows from 0.049 to 0.06 over 24 steps (same seed every run):
# every bead starts sparse and turns dense part way
TRUST_LO = 0.0525


def next_row_step(step: int, dense: bool) -> int:
    regular = (step // OUT_FREQ + 1) * OUT_FREQ
    return min(regular, (step // NEAR + 1) * NEAR) if dense else regular


@pytest.mark.timeout(400)
def test_rows_are_denser_exactly_while_at_or_above_trust_lo(tmp_path, address, model_paths):
    command = mpiexec(
        3,
        driver_command(
            model_paths[:3],
            tmp_path / "init.xyz",
            address,
            "--nbeads",
            str(NBEADS),
            "--out-freq",
            str(OUT_FREQ),
            "--out-freq-near",
            str(NEAR),
            "--trust-lo",
            str(TRUST_LO),
            "--trust-hi",
            "1",
        ),
    )
    run_ipi(tmp_path, "pimd.xml", address=address, steps=STEPS, nbeads=NBEADS, drivers=[command])
    extra_total = 0
    for bead in range(NBEADS):
        rows = np.loadtxt(tmp_path / f"model_devi{bead + 1}.out", ndmin=2)
        steps, devi = rows[:, 0].astype(int), rows[:, 4]
        # the rule, row after row: the next row comes F steps on while the latest is >= trust_lo
        expected = [0]
        while True:
            k = len(expected) - 1
            nxt = next_row_step(expected[-1], devi[k] >= TRUST_LO) if k < len(devi) else None
            if nxt is None or nxt > STEPS:
                break
            expected.append(nxt)
        assert list(steps) == expected, (bead, list(steps), list(devi))
        assert (devi < TRUST_LO).any() and (devi >= TRUST_LO).any(), devi  # both regimes happened
        extra_total += sum(1 for s in steps if s % OUT_FREQ)
    summary = json.loads((tmp_path / "devi_summary.json").read_text())
    assert summary["total"]["extra_rows_out_freq_near"] == extra_total > 0


@pytest.mark.timeout(400)
def test_stop_rule_ends_the_run_by_ipis_soft_exit(tmp_path, address, model_paths):
    """trust levels 0 and 0.05: rows from about step 3 on are failed; after 3 failed rows
    the driver creates EXIT; i-PI ends the run at the end of that step, writes its
    checkpoint and says EXIT; the driver exits 0 with every row of every step written."""
    faults.ipi_input(tmp_path, address, steps=100000, nbeads=2)
    command = faults.mpi_driver(
        3,
        model_paths[:3],
        "init.xyz",
        address,
        "--nbeads",
        "2",
        "--out-freq",
        "2",
        "--trust-lo",
        "0",
        "--trust-hi",
        "0.05",
        "--stop-after-failed",
        "3",
        "--exit-file",
        "EXIT",
    )
    with ProcessGroup(tmp_path / "logs") as group:
        ipi = group.start("i-pi", [tool("i-pi"), "input.xml"], cwd=tmp_path)
        driver = group.start("driver", command, cwd=tmp_path)
        assert ipi.popen.wait(timeout=300) == 0, ipi.tail()
        assert driver.popen.wait(timeout=60) == 0, driver.tail()
    log = driver.log_path.read_text()
    assert "created EXIT to end the run" in log and "run ended: the server sent EXIT" in log, log[-3000:]
    assert (tmp_path / "EXIT").exists() and (tmp_path / "RESTART").exists()  # i-PI's checkpoint
    evaluations = {
        int(k): int(v)
        for k, v in re.findall(r"(\d+): (\d+)", log.split("evaluations per request id:")[1].split("\n")[0])
    }
    summary = json.loads((tmp_path / "devi_summary.json").read_text())
    assert summary["total"]["failed"] >= 3
    for bead in (0, 1):  # every deviation step evaluated has its row: none lost
        rows = faults.rows(tmp_path / f"model_devi{bead + 1}.out")
        assert [int(r[0]) for r in rows] == list(range(0, evaluations[bead], 2)), (bead, evaluations)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--out-freq-near", "5", "--out-freq", "5", "--trust-lo", "0.1", "--trust-hi", "0.2"], "must be below"),
        (["--out-freq-near", "2"], "--out-freq-near switches on at --trust-lo"),
        (["--stop-after-failed", "3", "--exit-file", "EXIT"], "counts rows classified failed"),
        (["--stop-after-failed", "3", "--trust-lo", "0.1", "--trust-hi", "0.2"], "go together"),
        (
            ["--stop-after-failed", "3", "--exit-file", "nodir/EXIT", "--trust-lo", "0.1", "--trust-hi", "0.2"],
            "--exit-file nodir/EXIT: directory nodir does not exist",
        ),
    ],
    ids=["near-not-below", "near-no-trust", "stop-no-trust", "stop-no-file", "exit-no-dir"],
)
def test_bad_monitoring_options_are_one_line(tmp_path, address, model_paths, extra, message):
    command = driver_command(model_paths[:2], IPI_INPUTS / "init.xyz", address, *extra)
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
    assert not list(tmp_path.iterdir())
