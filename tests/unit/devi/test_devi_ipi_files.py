"""``ensemble-driver devi`` on the files i-PI writes, in the units their own words give.

The files are written by i-PI's own writer (``ipi.utils.io.print_file``, what its
``<trajectory>`` output calls) from one set of structures in a triclinic cell: xyz in
atomic units (i-PI's default) and with ``positions{angstrom} cell{nanometer}``, pdb with
``positions{atomic_unit}`` with the cell in atomic units and in Angstrom (the report's
case), in its default Angstrom, and its extxyz
(``format='ase'``). The reference reads each file's numbers with i-PI's own raw readers
(``iter_file_raw``, no conversion) and converts them with the tests' own table of the words
(tests/support/ipi_files.py; ``ase.units.Bohr`` for the atomic unit, as the driver
documents). With every ``--format`` (none, ipi, xyz, extxyz, pdb, proteindatabank)
``devi`` reads those frames; a unit or quantity it cannot take is one line. The rows of
``devi`` with the shipped models on these files: tests/peers/test_devi_ipi_files_command.py."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from ase.units import Bohr
from support.ipi_files import FILES, FORMATS, STEPS, reference_frames, write_ipi

from ensemble_driver.devi.command import _warn_bead_order
from ensemble_driver.devi.frames import Frame, read_frames
from ensemble_driver.devi.settings import DeviSettings
from ensemble_driver.errors import ConfigError
from ensemble_driver.wire import units

# the fast tier: reading


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("name", FILES)
def test_ipi_files_are_read_in_their_units_with_any_format(ipi_files, name, fmt):
    frames = read_frames(ipi_files[name], fmt)
    expected = reference_frames(ipi_files[name], FILES[name][0])
    assert [f.step for f in frames] == [e[0] for e in expected] == list(STEPS)
    assert {f.bead for f in frames} == {list(FILES).index(name)}
    for frame, (_, labels, positions, cell) in zip(frames, expected):
        assert frame.symbols == labels
        np.testing.assert_allclose(frame.positions, positions, rtol=0, atol=1e-12)
        np.testing.assert_allclose(frame.cell, cell, rtol=0, atol=1e-9)


def test_the_report_cases_were_read_wrong_by_ase(ipi_files):
    """The report: ASE takes the pdb's Bohr for Angstrom, and the xyz's too, without its
    cell; what devi reads is ASE's numbers in Bohr, with a cell."""
    import ase.io

    pdb = ase.io.read(ipi_files["report.pdb"], index=0, format="proteindatabank")
    frame = read_frames(ipi_files["report.pdb"], "proteindatabank")[0]
    np.testing.assert_allclose(frame.positions, pdb.positions * Bohr)
    np.testing.assert_allclose(frame.cell, pdb.cell.array)  # cell{angstrom}
    for fmt in ("xyz", "extxyz"):
        xyz = ase.io.read(ipi_files["au.xyz"], index=0, format=fmt)
        assert not xyz.pbc.any()
        frame = read_frames(ipi_files["au.xyz"], fmt)[0]
        np.testing.assert_allclose(frame.positions, xyz.positions * Bohr)
        assert frame.cell is not None and np.linalg.det(frame.cell) > 400


def test_ipi_length_words():
    assert units.ipi_length_angstrom("atomic_unit") == units.BOHR_ANGSTROM
    assert units.ipi_length_angstrom("angstrom") == units.ipi_length_angstrom("Angstrom") == 1.0
    assert units.ipi_length_angstrom("ase") == 1.0
    assert units.ipi_length_angstrom("nanometer") == pytest.approx(10.0)
    assert units.ipi_length_angstrom("picometer") == pytest.approx(0.01)
    for word in ("radian", "degree", "automatic", "", "furlong", "nanofurlong"):
        assert units.ipi_length_angstrom(word) is None


