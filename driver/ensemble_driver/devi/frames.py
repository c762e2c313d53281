"""Reading existing trajectories for ``ensemble-driver devi``, as ``Frame`` objects in
Angstrom with their step (i-PI's ``Step:``, extxyz ``step=``, a dump's timestep) when the
file carries one.

The files i-PI writes are found by their content, whatever their name or ``--format``
says, and read in the units their own words give (``positions{atomic_unit}
cell{atomic_unit}``): its xyz (the comment line: cell, step, bead, units), which ASE would
take for Angstrom without a cell, and its pdb (the TITLE line: step, bead, units; the
CRYST1 cell), which ASE would take for Angstrom, are read here; its extxyz
(``format='ase'``) through ASE, its ``ipi_comment`` giving the step, the bead and the
units. Everything else goes through ASE."""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import ranks
from ..errors import ConfigError
from ..wire.template import IPI_WORD, atom_array, has_ipi_cell, ipi_units, read_ipi_frame

_STEP = re.compile(r"Step:\s*(\d+)")
_BEAD = re.compile(r"Bead:\s*(\d+)")


@dataclass
class Frame:
    symbols: list[str]
    positions: np.ndarray  # (nat, 3) Angstrom
    cell: np.ndarray | None  # (3, 3) Angstrom, rows = lattice vectors; None: not periodic
    step: int | None
    aparam: np.ndarray | None = None  # (nat, k): the --aparam-array values of this frame
    types: np.ndarray | None = None  # a LAMMPS dump's atom types (from 1), until named by a type map
    bead: int | None = None  # i-PI's bead, from its comment line


def _number(pattern: re.Pattern, comment: str) -> int | None:
    found = pattern.search(comment)
    return int(found.group(1)) if found else None


def read_ipi_xyz(path: Path) -> list[Frame]:
    """Frames of an i-PI xyz trajectory, in Angstrom."""
    lines = path.read_text().splitlines()
    frames = []
    k = 0
    while k < len(lines):
        if not lines[k].strip():
            k += 1
            continue
        frame = read_ipi_frame(lines, k, str(path))
        if frame.cell is None:
            raise ConfigError(f"{path}, line {k + 2}: no CELL(abcABC), CELL(H) or CELL(GENH) in the comment line")
        frames.append(
            Frame(
                list(frame.labels),
                frame.positions,
                frame.cell,
                _number(_STEP, frame.comment),
                bead=_number(_BEAD, frame.comment),
            )
        )
        k = frame.end
    return frames


# i-PI's pdb lines (ipi/utils/io/backends/io_pdb.py, print_pdb): "CRYST1%9.3f%9.3f%9.3f%7.2f%7.2f%7.2f"
# and "ATOM ... %8.3f%8.3f%8.3f" from column 31, as the PDB standard places them
_PDB_LENGTH = re.compile(r" *-?\d+\.\d{3}")
_PDB_ANGLE = re.compile(r" *-?\d+\.\d{2}")
_PDB_CELL = ((6, 15), (15, 24), (24, 33))
_PDB_ANGLES = ((33, 40), (40, 47), (47, 54))
_PDB_XYZ = ((30, 38), (38, 46), (46, 54))


def _pdb_numbers(line: str, columns, pattern: re.Pattern, where: str) -> list[float]:
    fields = [line[a:b] for a, b in columns]
    if not all(pattern.fullmatch(f) for f in fields):
        raise ConfigError(
            f"{where}: not i-PI's columns ({' '.join(repr(f) for f in fields)}: a number wider than its "
            f"column shifts the ones after it); write the trajectory as i-PI xyz"
        )
    return [float(f) for f in fields]


