"""The template structure: the atom labels (and whether the system is periodic).

The i-PI protocol carries positions but no element names, so the driver reads them,
once, from a template file in the server's atom order: any file ASE reads, or an i-PI
xyz file whose comment line carries ``# CELL(abcABC): ...`` (or ``CELL(H)``/``CELL(GENH)``),
which ASE does not understand and this module reads itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from . import units

# The cell tags i-PI writes and reads in xyz comments (ipi/utils/io/backends/io_xyz.py).
_IPI_CELL = re.compile(r"CELL[\(\[\{](abcABC|H|GENH)[\)\]\}]:")
_IPI_CELL_VALUES = re.compile(_IPI_CELL.pattern + r"\s*((?:[-+0-9.eEdD]+\s+){5,8}[-+0-9.eEdD]+)")
#: The unit words i-PI writes in its comment lines and pdb titles, ``positions{atomic_unit}
#: cell{atomic_unit}`` (ipi/utils/io/__init__.py, ``print_file``; read back by io_units.py).
IPI_WORD = re.compile(r"(\w+)\{(\w*)\}")
#: i-PI's trajectories whose values are atom positions (ipi/engine/properties.py, ``Trajectories``).
IPI_POSITIONS = ("positions", "x_centroid", "x_centroid_even", "x_centroid_odd")


def has_ipi_cell(line: str) -> bool:
    """Whether an xyz comment line carries i-PI's cell (``CELL(abcABC):``, ``CELL(H):``, ``CELL(GENH):``)."""
    return bool(_IPI_CELL.search(line))


@dataclass(frozen=True)
class IpiUnits:
    """What an i-PI comment line (xyz comment, pdb TITLE, ``ipi_comment`` of its extxyz) says
    of its numbers: the trajectory's quantity (None: no word) and Angstrom per unit of the
    positions and of the cell."""

    quantity: str | None
    positions: float
    cell: float


def ipi_units(comment: str, where: str, default: str = "atomic_unit") -> IpiUnits:
    """The units of an i-PI comment line: its words ``quantity{unit}`` and ``cell{unit}``,
    ``default`` where one is missing (i-PI's: atomic units in xyz, Angstrom in pdb, ``ase``
    in its extxyz). Refuses a quantity other than atom positions (an i-PI trajectory of
    forces, velocities, ...) and a unit that is no length the driver converts."""
    words = IPI_WORD.findall(comment)
    quantities = [(key, unit) for key, unit in words if key != "cell"]
    quantity, unit = quantities[0] if quantities else (None, default)
    if quantity is not None and quantity not in IPI_POSITIONS:
        raise ConfigError(
            f"{where}: {quantity}{{{unit}}}: i-PI's trajectory of {quantity}, not of atom positions "
            f"({', '.join(IPI_POSITIONS)})"
        )
    cell = next((u for key, u in words if key == "cell"), default)
    scales = []
    for what, name in (("positions" if quantity is None else quantity, unit), ("cell", cell)):
        scale = units.ipi_length_angstrom(name)
        if scale is None:
            raise ConfigError(
                f"{where}: unit {what}{{{name}}} not supported (i-PI's lengths: "
                f"{', '.join(units.IPI_LENGTHS)}, with an SI prefix: nanometer, ...)"
            )
        scales.append(scale)
    return IpiUnits(quantity, *scales)


def ipi_cell(comment: str, where: str, scale: float) -> np.ndarray | None:
    """The cell of an i-PI xyz comment line (Angstrom, lattice vectors as rows; ``scale``:
    Angstrom per unit of the cell), or None when the line carries none."""
    match = _IPI_CELL_VALUES.search(comment)
    if not match:
        return None
    numbers = [float(x.replace("d", "e").replace("D", "e")) for x in match.group(2).split()]
    if match.group(1) == "abcABC":
        from ase.geometry import cellpar_to_cell

        return cellpar_to_cell([numbers[0] * scale, numbers[1] * scale, numbers[2] * scale, *numbers[3:6]])
    if len(numbers) < 9:
        raise ConfigError(f"{where}: CELL({match.group(1)}) needs 9 numbers, got {len(numbers)}")
    # H and GENH: i-PI's h, lattice vectors as columns, written row by row
    return np.array(numbers[:9]).reshape(3, 3).T * scale


