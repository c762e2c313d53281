"""The driver's direct PyTorch path against ``DeepPot.eval``, alternated step by step in one run.

    .venv/bin/python benchmarks/direct_vs_eval.py [--sizes 256 2048] [--steps 121]

The driver calls deepmd-kit's evaluator below ``DeepPot.eval`` (benchmarks/README.md, "The hot path").
Comparing two runs, one with ``ENSEMBLE_DRIVER_PLAIN_EVAL=1``, mixes the two paths with the
speed of two processes, which on a small virtual machine differ by 5-20% for the same
work. Here one driver process runs against a real i-PI (as in ``overhead.py``) and, once
the direct path has been checked against ``DeepPot.eval``, takes the direct path on odd
steps and ``DeepPot.eval`` on even ones, on the structures i-PI sends. Each pair of
neighbouring steps sees the same machine, so the ratio of their model calls measures the
paths alone. Printed per size: the median call of each path and the median of the
per-pair ratios (direct / DeepPot.eval; below 1: the direct path is faster). A table
(Markdown, JSON) and a PNG go to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead  # noqa: E402
from common import HERE, ROOT, grouped_bars  # noqa: E402


def alternated(natoms: int, steps: int, workdir: Path) -> dict:
    from ensemble_driver.models import deepmd as model_module

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
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where the table and plot go")
    parser.add_argument("--workdir", type=Path, default=Path("bench_output"))
    args = parser.parse_args()
    started, rows = time.time(), []
    for natoms in args.sizes:
        r = alternated(natoms, args.steps, (args.workdir / "direct_vs_eval" / f"n{natoms}").resolve())
        rows.append({"natoms": natoms, **r})
        print(
            f"{natoms:5d} atoms  {r['pairs']:4d} pairs  direct {r['direct_ms']:8.2f} ms  DeepPot.eval "
            f"{r['eval_ms']:8.2f} ms  direct / DeepPot.eval {r['ratio']:.3f} (pair medians; direct faster "
            f"in {100 * r['direct_faster']:.0f}% of pairs)",
            flush=True,
        )
    header = (
        f"The driver's direct path against DeepPot.eval, alternated step by step in one i-PI run "
        f"({args.steps} steps per size); measured {time.strftime('%Y-%m-%d')} in {(time.time() - started) / 60:.0f} min."
    )
    write_results(rows, args.out, header)
    return 0


def write_results(rows: list[dict], out: Path, header: str) -> None:
    """direct_vs_eval.md (``header``, then a row per size), .json, .png."""
    lines = [
        header,
        "",
        "| atoms | pairs | direct ms | DeepPot.eval ms | direct / DeepPot.eval (median of pairs) | direct faster in |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        faster = "" if r.get("direct_faster") is None else f"{100 * r['direct_faster']:.0f}% of pairs"
        lines.append(
            f"| {r['natoms']} | {r['pairs']} | {r['direct_ms']:.1f} | {r['eval_ms']:.1f} | {r['ratio']:.3f} | {faster} |"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "direct_vs_eval.md").write_text("\n".join(lines) + "\n")
    (out / "direct_vs_eval.json").write_text(json.dumps(rows, indent=1) + "\n")
    grouped_bars(
        out / "direct_vs_eval.png",
        [f"{r['natoms']} atoms" for r in rows],
        {"direct / DeepPot.eval": [r["ratio"] for r in rows]},
        ylabel="model call, direct / DeepPot.eval",
        hline=1.0,
        title="The driver's direct path against DeepPot.eval (below 1: direct faster)",
        figsize=(6, 4),
    )


if __name__ == "__main__":
    raise SystemExit(main())
