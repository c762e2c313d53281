"""Reading existing trajectories for ``ensemble-driver devi``: i-PI's xyz files here (ASE
would take their Bohr for Angstrom), everything else through ASE, as ``Frame`` objects in
Angstrom with their step (i-PI's ``Step:``, extxyz ``step=``, a dump's timestep) when the
file carries one."""

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
from ..wire.template import atom_array, read_ipi_frame

_STEP = re.compile(r"Step:\s*(\d+)")


@dataclass
class Frame:
    symbols: list[str]
    positions: np.ndarray  # (nat, 3) Angstrom
    cell: np.ndarray | None  # (3, 3) Angstrom, rows = lattice vectors; None: not periodic
    step: int | None
    aparam: np.ndarray | None = None  # (nat, k): the --aparam-array values of this frame
    types: np.ndarray | None = None  # a LAMMPS dump's atom types (from 1), until named by a type map


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
        step = _STEP.search(frame.comment)
        frames.append(Frame(list(frame.labels), frame.positions, frame.cell, int(step.group(1)) if step else None))
        k = frame.end
    return frames


def is_ipi_xyz(path: Path) -> bool:
    with open(path, errors="replace") as f:
        f.readline()
        return "CELL(" in f.readline()


def read_frames(path: str | Path, fmt: str | None = None, aparam_array: str | None = None) -> list[Frame]:
    """Every frame of one trajectory file (i-PI xyz or anything ASE reads); with
    ``aparam_array``, each frame's per-atom array of that name too."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"trajectory {path}: no such file")
    if fmt in (None, "ipi") and path.suffix == ".xyz" and is_ipi_xyz(path):
        if aparam_array is not None:
            raise ConfigError(
                f"trajectory {path}: an i-PI xyz file has no per-atom arrays, so no {aparam_array!r} "
                "for --aparam-array (use extended XYZ)"
            )
        return read_ipi_xyz(path)
    if fmt == "ipi":
        raise ConfigError(f"trajectory {path}: not an i-PI xyz file (no CELL(...) on its second line)")
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
        step = atoms.info.get("step", atoms.info.get("timestep"))
        if step is None and isinstance(atoms.info.get("ipi_comment"), str):
            # i-PI's format='ase' (extxyz) keeps its own comment line here: "Step: N  Bead: b ..."
            found = _STEP.search(atoms.info["ipi_comment"])
            step = found.group(1) if found else None
        frames.append(
            Frame(
                atoms.get_chemical_symbols(),
                atoms.positions.copy(),
                atoms.cell.array.copy() if periodic else None,
                int(step) if step is not None else None,
                None if aparam_array is None else atom_array(atoms, aparam_array, f"trajectory {path}, frame {k}"),
                # without an element (or mass) column ASE names a dump's types by atomic number
                # (type 1: H); the model's type map names them
                np.asarray(atoms.arrays.get("type", atoms.numbers)).copy() if typed else None,
            )
        )
    return frames


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