def read_ipi_pdb(path: Path) -> list[Frame]:
    """Frames of an i-PI pdb trajectory (TITLE with i-PI's words, CRYST1, ATOM lines, END),
    in Angstrom: i-PI writes Angstrom unless its words say otherwise."""
    from ase.geometry import cellpar_to_cell

    frames = []
    title, cellpar, symbols, positions, first = "", None, [], [], None
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        where = f"{path}, line {n}"
        first = first or n
        if line.startswith("TITLE"):
            title = line[5:]
        elif line.startswith("CRYST1"):
            cellpar = (
                _pdb_numbers(line, _PDB_CELL, _PDB_LENGTH, where),
                _pdb_numbers(line, _PDB_ANGLES, _PDB_ANGLE, where),
            )
        elif line.startswith(("ATOM  ", "HETATM")):
            symbols.append(line[12:16].strip())
            positions.append(_pdb_numbers(line, _PDB_XYZ, _PDB_LENGTH, where))
        elif line.strip() in ("END", "ENDMDL"):
            if not symbols:
                raise ConfigError(f"{where}: a frame without ATOM lines")
            if cellpar is None:
                raise ConfigError(f"{where}: a frame without a CRYST1 line (i-PI writes its cell there)")
            scale = ipi_units(title, f"{path}, line {first}", default="angstrom")
            lengths, angles = cellpar
            frames.append(
                Frame(
                    symbols,
                    np.array(positions, dtype=np.float64) * scale.positions,
                    cellpar_to_cell([x * scale.cell for x in lengths] + angles),
                    _number(_STEP, title),
                    bead=_number(_BEAD, title),
                )
            )
            title, cellpar, symbols, positions, first = "", None, [], [], None
    if symbols:
        raise ConfigError(f"{path}, line {first}: the last frame has no END line (the file ends)")
    return frames


def ipi_kind(path: Path) -> str | None:
    """``xyz``, ``pdb`` or ``ase`` (its extxyz) when ``path`` is a trajectory i-PI wrote in
    that format, found from its first two lines whatever the file's name; else None."""
    try:
        with open(path, "rb") as f:
            head = [f.readline(4096).decode("utf-8", errors="replace") for _ in range(2)]
    except OSError:
        return None
    if head[0].startswith("TITLE") and IPI_WORD.search(head[0]):
        return "pdb"
    if not head[0].strip().isdigit():
        return None
    if has_ipi_cell(head[1]):
        return "xyz"
    return "ase" if "ipi_comment=" in head[1] else None


#: --format's names for the formats ASE calls otherwise
_ASE_FORMATS = {"pdb": "proteindatabank"}


