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
