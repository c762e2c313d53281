"""The model's share of a step: DeepPot.eval in-process, in a fresh process.

    python model_time.py MODEL STRUCTURE [CALLS]

Prints the median wall time of one evaluation in milliseconds, after 5 warm-up calls
(TorchScript models run their first calls slowly while they optimise themselves).
"""

import statistics
import sys
import time

import ase.io
from deepmd.infer import DeepPot


def main() -> int:
    if len(sys.argv) not in (3, 4) or sys.argv[1] in ("-h", "--help"):
        print(__doc__, file=sys.stderr)
        return 2
    model, structure = sys.argv[1:3]
    calls = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    atoms = ase.io.read(structure)
    dp = DeepPot(model)
    type_map = dp.get_type_map()
    atype = [type_map.index(s) for s in atoms.get_chemical_symbols()]
    coords, cell = atoms.positions.reshape(1, -1), atoms.cell.array.reshape(1, 9)
    for _ in range(5):
        dp.eval(coords, cell, atype)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        dp.eval(coords, cell, atype)
        times.append(time.perf_counter() - t0)
    print(f"{statistics.median(times) * 1000:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
