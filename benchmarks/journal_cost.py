"""What the journal (ensemble/journal.py) costs a step, against model 0's evaluation of
the same 32-atom structure, measured side by side in one process.

The journal is what makes a replacement driver exact: per structure received, the
evaluation's number and the hash of the structure as it came off the wire (``number``),
and per row-due structure a copy until its row is written (``hold``, ``release``). The
worst case is timed: a row due at every step (--out-freq 1). A plain step costs at least
model 0's evaluation (i-PI's round trip comes on top), so the ratio printed is an upper
bound of the journal's share of a plain step. Rounds alternate the two; the median of
each is reported.

    .venv/bin/python benchmarks/journal_cost.py [--calls 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, write_structures  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000, help="steps timed per round (default: 2000)")
    parser.add_argument("--rounds", type=int, default=5, help="alternated rounds (default: 5)")
    args = parser.parse_args()

    import ase.io

    from ensemble_driver.ensemble.journal import Journal
    from ensemble_driver.models.deepmd import DeepPotModel
    from ensemble_driver.wire import units

    with tempfile.TemporaryDirectory() as tmp:
        ipi, extxyz = write_structures(Path(tmp), 32)
        atoms = ase.io.read(extxyz)
        model = DeepPotModel(ROOT / "examples" / "models" / "m0.pth")
        types = model.atom_types(atoms.get_chemical_symbols(), template=str(extxyz))
        positions, cell = atoms.positions, np.array(atoms.cell)
        # the arrays as they come off the wire: i-PI's cell matrix (columns) and positions (Bohr)
        h, q = np.ascontiguousarray(cell.T) / units.BOHR_ANGSTROM, positions / units.BOHR_ANGSTROM
        journal = Journal.create(Path(tmp) / "journal", natoms=32, ids=1, ring=24, first_step=0)
        model.warm_up(positions, cell, types)

        def model_round() -> float:
            start = time.perf_counter()
            for _ in range(args.calls):
                model.evaluate(positions, cell, types)
            return (time.perf_counter() - start) / args.calls

        def journal_round() -> float:
            start = time.perf_counter()
            for step in range(args.calls):
                evaluation = journal.number(0, h, q)
                journal.release(journal.hold(0, evaluation + step, cell, positions))
            return (time.perf_counter() - start) / args.calls

        model_s, journal_s = [], []
        for _ in range(args.rounds):
            model_s.append(model_round())
            journal_s.append(journal_round())
        journal.close()
    m, j = statistics.median(model_s), statistics.median(journal_s)
    print(f"model 0 on 32 atoms: {1e3 * m:.3f} ms per call (rounds: {', '.join(f'{1e3 * x:.3f}' for x in model_s)})")
    print(
        f"journal per step, a row every step: {1e6 * j:.2f} us (rounds: {', '.join(f'{1e6 * x:.2f}' for x in journal_s)})"
    )
    print(f"journal / model 0 evaluation: {100 * j / m:.3f} %")


if __name__ == "__main__":
    main()
