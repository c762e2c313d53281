"""``ensemble-driver devi`` with the shipped models on the files i-PI writes
(tests/support/ipi_files.py; their reading alone, in the fast tier:
tests/unit/devi/test_devi_ipi_files.py). With every ``--format`` (none, ipi, xyz, extxyz,
pdb, proteindatabank) ``devi`` gives the rows of deepmd-kit's ``calc_model_devi_f`` /
``calc_model_devi_v`` on ``DeepPot.eval`` of those frames (1e-6); a unit or quantity it
cannot take is one line and exit status 2."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from support.ipi_files import FILES, FORMATS, STEPS, expected_rows, reference_frames
from support.paths import tool


@pytest.fixture(scope="module")
def expected(ipi_files, model_paths, reference) -> dict[str, np.ndarray]:
    return {
        name: expected_rows(reference_frames(path, FILES[name][0]), model_paths, reference)
        for name, path in ipi_files.items()
    }


def devi(*args, cwd) -> subprocess.CompletedProcess:
    command = [tool("ensemble-driver"), "devi", *map(str, args)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.timeout(400)
@pytest.mark.parametrize("fmt", FORMATS)
def test_devi_rows_on_ipi_files_equal_deepmd(tmp_path, ipi_files, model_paths, reference, expected, fmt):
    """Every file in one call (one series each: model_devi1..6.out), with one --format."""
    files = list(ipi_files.values())
    proc = devi(*files, "--models", *model_paths, *(["--format", fmt] if fmt else []), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "beads" not in proc.stderr  # given in bead order: no warning
    for k, name in enumerate(ipi_files):
        rows = np.loadtxt(tmp_path / f"model_devi{k + 1}.out", ndmin=2)
        np.testing.assert_array_equal(rows[:, 0], STEPS)
        np.testing.assert_allclose(rows, expected[name], rtol=1e-6, atol=1e-9, err_msg=f"{name}, --format {fmt}")
    if fmt is None:  # the report's pdb as ASE reads it (Bohr as Angstrom) gives other rows
        import ase.io

        wrong = [
            (step, a.get_chemical_symbols(), a.positions, a.cell.array)
            for step, a in zip(STEPS, ase.io.read(ipi_files["report.pdb"], index=":", format="proteindatabank"))
        ]
        assert np.abs(expected_rows(wrong, model_paths, reference)[:, 4] / expected["report.pdb"][:, 4] - 1).min() > 1


def test_devi_refuses_with_one_line(tmp_path, ipi_files, model_paths):
    """A unit or a quantity it cannot take: one line, status 2, before any row is written."""
    (tmp_path / "radian.pdb").write_text(ipi_files["au.pdb"].read_text().replace("cell{atomic_unit}", "cell{radian}"))
    (tmp_path / "forces.xyz").write_text(ipi_files["au.xyz"].read_text().replace("positions{", "forces{"))
    for name, fmt, value in (("radian.pdb", "proteindatabank", "cell{radian}"), ("forces.xyz", "extxyz", "forces{atomic_unit}")):  # fmt: skip
        proc = devi(ipi_files["au.xyz"], name, "--models", *model_paths, "--format", fmt, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr[-2000:]
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and name in lines[0] and value in lines[0], proc.stderr[-2000:]
        assert not list(tmp_path.glob("model_devi*")) and proc.stdout == ""
