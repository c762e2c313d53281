"""Files as i-PI's ``<trajectory>`` output writes them (``ipi.utils.io.print_file``), in
every unit and format the driver's ``devi`` reads, and the reference's reading of them
with i-PI's own raw readers; for tests/unit/devi/test_devi_ipi_files.py and the peer
tests that run ``devi`` on them (tests/peers/test_devi_ipi_files_command.py,
tests/peers/test_posthoc.py)."""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from ase.units import Bohr

from ensemble_driver.wire.template import read_template
from support.harness import deepmd_deviation
from support.paths import IPI_INPUTS

STEPS = (0, 10, 20)
#: Angstrom per unit, the test's own table of i-PI's words
ANGSTROM_PER = {"atomic_unit": Bohr, "angstrom": 1.0, "ase": 1.0, "nanometer": 10.0, "picometer": 0.01}
#: name: (i-PI's mode, quantity, its units, cell units); the bead of each is its place here
FILES = {
    "au.xyz": ("xyz", "positions", "automatic", "automatic"),  # i-PI's default: atomic units
    "mixed.xyz": ("xyz", "positions", "angstrom", "nanometer"),
    "au.pdb": ("pdb", "positions", "atomic_unit", "atomic_unit"),
    "report.pdb": ("pdb", "positions", "atomic_unit", "automatic"),  # the report's: the cell in Angstrom
    "default.pdb": ("pdb", "positions", "automatic", "automatic"),  # pdb's default: Angstrom
    "ase.extxyz": ("ase", "positions", "automatic", "automatic"),  # ASE's Angstrom
}
FORMATS = (None, "ipi", "xyz", "extxyz", "pdb", "proteindatabank")


def structures(seed: int = 3):
    """Three frames (Bohr, i-PI's upper-triangular h) of the shipped 32-atom Cu-Au
    structure, in a strained triclinic cell, rattled."""
    import ipi.utils.mathtools as mt

    template = read_template(IPI_INPUTS / "init.xyz")
    fractional = template.positions @ np.linalg.inv(template.cell)
    rng = np.random.default_rng(seed)
    frames = []
    for k, step in enumerate(STEPS):
        a, b, c = (np.array([7.9, 7.7, 8.0]) + 0.05 * k) / Bohr
        h = mt.abc2h(a, b, c, *np.radians([88.0, 93.0, 91.5]))
        q = fractional @ h.T + rng.normal(0, 0.08 / Bohr, fractional.shape)
        frames.append((step, h, q))
    return list(template.labels), frames


def write_ipi(path: Path, mode: str, key: str, unit: str, cell_unit: str, bead: int, seed: int = 3) -> None:
    """The frames as i-PI's <trajectory> output writes them (ipi/engine/outputs.py: the title)."""
    from ipi.engine.atoms import Atoms
    from ipi.engine.cell import Cell
    from ipi.utils.io import print_file

    labels, frames = structures(seed)
    stream = io.StringIO()
    for step, h, q in frames:
        atoms = Atoms(len(labels))
        atoms.names[:] = labels
        atoms.q[:] = q.ravel()
        title = "Step:  %10d  Bead:   %5d " % (step, bead)
        print_file(mode, atoms, Cell(h.copy()), stream, title=title, key=key, dimension="length", units=unit, cell_units=cell_unit)  # fmt: skip
    path.write_text(stream.getvalue())


def reference_frames(path: Path, mode: str) -> list[tuple[int, list[str], np.ndarray, np.ndarray]]:
    """(step, labels, positions, cell) in Angstrom: the numbers i-PI's raw readers find,
    converted by the words of each frame's comment (i-PI's read_pdb adds its Angstrom
    words where a pdb has none); i-PI's extxyz through ASE."""
    if mode == "ase":
        import ase.io

        return [
            (
                int(re.search(r"Step:\s*(\d+)", a.info["ipi_comment"]).group(1)),
                a.get_chemical_symbols(),
                a.positions,
                a.cell.array,
            )  # fmt: skip
            for a in ase.io.read(path, index=":", format="extxyz")
        ]
    from ipi.utils.io import iter_file_raw

    frames = []
    with open(path) as stream:
        for raw in iter_file_raw(mode, stream):
            comment = raw["comment"]
            words = dict(re.findall(r"(\w+)\{(\w+)\}", comment))
            quantity = next(k for k in words if k != "cell")
            positions = raw["data"].reshape(-1, 3) * ANGSTROM_PER[words[quantity]]
            cell = np.asarray(raw["cell"]).T * ANGSTROM_PER[words.get("cell", "atomic_unit")]
            step = int(re.search(r"Step:\s*(\d+)", comment).group(1))
            frames.append((step, list(raw["names"]), positions, cell))
    return frames


def expected_rows(frames, model_paths, reference) -> np.ndarray:
    """The rows (step, 6 deviations) of deepmd-kit's calc_model_devi_v / calc_model_devi_f
    on DeepPot.eval of each (step, labels, positions, cell) frame in Angstrom."""
    rows = [
        [step, *deepmd_deviation(reference, model_paths, labels, positions, cell)]
        for step, labels, positions, cell in frames
    ]
    return np.array(rows)
