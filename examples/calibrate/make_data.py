"""Labelled Cu-Au data for ``ensemble-driver calibrate``: the shipped models' own domain
and beyond it, labelled by ASE's EMT (the potential the models were trained on, see
``examples/models/make_models.py``), written as a DP-GEN iteration would hold it.

Systems (each a 32-atom random Cu-Au fcc alloy, 2x2x2 conventional cells, a = 3.87
Angstrom, sampled by Langevin MD with EMT every 10 steps after 50 steps to leave the
lattice):

- inside the training data: 300, 600 and 900 K, strained by -3, 0 and +3 % (the models
  were trained on 300-900 K and +-3 % strain);
- beyond it: hotter (1500 and 2500 K) and compressed (-8 % at 600 K, and -6 % at 1500 K).

Written to ``--out`` as deepmd/npy systems (``npy/sys.000`` ..: ``type.raw``,
``type_map.raw``, ``set.000/{coord,box,energy,force,virial}.npy``), one deepmd/hdf5 file
(``data.hdf5``, one group per system) and one extended XYZ file with energy and forces
(``frames.extxyz``); the three hold the same frames in the same order.

    python examples/calibrate/make_data.py --out calibrate_data            # 120 frames, ~10 s
    ensemble-driver calibrate calibrate_data/npy --models examples/models/m?.pth \\
        --error-target 0.3 -o calib.png

The figure in docs/active-learning.md was made by these two commands (``-o
docs/img/calibrate.png``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

TYPE_MAP = ["Cu", "Au"]
LATTICE_A = 3.87  # Angstrom, as examples/models/make_models.py
#: (temperature K, strain): inside the models' training data, then beyond it
INSIDE = [(t, s) for t in (300.0, 600.0, 900.0) for s in (-0.03, 0.0, 0.03)]
BEYOND = [(1500.0, 0.0), (2500.0, 0.0), (600.0, -0.08), (1500.0, -0.06)]


def alloy(rng: np.random.Generator, strain: float):
    """A 32-atom fcc Cu16Au16 cell on random sites, strained with a small random shear."""
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=LATTICE_A, cubic=True).repeat((2, 2, 2))
    symbols = np.array(["Cu"] * 16 + ["Au"] * 16)
    rng.shuffle(symbols)
    atoms.set_chemical_symbols(list(symbols))
    shear = rng.normal(scale=0.01, size=(3, 3))
    atoms.set_cell(atoms.cell.array @ (np.eye(3) * (1.0 + strain) + 0.5 * (shear + shear.T)), scale_atoms=True)
    return atoms


def sample(temperature: float, strain: float, frames: int, rng: np.random.Generator) -> list:
    """Frames of a Langevin run with EMT, each an ASE Atoms with its energy and forces
    (a SinglePointCalculator, as ASE reads them back from extended XYZ)."""
    from ase import units
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.md import velocitydistribution
    from ase.md.langevin import Langevin

    atoms = alloy(rng, strain)
    atoms.calc = EMT()
    # ASE 3.29 renamed MaxwellBoltzmannDistribution (same draw)
    thermalize = getattr(velocitydistribution, "thermalize_momenta", velocitydistribution.MaxwellBoltzmannDistribution)
    thermalize(atoms, temperature_K=temperature, rng=rng)
    dyn = Langevin(atoms, timestep=2.0 * units.fs, temperature_K=temperature, friction=0.02, fixcm=False, rng=rng)
    dyn.run(50)
    out = []
    for _ in range(frames):
        dyn.run(10)
        frame = atoms.copy()
        frame.calc = SinglePointCalculator(frame, energy=atoms.get_potential_energy(), forces=atoms.get_forces())
        out.append(frame)
    return out


def make_systems(frames: int, seed: int = 5) -> list[list]:
    """One list of labelled frames per condition, inside first, then beyond."""
    rng = np.random.default_rng(seed)
    return [sample(t, s, frames, rng) for t, s in INSIDE + BEYOND]


def write_npy(frames: list, directory: Path) -> None:
    """One deepmd/npy system, the atoms in their own order (type.raw per atom)."""
    (directory / "set.000").mkdir(parents=True, exist_ok=True)
    symbols = frames[0].get_chemical_symbols()
    (directory / "type_map.raw").write_text("\n".join(TYPE_MAP) + "\n")
    (directory / "type.raw").write_text("\n".join(str(TYPE_MAP.index(s)) for s in symbols) + "\n")
    arrays = {
        "coord": [a.positions.ravel() for a in frames],
        "box": [a.cell.array.ravel() for a in frames],
        "energy": [a.get_potential_energy() for a in frames],
        "force": [a.get_forces().ravel() for a in frames],
    }
    for name, values in arrays.items():
        np.save(directory / "set.000" / f"{name}.npy", np.array(values, dtype=np.float64))


def write_all(systems: list[list], out: Path) -> dict[str, Path]:
    """The systems as deepmd/npy directories, one deepmd/hdf5 file (written by dpdata
    from the npy systems, one group each) and one extended XYZ file."""
    import dpdata
    import h5py
    from ase.io import write

    out.mkdir(parents=True, exist_ok=True)
    npy = out / "npy"
    names = [f"sys.{k:03d}" for k in range(len(systems))]
    for name, frames in zip(names, systems):
        write_npy(frames, npy / name)
    with h5py.File(out / "data.hdf5", "w") as f:
        for name in names:
            dpdata.LabeledSystem(str(npy / name), fmt="deepmd/npy").to("deepmd/hdf5", f.create_group(name))
    write(out / "frames.extxyz", [a for frames in systems for a in frames], format="extxyz")
    return {"npy": npy, "hdf5": out / "data.hdf5", "extxyz": out / "frames.extxyz"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="calibrate_data", help="output directory (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=10, help="frames per system (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=5, help="random seed (default: %(default)s)")
    args = parser.parse_args()
    systems = make_systems(args.frames, args.seed)
    paths = write_all(systems, Path(args.out))
    total = sum(len(s) for s in systems)
    print(f"{total} labelled frames in {len(systems)} systems: " + ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()
