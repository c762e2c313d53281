"""dpgen2's own exploration code (installed from PyPI in .venv-dpgen2, beside the driver's
environment: its dependencies are not the driver's) on a task directory the driver wrote
under real i-PI with --bead-files dpgen2 --traj-files dpgen2: the frames dpgen2's trust-level
report and frame selector pick are the driver's candidates, row by row, and their
structures are those i-PI sent (dpdata wraps them into the box: compared modulo the
lattice)."""

from __future__ import annotations

import json
import subprocess
import sys

import ase.io
import numpy as np
import pytest
from conftest import ROOT
from harness import driver_command, run_ipi
from test_ensemble import mpiexec

DPGEN2_VENV = ROOT / ".venv-dpgen2"
DPGEN2 = ("dpgen2==0.1.0", "dpdata==1.1.0")
NBEADS, STEPS, OUT_FREQ = 4, 12, 2
F_LO, F_HI = 0.05, 0.053  # this run's max_devi_f grows from 0.049 to 0.056: all three classes


@pytest.fixture(scope="session")
def dpgen2_python() -> str:
    python = DPGEN2_VENV / "bin" / "python"
    stamp = DPGEN2_VENV / ".installed"
    if not stamp.exists() or stamp.read_text() != " ".join(DPGEN2):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(DPGEN2_VENV)], check=True, timeout=300)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *DPGEN2],
            check=True,
            timeout=900,
        )
        stamp.write_text(" ".join(DPGEN2))
    return str(python)


@pytest.mark.timeout(1200)
def test_dpgen2_selects_the_driver_candidates(tmp_path, address, model_paths, reference, symbols, dpgen2_python):
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
            "--bead-files",
            "dpgen2",
            "--traj-files",
            "dpgen2",
            "--trust-lo",
            str(F_LO),
            "--trust-hi",
            str(F_HI),
        ),
    )
    run_ipi(tmp_path, "pimd.xml", address=address, steps=STEPS, nbeads=NBEADS, drivers=[command])
    type_map = reference.deeppot(model_paths[0]).get_type_map()
    work = tmp_path / "dpgen2"
    work.mkdir()
    proc = subprocess.run(
        [dpgen2_python, str(ROOT / "tests" / "dpgen2_select.py"), str(tmp_path), str(NBEADS), str(F_LO), str(F_HI)]
        + [",".join(type_map), str(work)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    selected = json.loads(proc.stdout.strip().splitlines()[-1])
    ours = []
    for bead in range(NBEADS):
        rows = np.loadtxt(tmp_path / f"model_devi.{bead + 1}.out", ndmin=2)
        expected = [k for k, r in enumerate(rows) if F_LO <= r[4] < F_HI]
        assert selected["ids"][bead] == expected, bead  # the same rows, by dpgen2's own report
        frames = ase.io.read(tmp_path / f"candidates.{bead + 1}.xyz", index=":") if expected else []
        assert [f.info["step"] for f in frames] == [int(rows[k, 0]) for k in expected]
        ours.extend(frames)
    classes = json.loads((tmp_path / "devi_summary.json").read_text())["total"]
    assert classes["candidate"] == len(ours) > 0 and classes["accurate"] > 0 and classes["failed"] > 0, classes
    # dpgen2's selected structures (from the dumps) are the driver's candidate structures
    assert len(selected["frames"]) == len(ours)
    for theirs, mine in zip(selected["frames"], ours):
        assert theirs["names"] == list(symbols)
        np.testing.assert_allclose(theirs["cell"], mine.cell[:], atol=1e-8)
        shift = (np.array(theirs["coords"]) - mine.positions) @ np.linalg.inv(mine.cell[:])
        np.testing.assert_allclose(shift, np.round(shift), atol=1e-8)
