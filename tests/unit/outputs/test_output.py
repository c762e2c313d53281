"""The deviation file, byte for byte as LAMMPS writes it, and its naming and file policies."""

from __future__ import annotations

import numpy as np
import pytest

from ensemble_driver.deviation import Deviation
from ensemble_driver.errors import ConfigError
from ensemble_driver.outputs.model_devi import BeadFiles, DeviationFile, bead_file_names, format_row, header_line

# The LAMMPS plugin's layout (deepmd-kit source/lmp/pair_deepmd.cpp), typed out once.
GOLDEN_HEADER = (
    "#       step         max_devi_v         min_devi_v         avg_devi_v"
    "         max_devi_f         min_devi_f         avg_devi_f\n"
)
GOLDEN_ROW = (
    "          10       1.234568e-03       0.000000e+00       1.250000e+01"
    "       1.234568e-03       0.000000e+00       1.250000e+01\n"
)
ROW = Deviation(1.2345678e-3, 0.0, 12.5, 1.2345678e-3, 0.0, 12.5)


def test_golden_header_and_row():
    assert header_line(atomic=False) == GOLDEN_HEADER
    assert format_row(10, ROW) == GOLDEN_ROW


def test_atomic_columns():
    row = Deviation(*ROW.columns(), atomic=np.array([0.5, 2.0e-3]))
    assert header_line(atomic=True) == GOLDEN_HEADER[:-1] + "      atm_devi_f(N)\n"
    assert format_row(10, row) == GOLDEN_ROW[:-1] + "       5.000000e-01       2.000000e-03\n"


def test_large_steps_widen_the_column_as_printf_does():
    assert format_row(1234567890123, ROW).startswith("1234567890123 ")


@pytest.mark.parametrize(
    "naming, nbeads, expected",
    [
        ("dpgen", 1, ["out/model_devi.out"]),
        # DP-GEN's LAMMPS PIMD input: beads from 1, padded to the digits of P
        ("dpgen", 4, ["out/model_devi1.out", "out/model_devi2.out", "out/model_devi3.out", "out/model_devi4.out"]),
        ("dpgen", 12, ["out/model_devi01.out", "out/model_devi12.out"]),
        ("dpgen", 100, ["out/model_devi001.out", "out/model_devi100.out"]),
        ("dpgen2", 2, ["out/model_devi.1.out", "out/model_devi.2.out"]),
        ("dpgen2", 32, ["out/model_devi.01.out", "out/model_devi.32.out"]),
        ("run/b{bead:03d}.out", 2, ["run/b000.out", "run/b001.out"]),
    ],
)
def test_bead_file_names(naming, nbeads, expected):
    names = bead_file_names("out/model_devi.out", naming, nbeads)
    assert len(names) == nbeads
    assert [names[0], names[-1]] == [expected[0], expected[-1]]
    if len(expected) == nbeads:
        assert names == expected
    assert sorted(names) == names  # lexicographic order is bead order


@pytest.mark.parametrize(
    "naming, message",
    [
        ("beads.out", "containing {bead}"),
        ("b{bead}{x}.out", "'x'"),
        ("b{bead:d}.out{bead:.0s}", "Unknown format code 's'"),
    ],
)
def test_bad_bead_patterns(naming, message):
    with pytest.raises(ConfigError, match=message):
        bead_file_names("model_devi.out", naming, 3)


def test_new_file_refuses_to_overwrite(tmp_path):
    path = tmp_path / "model_devi.out"
    path.write_text("precious\n")
    with pytest.raises(ConfigError, match="exists; pass --overwrite to replace it, or --append"):
        DeviationFile(path, atomic=False, mode="new")
    assert path.read_text() == "precious\n"
    f = DeviationFile(path, atomic=False, mode="overwrite")
    f.write_row(0, ROW)
    f.close()
    assert path.read_text() == GOLDEN_HEADER + format_row(0, ROW)


def test_append_continues_without_a_second_header(tmp_path):
    path = tmp_path / "model_devi.out"
    files = BeadFiles([str(path)], atomic=False, mode="new")
    files.write(0, 0, ROW)
    files.close()
    files = BeadFiles([str(path)], atomic=False, mode="append", step_offset=100)
    files.write(0, 0, ROW)
    files.write(0, 10, ROW)
    files.close()
    assert path.read_text() == GOLDEN_HEADER + format_row(0, ROW) + format_row(100, ROW) + format_row(110, ROW)


def test_missing_directory_and_partial_sets(tmp_path):
    with pytest.raises(ConfigError, match="directory .*nope does not exist"):
        BeadFiles([str(tmp_path / "nope" / "a.out")], atomic=False, mode="new")
    (tmp_path / "b2.out").write_text("old\n")
    names = [str(tmp_path / f"b{k}.out") for k in range(3)]
    with pytest.raises(ConfigError, match="b2.out exists"):
        BeadFiles(names, atomic=False, mode="new")
    # the files made before the failure are gone again; the old one is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b2.out"]
    assert (tmp_path / "b2.out").read_text() == "old\n"


def test_rows_beyond_nbeads_are_dropped(tmp_path):
    files = BeadFiles([str(tmp_path / "a.out"), str(tmp_path / "b.out")], atomic=False, mode="new")
    assert files.write(1, 0, ROW) and not files.write(2, 0, ROW)
    files.close()
    assert (tmp_path / "b.out").read_text().count("\n") == 2


def test_failed_run_leaves_all_or_nothing(tmp_path):
    names = [str(tmp_path / f"b{k}.out") for k in range(3)]
    files = BeadFiles(names, atomic=False, mode="new")
    files.discard_unused()  # failed before any row: nothing left
    assert list(tmp_path.iterdir()) == []
    files = BeadFiles(names, atomic=False, mode="new")
    files.write(0, 0, ROW)
    files.discard_unused()  # failed after bead 0's first row: the whole set stays
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b0.out", "b1.out", "b2.out"]