def test_centroid_trajectories_are_positions(tmp_path):
    """i-PI's x_centroid trajectory is positions too; in its extxyz the values are a column."""
    write_ipi(tmp_path / "c.xyz", "xyz", "x_centroid", "picometer", "angstrom", bead=0)
    write_ipi(tmp_path / "p.xyz", "xyz", "positions", "automatic", "automatic", bead=0)
    write_ipi(tmp_path / "c.extxyz", "ase", "x_centroid", "automatic", "automatic", bead=0)
    centroid, plain, ase_centroid = (read_frames(tmp_path / n) for n in ("c.xyz", "p.xyz", "c.extxyz"))
    for a, b, c in zip(centroid, plain, ase_centroid):
        np.testing.assert_allclose(a.positions, b.positions, atol=1e-4)  # 6 digits in each unit
        np.testing.assert_allclose(c.positions, b.positions, atol=1e-4)


def refusal(path: Path, fmt=None, **kwargs) -> str:
    with pytest.raises(ConfigError) as caught:
        read_frames(path, fmt, **kwargs)
    assert caught.value.exit_status == 2
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    return message


def widen_first_x(pdb: str) -> str:
    """The pdb with its first x coordinate 12345.678: wider than i-PI's %8.3f column."""
    lines = pdb.splitlines(keepends=True)
    k = next(k for k, line in enumerate(lines) if line.startswith("ATOM"))
    lines[k] = lines[k][:30] + "12345.678" + lines[k][38:]
    return "".join(lines)


@pytest.mark.parametrize("fmt", FORMATS)
def test_what_cannot_be_read_is_one_line(ipi_files, tmp_path, fmt):
    pdb, xyz, ase_file = (ipi_files[n].read_text() for n in ("au.pdb", "au.xyz", "ase.extxyz"))
    cases = {
        "radian.pdb": (pdb.replace("cell{atomic_unit}", "cell{radian}"), "cell{radian} not supported"),
        "furlong.xyz": (
            xyz.replace("positions{atomic_unit}", "positions{furlong}"),
            "positions{furlong} not supported",
        ),
        "forces.xyz": (xyz.replace("positions{", "forces{"), "forces{atomic_unit}: i-PI's trajectory of forces"),
        "velocities.pdb": (pdb.replace("positions{", "velocities{"), "i-PI's trajectory of velocities"),
        "furlong.extxyz": (
            ase_file.replace("positions{ase}", "positions{furlong}"),
            "positions{furlong} not supported",
        ),
        # a coordinate wider than i-PI's %8.3f shifts the columns after it
        "wide.pdb": (widen_first_x(pdb), "not i-PI's columns"),
        "cut.pdb": (pdb[: pdb.rindex("END")], "the last frame has no END line"),
    }
    for name, (text, words) in cases.items():
        assert text != {"pdb": pdb, "xyz": xyz, "extxyz": ase_file}[name.split(".")[1]], name
        (tmp_path / name).write_text(text)
        assert words in refusal(tmp_path / name, fmt), name
    assert "--aparam-array" in refusal(ipi_files["au.pdb"], fmt, aparam_array="q")
    if fmt == "ipi":
        (tmp_path / "plain.xyz").write_text("1\nnothing of i-PI's\nCu 0 0 0\n")
        assert "not a file of i-PI's" in refusal(tmp_path / "plain.xyz", fmt)


def test_beads_out_of_order_are_told(caplog):
    def series(*beads):
        return [[Frame(["Cu"], np.zeros((1, 3)), np.eye(3), 0, bead=b)] for b in beads]

    settings = DeviSettings(trajectories=("a", "b", "c"), models=("m0", "m1"))
    with caplog.at_level(logging.WARNING):
        _warn_bead_order(settings, series(0, 1, 2), 0)
        _warn_bead_order(settings, series(3, None, 1), 0)  # not all i-PI's
        assert not caplog.records
        _warn_bead_order(settings, series(0, 10, 2), 0)
    assert len(caplog.records) == 1 and "beads 0 10 2" in caplog.records[0].getMessage()
