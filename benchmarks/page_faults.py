"""Kernel time of a model call: page faults with and without torch's huge-page allocation.

    .venv/bin/python benchmarks/page_faults.py [--sizes 256 2048] [--rounds 2] [--calls 8]

Each configuration runs in a fresh process (torch reads ``THP_MEM_ALLOC_ENABLE`` once):
the driver's model 0 (``DeepPotModel``, as the driver loads and warms it up) evaluates a
random walk from the alloy's lattice; after 4 calls it counts, over ``--calls`` calls,
the minor page faults (``getrusage``), the user and kernel CPU time (both threads) and the
wall time per call. The configurations alternate, round after round. Page faults and
kernel time are counts of work done, not clock readings, so they are steady where this
machine's speed is not; the forces of the two configurations are compared bit for bit.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPEATS, ROOT  # noqa: E402


def measure(natoms: int, calls: int) -> dict:
    from ase.build import bulk

    from ensemble_driver.model import DeepPotModel

    atoms = bulk("Cu", "fcc", a=3.87, cubic=True).repeat(REPEATS[natoms])
    atoms.symbols[::2] = "Au"
    model = DeepPotModel(ROOT / "examples" / "models" / "m0.pth")
    types = model.atom_types(atoms.get_chemical_symbols())
    cell = atoms.cell.array
    model.warm_up(atoms.positions, cell, types)
    rng = np.random.default_rng(1)
    positions = atoms.positions.copy()
    for _ in range(4):
        positions = positions + rng.normal(0, 0.01, positions.shape)
        model.evaluate(positions, cell, types)
    before, walls = resource.getrusage(resource.RUSAGE_SELF), []
    for _ in range(calls):
        positions = positions + rng.normal(0, 0.01, positions.shape)
        start = time.perf_counter()
        forces = model.evaluate(positions, cell, types).forces
        walls.append(time.perf_counter() - start)
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "faults": (after.ru_minflt - before.ru_minflt) / calls,
        "user_ms": 1e3 * (after.ru_utime - before.ru_utime) / calls,
        "sys_ms": 1e3 * (after.ru_stime - before.ru_stime) / calls,
        "wall_ms": 1e3 * float(np.median(walls)),
        "forces_sum": float(np.abs(forces).sum()),
        "forces_hash": hash(forces.tobytes()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 2048], choices=sorted(REPEATS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.calls)))
        return 0
    configs = {"4 kB pages (THP_MEM_ALLOC_ENABLE=0)": "0", "huge pages (the driver's default)": "1"}
    for natoms in args.sizes:
        runs: dict[str, list[dict]] = {name: [] for name in configs}
        for r in range(args.rounds):
            for name, value in configs.items() if r % 2 == 0 else reversed(configs.items()):
                out = subprocess.run(
                    [sys.executable, __file__, "--child", str(natoms), "--calls", str(args.calls)],
                    env={**os.environ, "THP_MEM_ALLOC_ENABLE": value, "PYTHONHASHSEED": "0"},
                    capture_output=True,
                    text=True,
                    timeout=1800,
                )
                if out.returncode:
                    raise SystemExit(out.stderr[-3000:])
                runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
                x = runs[name][-1]
                print(
                    f"{natoms:5d} atoms  {name:38s} faults/call {x['faults']:8.0f}  user {x['user_ms']:7.1f}  "
                    f"kernel {x['sys_ms']:7.1f}  wall {x['wall_ms']:7.1f} ms/call",
                    flush=True,
                )
        hashes = {x["forces_hash"] for rs in runs.values() for x in rs}
        print(f"{natoms:5d} atoms  forces of all runs identical bit for bit: {len(hashes) == 1}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