@dataclass(frozen=True)
class Template:
    path: str
    labels: tuple[str, ...]
    periodic: bool
    #: the template's own structure (Angstrom), used to warm the models up before the
    #: run; the server's structures are the ones that count
    positions: np.ndarray | None = field(default=None, compare=False, repr=False)
    cell: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def natoms(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class IpiFrame:
    """One frame of an i-PI xyz file, lengths in Angstrom."""

    labels: tuple[str, ...]
    positions: np.ndarray  # (nat, 3)
    cell: np.ndarray | None  # rows = lattice vectors; None: no cell on the comment line
    comment: str
    end: int  # index of the line after the frame


def read_ipi_frame(lines: list[str], start: int, name: str) -> IpiFrame:
    """The frame of an i-PI xyz file whose atom-count line is ``lines[start]``. ``name``
    begins every error message (the file, and what it is to the driver)."""
    try:
        nat = int(lines[start].split()[0])
    except (IndexError, ValueError):
        raise ConfigError(
            f"{name}, line {start + 1}: expected the number of atoms, got {lines[start].strip()[:40]!r}"
        ) from None
    if nat <= 0:
        raise ConfigError(f"{name}, line {start + 1}: the number of atoms must be positive, got {nat}")
    body = lines[start + 2 : start + 2 + nat]
    if len(body) < nat:
        raise ConfigError(
            f"{name}, line {start + 1}: announces {nat} atoms but has {len(body)} atom lines (the file ends)"
        )
    labels = []
    positions = np.empty((nat, 3))
    for i, line in enumerate(body):
        fields = line.split()
        try:
            positions[i] = [float(x) for x in fields[1:4]]  # ValueError too when fewer than 3
        except ValueError:
            raise ConfigError(
                f"{name}, line {start + 3 + i}: expected 'label x y z', got {line.strip()[:60]!r}"
            ) from None
        labels.append(fields[0])
    comment = lines[start + 1]
    where = f"{name}, line {start + 2}"
    scale = ipi_units(comment, where)
    positions *= scale.positions
    return IpiFrame(tuple(labels), positions, ipi_cell(comment, where, scale.cell), comment, start + 2 + nat)


def read_template(path: str | Path) -> Template:
    """Read the first frame of ``path``. Raises ConfigError with the file name on failure."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"template {path}: no such file")
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            head = [handle.readline() for _ in range(2)]
    except OSError as exc:
        raise ConfigError(f"template {path}: {exc.strerror}") from None
    if len(head) == 2 and has_ipi_cell(head[1]):
        with open(path, encoding="utf-8", errors="replace") as handle:
            frame = read_ipi_frame(handle.read().splitlines(), 0, f"template {path}")
        return Template(str(path), frame.labels, periodic=True, positions=frame.positions, cell=frame.cell)

    import ase.io  # only here: ASE's io pulls in a lot

    try:
        atoms = ase.io.read(path, index=0)
    except Exception as exc:  # ASE raises many types; each means "cannot read this file"
        raise ConfigError(f"template {path}: ASE cannot read it ({type(exc).__name__}: {exc})") from None
    if len(atoms) == 0:
        raise ConfigError(f"template {path}: contains no atoms")
    periodic = bool(atoms.pbc.any()) and atoms.cell.rank == 3
    return Template(
        str(path),
        tuple(atoms.get_chemical_symbols()),
        periodic=periodic,
        positions=atoms.get_positions(),
        cell=atoms.cell.array.copy() if periodic else None,
    )


def atom_array(atoms, name: str, where: str) -> np.ndarray:
    """The per-atom array ``name`` of an ASE Atoms read from extended XYZ, as
    (natoms, columns) float64. Raises ConfigError naming ``where`` and the arrays there."""
    values = atoms.arrays.get(name)
    if values is None and atoms.calc is not None:
        values = atoms.calc.results.get(name)  # ASE keeps some names (charges, ...) as results
    if values is None:
        known = sorted(k for k in atoms.arrays if k not in ("numbers", "positions"))
        raise ConfigError(
            f"{where} has no per-atom array {name!r} (its arrays: {', '.join(known) or 'none'}); "
            "name a column of an extended XYZ Properties= line"
        )
    try:
        values = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: array {name!r} is not numeric") from None
    values = values.reshape(len(atoms), -1)
    if not np.isfinite(values).all():
        raise ConfigError(f"{where}: array {name!r} has values that are not finite numbers")
    return values


def read_template_array(path: str | Path, name: str) -> np.ndarray:
    """The per-atom array ``name`` of the template's first frame (an extended XYZ column
    declared in its ``Properties=`` line), as (natoms, columns)."""
    path = Path(path)
    where = f"template {path}"
    import ase.io

    try:
        atoms = ase.io.read(path, index=0)
    except Exception as exc:  # ASE raises many types
        raise ConfigError(
            f"{where}: ASE cannot read it, so it has no array {name!r} ({type(exc).__name__}: {exc})"
        ) from None
    return atom_array(atoms, name, where)


def order_mismatch(template: Template, positions: np.ndarray, tolerance: float = 1e-5) -> str | None:
    """Whether the server's structure is the template's with its atoms in another order
    that changes elements (i-PI's step 0 is its init file as read): a reason to refuse,
    or None (same order, a harmless permutation of like atoms, or another structure
    altogether, e.g. a restart's, where nothing can be told)."""
    if template.positions is None or len(template.positions) != len(positions):
        return None
    ours = np.asarray(template.positions, dtype=np.float64)
    theirs = np.asarray(positions, dtype=np.float64)
    if np.abs(ours - theirs).max() <= tolerance:
        return None
    from scipy.spatial import cKDTree

    distance, index = cKDTree(theirs).query(ours, distance_upper_bound=tolerance)
    if not np.isfinite(distance).all() or len(set(index.tolist())) != len(index):
        return None  # not the same structure: nothing to tell
    labels = np.asarray(template.labels)
    wrong = np.flatnonzero(labels[index] != labels)  # server atom index[i] is element labels[i]
    if not wrong.size:
        return None
    i = int(wrong[0])
    return (
        f"template {template.path} lists the atoms of the server's first structure in another order: its atom "
        f"{i + 1} ({labels[i]}) is the server's atom {int(index[i]) + 1}, which the template calls "
        f"{labels[index[i]]}; the elements would be wrong. Write the template in the server's atom order "
        "(i-PI's: its <initialize> file), or give i-PI's input with --ipi-input"
    )
