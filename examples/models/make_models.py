"""Regenerate the small Cu-Au DeePMD ensemble shipped in ``examples/models/``.

What it does, end to end, with nothing downloaded:

1. Labels reference frames with ASE's EMT calculator (an effective-medium potential
   for fcc metals, ASE's ``ase.calculators.emt``): a 32-atom random Cu-Au fcc alloy
   (2x2x2 conventional cells), sampled by Langevin MD at 300, 600 and 900 K in boxes
   strained by up to +-3 % (with a small random shear) so the virial is learned too.
2. Writes them in DeePMD's npy format (``set.000/coord.npy, box.npy, energy.npy,
   force.npy, virial.npy``, ``type.raw``, ``type_map.raw``), one training and one
   validation system.
3. Trains four small ``se_e2_a`` models with ``dp --pt train`` that differ only in their
   random seed (and, for models 2 and 3, in the order of their type map, so that the
   driver's symbol-based type matching is exercised by the shipped ensemble), and
   freezes each with ``dp --pt freeze``.

Run from anywhere (771 s on 2 CPU cores shared with other work, measured 2026-11-23):

    python examples/models/make_models.py            # writes examples/models/m{0..3}.pth
    python examples/models/make_models.py --steps 200 --out /tmp/quick   # smoke test

The models are deliberately tiny: they exist to test the driver and to run the demo,
not to study Cu-Au. Frames above 900 K are outside the training data, which is what the
deviation of the ensemble is meant to reveal.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
TYPE_MAP_DATA = ["Cu", "Au"]
# Models 2 and 3 list the elements in the other order on purpose (see docstring).
TYPE_MAPS = [["Cu", "Au"], ["Cu", "Au"], ["Au", "Cu"], ["Au", "Cu"]]
SEEDS = [1, 2, 3, 4]
LATTICE_A = 3.87  # Angstrom, EMT equilibrium of the 50/50 random alloy (zero pressure)


def make_alloy(rng: np.random.Generator):
    """A 32-atom fcc cell with 16 Cu and 16 Au on random sites."""
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=LATTICE_A, cubic=True).repeat((2, 2, 2))
    symbols = np.array(["Cu"] * 16 + ["Au"] * 16)
    rng.shuffle(symbols)
    atoms.set_chemical_symbols(list(symbols))
    return atoms


def label_frames(n_per_run: int, seed: int) -> list:
    """Sample frames by Langevin MD with EMT and return labelled ASE Atoms copies."""
    from ase import units
    from ase.calculators.emt import EMT
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    rng = np.random.default_rng(seed)
    frames = []
    for temperature in (300.0, 600.0, 900.0):
        for strain in (-0.03, 0.0, 0.03):
            atoms = make_alloy(rng)
            shear = rng.normal(scale=0.01, size=(3, 3))
            deform = np.eye(3) * (1.0 + strain) + 0.5 * (shear + shear.T)
            atoms.set_cell(atoms.cell.array @ deform, scale_atoms=True)
            atoms.calc = EMT()
            MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
            dyn = Langevin(
                atoms,
                timestep=2.0 * units.fs,
                temperature_K=temperature,
                friction=0.02,
                fixcm=False,
                rng=rng,
            )
            dyn.run(50)  # leave the perfect lattice
            for _ in range(n_per_run):
                dyn.run(10)
                frame = atoms.copy()
                frame.info["energy"] = atoms.get_potential_energy()
                frame.arrays["forces"] = atoms.get_forces()
                # DeePMD's virial is -V * stress (the convention of deepmd.calculator.DP).
                frame.info["virial"] = -atoms.get_volume() * atoms.get_stress(voigt=False)
                frames.append(frame)
    return frames


def write_deepmd_npy(frames: list, directory: Path) -> None:
    """Write frames as one DeePMD system (npy format, one set)."""
    # DeePMD wants one type array for the whole system: sort atoms of every frame the
    # same way (all frames of a run share the composition but not the site order).
    types_per_frame = [np.array([TYPE_MAP_DATA.index(s) for s in f.get_chemical_symbols()]) for f in frames]
    orders = [np.argsort(t, kind="stable") for t in types_per_frame]
    atype = types_per_frame[0][orders[0]]
    for t, o in zip(types_per_frame, orders):
        if not np.array_equal(t[o], atype):
            raise ValueError("all frames of a system must have the same composition")
    setdir = directory / "set.000"
    setdir.mkdir(parents=True, exist_ok=True)
    (directory / "type.raw").write_text("\n".join(str(t) for t in atype) + "\n")
    (directory / "type_map.raw").write_text("\n".join(TYPE_MAP_DATA) + "\n")
    np.save(setdir / "coord.npy", np.array([f.positions[o].ravel() for f, o in zip(frames, orders)]))
    np.save(setdir / "box.npy", np.array([f.cell.array.ravel() for f in frames]))
    np.save(setdir / "energy.npy", np.array([f.info["energy"] for f in frames]))
    np.save(setdir / "force.npy", np.array([f.arrays["forces"][o].ravel() for f, o in zip(frames, orders)]))
    np.save(setdir / "virial.npy", np.array([f.info["virial"].ravel() for f in frames]))


def training_input(train: Path, valid: Path, type_map: list[str], seed: int, steps: int) -> dict:
    """A small se_e2_a model: fast to train and to evaluate, good enough for a demo."""
    return {
        "model": {
            "type_map": type_map,
            "descriptor": {
                "type": "se_e2_a",
                "sel": [40, 40],
                # A small rcut_smth matters: with 4.0 the descriptor of these nearly
                # crystalline frames hardly varies, and the forces were not learned at all
                # (validation RMSE stayed at the 0.5 eV/A spread of the data).
                "rcut_smth": 0.5,
                "rcut": 5.0,
                "neuron": [8, 16, 32],
                "axis_neuron": 4,
                "resnet_dt": False,
                "set_davg_zero": True,
                "seed": seed,
            },
            "fitting_net": {"neuron": [32, 32, 32], "resnet_dt": True, "seed": seed},
        },
        "learning_rate": {
            "type": "exp",
            "decay_steps": max(steps // 20, 1),
            "start_lr": 1.0e-3,
            "stop_lr": 1.0e-5,
        },
        "loss": {
            "type": "ener",
            "start_pref_e": 0.02,
            "limit_pref_e": 1.0,
            "start_pref_f": 1000.0,
            "limit_pref_f": 1.0,
            "start_pref_v": 0.02,
            "limit_pref_v": 1.0,
        },
        "training": {
            "training_data": {"systems": [str(train)], "batch_size": 1},
            "validation_data": {"systems": [str(valid)], "batch_size": 1, "numb_btch": 4},
            "numb_steps": steps,
            "seed": seed,
            "disp_file": "lcurve.out",
            "disp_freq": max(steps // 10, 1),
            "save_freq": steps,
        },
    }


def run(cmd: list[str], cwd: Path) -> None:
    print("+", " ".join(cmd), f"(in {cwd})", flush=True)
    subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE, help="where m0.pth .. m3.pth go (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=4000, help="training steps per model (default: %(default)s)")
    parser.add_argument(
        "--frames-per-run", type=int, default=40, help="frames per (T, strain) MD run (default: %(default)s)"
    )
    parser.add_argument("--keep-workdir", action="store_true", help="keep the data and training directories")
    args = parser.parse_args(argv)

    dp = shutil.which("dp")
    if dp is None:
        sys.exit("make_models.py: the `dp` command of deepmd-kit is not on PATH")
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="ensemble_driver_models_"))
    frames = label_frames(args.frames_per_run, seed=2026)
    rng = np.random.default_rng(7)
    valid_idx = set(rng.choice(len(frames), size=max(len(frames) // 10, 4), replace=False).tolist())
    write_deepmd_npy([f for i, f in enumerate(frames) if i not in valid_idx], work / "data" / "train")
    write_deepmd_npy([f for i, f in enumerate(frames) if i in valid_idx], work / "data" / "valid")
    print(f"labelled {len(frames)} EMT frames in {time.perf_counter() - t0:.0f} s", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    for k, (type_map, seed) in enumerate(zip(TYPE_MAPS, SEEDS)):
        tdir = work / f"train{k}"
        tdir.mkdir()
        spec = training_input(work / "data" / "train", work / "data" / "valid", type_map, seed, args.steps)
        (tdir / "input.json").write_text(json.dumps(spec, indent=2))
        t_model = time.perf_counter()
        # (no --skip-neighbor-stat: the minimal neighbour distance it stores in the model
        # is what `dp --pt compress` needs)
        run([dp, "--pt", "train", "input.json"], tdir)
        run([dp, "--pt", "freeze", "-o", f"m{k}.pth"], tdir)
        shutil.copy(tdir / f"m{k}.pth", args.out / f"m{k}.pth")
        lcurve = (tdir / "lcurve.out").read_text().strip().splitlines()
        print(f"model {k}: {time.perf_counter() - t_model:.0f} s; last lcurve line: {lcurve[-1]}", flush=True)
    if args.keep_workdir:
        print(f"work directory kept: {work}")
    else:
        shutil.rmtree(work)
    print(f"wrote {args.out}/m0.pth .. m3.pth in {time.perf_counter() - t0:.0f} s total")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    raise SystemExit(main())