def read_frames(path: str | Path, fmt: str | None = None, aparam_array: str | None = None) -> list[Frame]:
    """Every frame of one trajectory file (i-PI's, or anything ASE reads); with
    ``aparam_array``, each frame's per-atom array of that name too."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"trajectory {path}: no such file")
    kind = ipi_kind(path)
    if kind in ("xyz", "pdb"):
        if aparam_array is not None:
            raise ConfigError(
                f"trajectory {path}: an i-PI {kind} file has no per-atom arrays, so no {aparam_array!r} "
                "for --aparam-array (use extended XYZ)"
            )
        return read_ipi_xyz(path) if kind == "xyz" else read_ipi_pdb(path)
    if fmt == "ipi" and kind is None:
        raise ConfigError(
            f"trajectory {path}: not a file of i-PI's (no CELL(...) on its second line as in i-PI's xyz, "
            "no TITLE with i-PI's units as in its pdb, no ipi_comment as in its extxyz)"
        )
    # i-PI's extxyz (format='ase') holds its cell in Lattice=, which ASE's plain xyz reader drops
    fmt = "extxyz" if kind == "ase" else _ASE_FORMATS.get(fmt, fmt)
    import ase.io

    images = []
    shown = _Reading(path)
    try:
        for atoms in ase.io.iread(path, index=":", format=fmt):
            images.append(atoms)
            shown(len(images))
    except Exception as exc:  # ASE raises many kinds
        raise ConfigError(f"trajectory {path}: ASE cannot read it: {' '.join(str(exc).split())}") from None
    finally:
        shown.done(len(images))
    dump = (fmt or "").startswith("lammps-dump") or (fmt is None and path.suffix in (".dump", ".lammpstrj"))
    typed = dump and dump_named_by_types(path)
    frames = []
    for k, atoms in enumerate(images):
        periodic = bool(atoms.pbc.any())
        positions = atoms.positions.copy()
        cell = atoms.cell.array.copy() if periodic else None
        step = atoms.info.get("step", atoms.info.get("timestep"))
        bead = None
        comment = atoms.info.get("ipi_comment")
        if isinstance(comment, str):
            # i-PI's format='ase' (extxyz) keeps its own comment line here: "Step: N  Bead: b positions{ase} ..."
            positions, cell = _ipi_extxyz(atoms, comment, positions, cell, f"trajectory {path}, frame {k}")
            step = step if step is not None else _number(_STEP, comment)
            bead = _number(_BEAD, comment)
        frames.append(
            Frame(
                atoms.get_chemical_symbols(),
                positions,
                cell,
                int(step) if step is not None else None,
                None if aparam_array is None else atom_array(atoms, aparam_array, f"trajectory {path}, frame {k}"),
                # without an element (or mass) column ASE names a dump's types by atomic number
                # (type 1: H); the model's type map names them
                np.asarray(atoms.arrays.get("type", atoms.numbers)).copy() if typed else None,
                bead=bead,
            )
        )
    return frames


def _ipi_extxyz(atoms, comment: str, positions: np.ndarray, cell: np.ndarray | None, where: str) -> tuple:
    """The positions and cell of a frame of i-PI's extxyz in Angstrom, as its ``ipi_comment``
    words give them (i-PI writes only ``ase`` units there: Angstrom); a trajectory of
    ``x_centroid`` holds its values in that array, not in the positions."""
    scale = ipi_units(comment, where, default="ase")
    if scale.quantity not in (None, "positions"):
        if scale.quantity not in atoms.arrays:
            raise ConfigError(f"{where}: i-PI's trajectory of {scale.quantity} without its {scale.quantity!r} column")
        positions = np.asarray(atoms.arrays[scale.quantity], dtype=np.float64).reshape(-1, 3).copy()
    return positions * scale.positions, None if cell is None else cell * scale.cell


def dump_named_by_types(path: Path) -> bool:
    """Whether a LAMMPS text dump names its atoms by type only: its first ``ITEM: ATOMS``
    line has a ``type`` column and no ``element`` or ``mass`` column, from which ASE
    (ase/io/lammpsrun.py, ``lammps_data_to_ase_atoms``) would take the elements."""
    try:
        with open(path, errors="replace") as f:
            for _, line in zip(range(100_000), f):
                if line.startswith("ITEM: ATOMS"):
                    columns = line.split()[2:]
                    return "type" in columns and "element" not in columns and "mass" not in columns
    except OSError:
        pass
    return True


class _Reading:
    """The count of frames read so far, on a terminal, from the first rank alone, at most
    every half second (reading a long trajectory takes seconds)."""

    def __init__(self, path: Path):
        self.path = path
        self.on = sys.stderr.isatty() and ranks.launch_rank() == 0
        self.last = time.monotonic()

    def __call__(self, n: int) -> None:
        if self.on and time.monotonic() - self.last > 0.5:
            self.last = time.monotonic()
            sys.stderr.write(f"\r  reading {self.path}: {n} frames ")
            sys.stderr.flush()

    def done(self, n: int) -> None:
        if self.on:
            sys.stderr.write(f"\r  reading {self.path}: {n} frames\n")
            sys.stderr.flush()


def name_dump_types(series: Sequence[list[Frame]], type_map: Sequence[str], trajectories: Sequence[str]) -> None:
    """Name the atoms of LAMMPS dump frames: type t is ``type_map[t - 1]`` (LAMMPS counts
    types from 1 in the model's type map, as ``pair_style deepmd`` and DP-GEN's inputs do)."""
    for path, frames in zip(trajectories, series):
        for k, frame in enumerate(frames):
            if frame.types is None:
                continue
            if frame.types.max() > len(type_map):
                raise ConfigError(
                    f"trajectory {path}, frame {k}: atom type {frame.types.max()} but the type map has "
                    f"{len(type_map)} names ({', '.join(type_map)}); give --type-map"
                )
            frame.symbols = [type_map[t - 1] for t in frame.types]
