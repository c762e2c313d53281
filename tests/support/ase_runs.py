"""ASE's socket server with the driver as its client: the Cu-Au structures the tests give
it and the launcher ASE starts the driver with (tests/peers/test_ase.py,
tests/peers/test_ensemble.py, tests/peers/test_uncertainty.py)."""

from __future__ import annotations

import subprocess

import numpy as np


def alloy(seed: int):
    """32 atoms of fcc Cu-Au (2x2x2 cubic cells, a = 3.87 Angstrom), 16 of each element in
    an order set by ``seed``."""
    from ase.build import bulk

    rng = np.random.default_rng(seed)
    atoms = bulk("Cu", "fcc", a=3.87, cubic=True).repeat((2, 2, 2))
    symbols = np.array(["Au"] * 16 + ["Cu"] * 16)
    rng.shuffle(symbols)
    atoms.set_chemical_symbols(list(symbols))
    return atoms


def structures(base, seed: int):
    """Rattled copies in strained triclinic cells (periodic) or just rattled (cluster)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(4):
        atoms = base.copy()
        if atoms.pbc.any():
            shear = np.eye(3) + rng.normal(scale=0.04, size=(3, 3))
            atoms.set_cell(atoms.cell.array @ shear, scale_atoms=True)
        atoms.rattle(stdev=0.08, seed=int(rng.integers(1 << 30)))
        out.append(atoms)
    return out


class Launcher:
    """ASE's launch_client hook: ASE then watches the client while it waits for it.

    ``build(unixsocket, port)`` returns the command line for the socket ASE chose."""

    def __init__(self, build, log_path):
        self.build, self.log_path = build, log_path
        self.proc: subprocess.Popen | None = None

    def __call__(self, atoms, properties=None, port=None, unixsocket=None):
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.build(unixsocket, port), stdout=self.log, stderr=subprocess.STDOUT)
        return self.proc


def driver_args(unixsocket, port) -> list[str]:
    return ["--unix", "--address", unixsocket] if unixsocket else ["--address", "localhost", "--port", str(port)]
