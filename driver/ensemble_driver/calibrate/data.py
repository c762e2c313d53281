"""Reading labelled data for ``ensemble-driver calibrate``: structures with their
reference energies and forces, grouped in systems of the same atoms.

- deepmd/npy systems (a directory with ``type.raw``, ``type_map.raw`` and ``set.*/``
  holding ``coord``, ``box``, ``energy`` and ``force``), every one found below a given
  directory, so that a DP-GEN iteration's ``02.fp/data.*`` or a dpgen2 step's labelled
  data work as they are; deepmd/npy/mixed ones (``real_atom_types.npy``) too;
- deepmd/hdf5 files (``.hdf5``, ``.h5``): the system at the root or every group holding one;
- anything ASE reads with an energy and forces (extended XYZ from ASE, DP-GEN's
  ``ase/structure`` output): its frames, grouped by their atoms.

The deepmd formats are read with dpdata (``dpdata.LabeledSystem``, ``MultiSystems``), as
DP-GEN and dpgen2 write them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..devi.frames import Frame
from ..errors import ConfigError

HDF5_SUFFIXES = (".hdf5", ".h5")
DEEPMD_FORMATS = ("deepmd/npy", "deepmd/npy/mixed", "deepmd/hdf5")


@dataclass
class Labelled:
    """Frames of the same atoms with their reference labels (eV, eV/Angstrom)."""

    name: str  # where it came from: the path, and the system inside it
    frames: list[Frame]
    energies: np.ndarray  # (n,)
    forces: np.ndarray  # (n, nat, 3)
    indices: list[int] = field(default_factory=list)  # each frame's index in its source


def read_labelled(path: str | Path, fmt: str | None = None) -> list[Labelled]:
    """The systems of one data path (see the module's text); ``fmt`` one of
    ``DEEPMD_FORMATS`` or an ASE format name, None: from the path."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"data {path}: no such file or directory")
    if fmt is None:
        fmt = "deepmd/npy" if path.is_dir() else "deepmd/hdf5" if path.suffix.lower() in HDF5_SUFFIXES else None
    if fmt in ("deepmd/npy", "deepmd/npy/mixed"):
        if not path.is_dir():
            raise ConfigError(f"data {path}: a deepmd/npy system is a directory")
        found = [s for d in _npy_systems(path) for s in _read_dpdata(d, _npy_format(d), path)]
        if not found:
            raise ConfigError(f"data {path}: no deepmd/npy system in it (no directory with type.raw and set.*)")
        return found
    if fmt == "deepmd/hdf5":
        return _read_hdf5(path)
    if path.is_dir():
        raise ConfigError(f"data {path}: a directory, but --format {fmt} reads files")
    return _read_ase(path, fmt)


def _npy_systems(root: Path) -> list[Path]:
    """Every directory at or below ``root`` holding a deepmd/npy system, in sorted order
    (symbolic links to directories are not followed, as DP-GEN links its data)."""
    found = []
    for directory, subdirs, files in os.walk(root):
        if "type.raw" in files or ("type_map.raw" in files and any(d.startswith("set.") for d in subdirs)):
            found.append(Path(directory))
    return sorted(found)


def _npy_format(directory: Path) -> str:
    return "deepmd/npy/mixed" if any(directory.glob("set.*/real_atom_types.npy")) else "deepmd/npy"


def _read_hdf5(path: Path) -> list[Labelled]:
    import h5py

    groups: list[str] = []

    def visit(name: str, obj) -> None:
        if isinstance(obj, h5py.Group) and "type.raw" in obj:
            groups.append(name)

    try:
        with h5py.File(path, "r") as f:
            if "type.raw" in f:
                groups.append("")
            else:
                f.visititems(visit)
    except OSError as exc:
        raise ConfigError(f"data {path}: not an HDF5 file ({' '.join(str(exc).split())})") from None
    if not groups:
        raise ConfigError(f"data {path}: no deepmd/hdf5 system in it (no group with type.raw)")
    return [s for g in sorted(groups) for s in _read_dpdata(f"{path}#/{g}" if g else str(path), "deepmd/hdf5", path)]


def _read_dpdata(source, fmt: str, given: Path) -> list[Labelled]:
    """One deepmd/npy or deepmd/hdf5 system (a mixed one may hold several) through dpdata."""
    try:
        import dpdata
    except ImportError:
        raise ConfigError(f"data {given}: reading {fmt} needs dpdata (pip install dpdata)") from None

    name = str(source)
    try:
        if fmt == "deepmd/npy/mixed":
            systems = list(dpdata.MultiSystems.from_file(str(source), fmt=fmt).systems.values())
        else:
            systems = [dpdata.LabeledSystem(str(source), fmt=fmt)]
    except Exception as exc:  # dpdata's DataError, numpy's and h5py's errors
        text = " ".join(str(exc).split())
        raise ConfigError(f"data {name}: {text} (calibrate needs reference energies and forces)") from None
    out = []
    for k, system in enumerate(systems):
        data = system.data
        for key, what in (("energies", "energies"), ("forces", "forces")):
            if key not in data:
                raise ConfigError(f"data {name}: no {what} (calibrate needs reference energies and forces)")
        symbols = [data["atom_names"][t] for t in data["atom_types"]]
        n = len(data["coords"])
        frames = [
            Frame(
                list(symbols),
                np.asarray(data["coords"][j], dtype=np.float64),
                None if system.nopbc else np.asarray(data["cells"][j], dtype=np.float64),
                None,
            )
            for j in range(n)
        ]
        label = name if len(systems) == 1 else f"{name}[{k}]"
        out.append(_labelled(label, frames, data["energies"], data["forces"], list(range(n))))
    return out


def _labelled(name: str, frames: list[Frame], energies, forces, indices: list[int]) -> Labelled:
    energies = np.asarray(energies, dtype=np.float64).reshape(len(frames))
    forces = np.asarray(forces, dtype=np.float64).reshape(len(frames), -1, 3)
    bad = [indices[j] for j in range(len(frames)) if not (np.isfinite(energies[j]) and np.isfinite(forces[j]).all())]
    if bad:
        raise ConfigError(f"data {name}, frame {bad[0]}: its reference energy or forces are not finite")
    return Labelled(name, frames, energies, forces, indices)


def _read_ase(path: Path, fmt: str | None) -> list[Labelled]:
    """Every frame ASE reads from ``path``, with its energy and forces, grouped by atoms
    (the order of the elements too), each group in the file's order."""
    import ase.io

    try:
        images = ase.io.read(path, index=":", format=fmt)
    except Exception as exc:  # ASE raises many kinds
        raise ConfigError(f"data {path}: ASE cannot read it: {' '.join(str(exc).split())}") from None
    groups: dict[tuple, list] = {}
    for k, atoms in enumerate(images):
        energy, forces = _labels(atoms, f"data {path}, frame {k}")
        periodic = bool(atoms.pbc.any())
        frame = Frame(
            atoms.get_chemical_symbols(), atoms.positions.copy(), atoms.cell.array.copy() if periodic else None, None
        )
        groups.setdefault((tuple(frame.symbols), periodic), []).append((k, frame, energy, forces))
    if not groups:
        raise ConfigError(f"data {path}: no frames")
    out = []
    for g, members in enumerate(groups.values()):
        name = str(path) if len(groups) == 1 else f"{path}[atoms {g}]"
        out.append(
            _labelled(
                name,
                [m[1] for m in members],
                [m[2] for m in members],
                np.stack([m[3] for m in members]),
                [m[0] for m in members],
            )
        )
    return out


def _labels(atoms, where: str) -> tuple[float, np.ndarray]:
    """The reference energy and forces of an ASE frame (its calculator's results, as ASE
    reads extended XYZ: ``energy=`` and the ``forces`` array)."""
    results = getattr(atoms.calc, "results", {}) if atoms.calc is not None else {}
    energy = results.get("energy", atoms.info.get("energy"))
    forces = results.get("forces", atoms.arrays.get("forces"))
    if energy is None or forces is None:
        missing = " and ".join(n for n, v in (("energy", energy), ("forces", forces)) if v is None)
        raise ConfigError(f"{where}: no {missing} (calibrate needs reference energies and forces)")
    return float(energy), np.asarray(forces, dtype=np.float64)
