"""Uncertainty beyond the row: each atom's force deviation (LAMMPS's ``atomic``, the
``--atomic`` columns of the row) wherever a structure is written, under real i-PI: the
candidate files (extended XYZ array ``devi_f``), the dumps of ``--traj-files`` (column
``devi_f``, still read by dpdata) and i-PI's extras trajectory (``devi_f_atoms``)."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from test_ipi_input import OUT_FREQ, STEPS, ipi_input, run, system

EXTRAS = "\n    <trajectory filename='devi' stride='1' extra_type='devi_f_atoms'> extras </trajectory>"


def read_extras(path) -> dict[int, list[float]]:
    """i-PI's extras trajectory: '#EXTRAS(devi_f_atoms)# Step: N ...' then the values."""
    out, step = {}, None
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#EXTRAS"):
            step = int(line.split("Step:")[1].split()[0])
        elif line.strip() and step is not None:
            out.setdefault(step, []).extend(
                float(x) for x in line.replace("[", " ").replace("]", " ").replace(",", " ").split()
            )
    return out


@pytest.mark.timeout(600)
def test_per_atom_deviation_in_candidates_dumps_and_extras(tmp_path, address, model_paths, reference):
    xml = ipi_input(address, system(2, "<force forcefield='dp'/>"), outputs=EXTRAS)
    options = ["--atomic", "--trust-lo", "0", "--trust-hi", "10", "--bead-files", "dpgen2", "--traj-files", "dpgen2"]
    run(tmp_path, xml, model_paths[:2], *options, "--extras")
    type_map = reference.deeppot(model_paths[0]).get_type_map()
    import dpdata

    for bead in (1, 2):
        rows = np.loadtxt(tmp_path / f"model_devi.{bead}.out", ndmin=2)
        assert rows[:, 0].tolist() == list(range(0, STEPS + 1, OUT_FREQ))
        atomic = rows[:, 7:]
        assert atomic.shape[1] == 32
        # every row is a candidate (trust levels 0 and 10): one frame each, with devi_f
        frames = ase.io.read(tmp_path / f"candidates.{bead}.xyz", ":")
        assert [f.info["step"] for f in frames] == rows[:, 0].tolist()
        for frame, row, devi in zip(frames, rows, atomic):
            np.testing.assert_allclose(frame.arrays["devi_f"], devi, rtol=1e-6)
            np.testing.assert_allclose(frame.arrays["devi_f"].max(), row[4], rtol=1e-6)
        # the dump: the last column, devi_f
        dumps = (tmp_path / f"traj.{bead}.dump").read_text().split("ITEM: TIMESTEP\n")[1:]
        assert len(dumps) == len(rows)
        for text, devi in zip(dumps, atomic):
            assert "ITEM: ATOMS id type x y z fx fy fz devi_f" in text
            column = [float(line.split()[-1]) for line in text.splitlines()[-32:]]
            np.testing.assert_allclose(column, devi, rtol=1e-6)
        system_ = dpdata.System(str(tmp_path / f"traj.{bead}.dump"), fmt="lammps/dump", type_map=type_map)
        assert system_.get_nframes() == len(rows)
        # i-PI's extras trajectory of this bead (i-PI counts beads from 0)
        extras = read_extras(next(tmp_path.glob(f"sim.devi_{bead - 1}*")))
        assert sorted(extras) == list(range(STEPS + 1))
        for step, values in extras.items():
            if step % OUT_FREQ:
                assert values == [-1.0] * 32
            else:
                np.testing.assert_allclose(values, atomic[step // OUT_FREQ], rtol=1e-6)
