"""Candidate selection in real runs: a real i-PI PIMD run under mpiexec whose candidates
are exactly the structures i-PI sent at the candidate rows' steps, and the active-learning
example, whose outputs agree with each other. DP-GEN's classification on golden rows and
the candidate files read back by ASE: tests/unit/outputs/test_selection.py."""

from __future__ import annotations

import json

import numpy as np
from ase.io import read
from support.harness import CHECK_OUTPUTS, driver_command, run_ipi
from support.ipi_runs import BIN_OUTPUT, bead_file, read_ipi_binary
from support.mpi import mpiexec
from support.paths import IPI_INPUTS

from ensemble_driver.devi.frames import read_ipi_xyz
from ensemble_driver.deviation import model_deviation
from ensemble_driver.outputs.selection import ACCURATE, CANDIDATE, FAILED, TrustLevels
from ensemble_driver.wire import units


def classes_of(path, levels):
    rows = np.loadtxt(path, ndmin=2)
    return [(int(r[0]), levels.classify(r[4], r[1])) for r in rows]


def start_max_devi_f(model_paths, reference, periodic=True) -> float:
    """max_devi_f of the shipped starting structure, in-process: every bead starts there."""
    from ase import Atoms

    frame = read_ipi_xyz(IPI_INPUTS / "init.xyz")[0]
    atoms = Atoms(frame.symbols, positions=frame.positions, cell=frame.cell, pbc=periodic)
    forces = [reference.eval(path, atoms, periodic)[1] for path in model_paths]
    return float(model_deviation(np.array(forces), np.zeros((len(forces), 3, 3))).max_devi_f)


def test_pimd_candidates_are_the_structures_ipi_sent(tmp_path, address, model_paths, reference):
    """4 beads, 4 models on 2 ranks; levels set so that the rows fall in more than one class."""
    nbeads, steps, out_freq = 4, 8, 2
    # The rows of this short run lie within a few % of the starting structure's value
    # (~0.051 eV/A for the shipped models): the step-0 rows are accurate, and the levels
    # are close enough above it that the later rows that rise fall in the other classes.
    start = start_max_devi_f(model_paths, reference)
    levels = TrustLevels(start * 1.0001, start * 1.04)
    command = mpiexec(
        2,
        driver_command(
            model_paths,
            tmp_path / "init.xyz",
            address,
            "--nbeads",
            str(nbeads),
            "--out-freq",
            str(out_freq),
            "--trust-lo",
            str(levels.f_lo),
            "--trust-hi",
            str(levels.f_hi),
        ),
    )
    run = run_ipi(
        tmp_path,
        "pimd.xml",
        address=address,
        steps=steps,
        nbeads=nbeads,
        drivers=[command],
        outputs=(*CHECK_OUTPUTS, BIN_OUTPUT),
    )
    summary = json.loads((tmp_path / "devi_summary.json").read_text())
    seen = set()
    for bead in range(nbeads):
        classes = classes_of(bead_file(tmp_path, bead), levels)
        assert len(classes) == steps // out_freq + 1
        counts = {k: sum(1 for _, c in classes if c == k) for k in (ACCURATE, CANDIDATE, FAILED)}
        assert {k: summary["beads"][bead][k] for k in counts} == counts
        seen.update(c for _, c in classes)
        sent = {step: (h, q) for step, h, q in read_ipi_binary(run.workdir / f"{run.prefix}.bin_{bead}.bin", steps + 1)}
        wanted = [step for step, c in classes if c == CANDIDATE]
        path = tmp_path / f"candidates{bead + 1}.xyz"
        frames = read(path, index=":") if wanted else []
        assert path.exists() == bool(wanted)
        assert [a.info["step"] for a in frames] == wanted
        for atoms in frames:
            h, q = sent[atoms.info["step"]]
            np.testing.assert_array_equal(atoms.positions, units.positions_from_wire(q))
            np.testing.assert_array_equal(atoms.cell.array, units.cell_from_wire(h))
            assert atoms.info["bead"] == bead
    assert len(seen) >= 2, seen  # the levels above really split the rows
    assert "deviation rows by class" in run.driver_logs[0]


def test_active_learning_example_runs(tmp_path):
    """examples/active_learning/run_example.py, shortened: its outputs agree with each other."""
    import subprocess
    import sys

    from support.paths import ROOT

    work = tmp_path / "al"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "active_learning" / "run_example.py"),
            "--steps",
            "30",
            "--workdir",
            str(work),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads((work / "devi_summary.json").read_text())
    levels = TrustLevels(**{k: summary["trust_levels"][k] for k in ("f_lo", "f_hi")})
    for bead in range(4):
        classes = classes_of(work / f"model_devi{bead + 1}.out", levels)
        assert [s for s, _ in classes] == list(range(0, 31, 5))
        assert summary["beads"][bead][CANDIDATE] == sum(c == CANDIDATE for _, c in classes)
    assert (work / "devi.png").read_bytes()[:4] == b"\x89PNG"
    assert "next:" in proc.stdout and "ensemble-driver devi hot.pos_0.xyz" in proc.stdout
