"""The driver's direct PyTorch path against ``DeepPot.eval``, alternated step by step in one run.

    .venv/bin/python benchmarks/direct_vs_eval.py [--sizes 256 2048] [--steps 121]

The driver calls deepmd-kit's evaluator below ``DeepPot.eval`` (README, "The hot path").
Comparing two runs, one with ``ENSEMBLE_DRIVER_PLAIN_EVAL=1``, mixes the two paths with the
speed of two processes, which on a small virtual machine differ by 5-20% for the same
work. Here one driver process runs against a real i-PI (as in ``overhead.py``) and, once
the direct path has been checked against ``DeepPot.eval``, takes the direct path on odd
steps and ``DeepPot.eval`` on even ones, on the structures i-PI sends. Each pair of
neighbouring steps sees the same machine, so the ratio of their model calls measures the
paths alone. Printed per size: the median call of each path and the median of the
per-pair ratios (direct / DeepPot.eval; below 1: the direct path is faster).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead  # noqa: E402
from common import ROOT  # noqa: E402


def alternated(natoms: int, steps: int, workdir: Path) -> dict:
    from ensemble_driver import model as model_module

    evaluate = model_module.DeepPotModel.evaluate_batch
    times: dict[str, list[float]] = {"direct": [], "DeepPot.eval": []}

    def alternating(self, positions, cells, atom_types):
        if self._direct is None or not self._direct.checked:
            return evaluate(self, positions, cells, atom_types)  # warm-up and the check
        direct = len(times["direct"]) == len(times["DeepPot.eval"])
        start = time.perf_counter()
        result = (self._direct if direct else self._plain_eval)(positions, cells, atom_types)
        times["direct" if direct else "DeepPot.eval"].append(time.perf_counter() - start)
        return result

    model_module.DeepPotModel.evaluate_batch = alternating
    overhead.WARMUP = 10  # the clock's own statistics are not used here
    try:
        overhead.child(str(ROOT / "examples" / "models" / "m0.pth"), natoms, workdir, steps)
    finally:
        model_module.DeepPotModel.evaluate_batch = evaluate
    skip = 5  # pairs dropped: the first optimised TorchScript calls
    n = min(len(times["direct"]), len(times["DeepPot.eval"]))
    direct = np.array(times["direct"][skip:n])
    plain = np.array(times["DeepPot.eval"][skip:n])
    if len(direct) < 10:
        raise SystemExit(f"{natoms} atoms: only {len(direct)} pairs; raise --steps")
    return {
        "pairs": len(direct),
        "direct_ms": 1e3 * float(np.median(direct)),
        "eval_ms": 1e3 * float(np.median(plain)),
        "ratio": float(np.median(direct / plain)),
        "direct_faster": float(np.mean(direct < plain)),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 2048], choices=sorted(overhead.STEPS))
    parser.add_argument("--steps", type=int, default=121, help="i-PI steps per size (default: %(default)s)")
    parser.add_argument("--workdir", type=Path, default=Path("bench_output"))
    args = parser.parse_args()
    for natoms in args.sizes:
        r = alternated(natoms, args.steps, (args.workdir / "direct_vs_eval" / f"n{natoms}").resolve())
        print(
            f"{natoms:5d} atoms  {r['pairs']:4d} pairs  direct {r['direct_ms']:8.2f} ms  DeepPot.eval "
            f"{r['eval_ms']:8.2f} ms  direct / DeepPot.eval {r['ratio']:.3f} (pair medians; direct faster "
            f"in {100 * r['direct_faster']:.0f}% of pairs)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
