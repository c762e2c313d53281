"""Units and geometry at the edge of the wire: the only module that knows atomic units.

The i-PI protocol carries atomic units (Bohr, Hartree, Hartree/Bohr) and i-PI's cell
matrix ``h`` with the lattice vectors as COLUMNS. Everything past this module uses
DeePMD's and ASE's conventions: Angstrom, eV, eV/Angstrom, lattice vectors as ROWS.

Constants: CODATA 2014, the values of ``ase.units`` (ASE 3.29), so that a structure
sent by ASE's socket server, or written by i-PI in its ``ase`` units, round-trips
exactly. i-PI uses Bohr = 0.529177218 A and Ha = 27.21138341 eV and deepmd-kit's
``dp_ipi`` 0.52917721 A and 27.21138602 eV: relative differences of ~1e-7, far below
what a model can resolve.
"""

from __future__ import annotations

import numpy as np

#: Angstrom per Bohr (CODATA 2014, as ``ase.units.Bohr``).
BOHR_ANGSTROM = 0.5291772105638411
#: eV per Hartree (CODATA 2014, as ``ase.units.Hartree``).
HARTREE_EV = 27.211386024367243
#: (eV/Angstrom) per (Hartree/Bohr).
FORCE_AU_EV_ANGSTROM = HARTREE_EV / BOHR_ANGSTROM

#: Angstrom per unit, for i-PI's words for a length of atoms (``UnitMap["length"]`` of
#: ipi/utils/units.py, less its angles): i-PI's Angstrom and meter are exact multiples of
#: each other (1.8897261 and 1.8897261e10 Bohr), its ``ase`` is ASE's Angstrom, and its
#: atomic unit is taken as BOHR_ANGSTROM.
IPI_LENGTHS = {"atomic_unit": BOHR_ANGSTROM, "angstrom": 1.0, "ase": 1.0, "meter": 1e10}
#: i-PI's SI prefixes of a unit (``UnitPrefix``: nanometer, picometer, ...).
IPI_PREFIXES = {
    "yotta": 1e24, "zetta": 1e21, "exa": 1e18, "peta": 1e15, "tera": 1e12, "giga": 1e9, "mega": 1e6, "kilo": 1e3,
    "milli": 1e-3, "micro": 1e-6, "nano": 1e-9, "pico": 1e-12, "femto": 1e-15, "atto": 1e-18, "zepto": 1e-21,
    "yocto": 1e-24,
}  # fmt: skip


def ipi_length_angstrom(word: str) -> float | None:
    """Angstrom per i-PI length unit ``word``, parsed as i-PI parses it (an SI prefix if
    one begins the word, then the base unit, case-insensitively), or None when the word
    is no length of atoms the driver converts (``radian``, ``degree``, ``automatic``, an
    unknown word)."""
    for prefix, factor in IPI_PREFIXES.items():
        if word.startswith(prefix) and word[len(prefix) :].lower() in IPI_LENGTHS:
            return factor * IPI_LENGTHS[word[len(prefix) :].lower()]
    return IPI_LENGTHS.get(word.lower())


def cell_from_wire(h: np.ndarray) -> np.ndarray:
    """i-PI's cell ``h`` (3x3, vectors as columns, Bohr; or a stack (..., 3, 3)) -> cell
    with vectors as rows, Angstrom, same stacking."""
    h = np.asarray(h, dtype=np.float64)
    h = h.reshape(3, 3) if h.size == 9 else h
    return np.swapaxes(h, -1, -2) * BOHR_ANGSTROM


def positions_from_wire(positions: np.ndarray) -> np.ndarray:
    """Positions in Bohr (3*nat values, or a stack (frames, nat, 3)) -> (nat, 3), or the
    same stack, in Angstrom.

    Positions are used as sent: i-PI may send them unwrapped (outside the box), which
    DeePMD handles itself for periodic systems.
    """
    positions = np.asarray(positions, dtype=np.float64)
    return (positions if positions.ndim == 3 else positions.reshape(-1, 3)) * BOHR_ANGSTROM


def energy_to_wire(energy_ev):
    """eV -> Hartree (a number or an array)."""
    return np.asarray(energy_ev, dtype=np.float64) / HARTREE_EV


def forces_to_wire(forces_ev_angstrom: np.ndarray) -> np.ndarray:
    """(nat, 3) eV/Angstrom -> Hartree/Bohr, same shape."""
    return np.asarray(forces_ev_angstrom, dtype=np.float64) / FORCE_AU_EV_ANGSTROM


def virial_to_wire(virial_ev: np.ndarray) -> np.ndarray:
    """DeePMD's 3x3 virial (eV, -V * stress, not divided by the volume) -> i-PI's, Hartree.

    i-PI's virial is indexed like its column cell, so it is the transpose of DeePMD's
    (which is indexed like the row cell); the two agree for the symmetric virial of a
    rotationally invariant model, and the transpose keeps any asymmetry consistent.
    """
    virial = np.asarray(virial_ev, dtype=np.float64)
    virial = virial.reshape(3, 3) if virial.size == 9 else virial
    return np.swapaxes(virial, -1, -2) / HARTREE_EV
