"""Kernel time of a model call: page faults with and without torch's huge-page allocation.

    .venv/bin/python benchmarks/page_faults.py [--sizes 256 2048] [--rounds 2] [--calls 8]

Each configuration runs in a fresh process (torch reads ``THP_MEM_ALLOC_ENABLE`` once):
the driver's model 0 (``DeepPotModel``, as the driver loads and warms it up) evaluates a
random walk from the alloy's lattice; after 4 calls it counts, over ``--calls`` calls,
the minor page faults (``getrusage``), the user and kernel CPU time (both threads) and the
wall time per call. The configurations alternate, round after round. Page faults and
kernel time are counts of work done, not clock readings, so they are steady where this
machine's speed is not; the forces of the two configurations are compared bit for bit.
A table (Markdown, JSON) and a PNG go to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HERE, REPEATS, ROOT, grouped_bars  # noqa: E402

CONFIGS = {"4 kB pages (THP_MEM_ALLOC_ENABLE=0)": "0", "huge pages (the driver's default)": "1"}


def measure(natoms: int, calls: int) -> dict:
    from ase.build import bulk

    from ensemble_driver.models.deepmd import DeepPotModel

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


def run_config(natoms: int, calls: int, thp: str) -> dict:
    """One fresh process with THP_MEM_ALLOC_ENABLE=thp: its ``measure``."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(natoms), "--calls", str(calls)],
        env={**os.environ, "THP_MEM_ALLOC_ENABLE": thp, "PYTHONHASHSEED": "0"},
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 2048], choices=sorted(REPEATS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--calls", type=int, default=8)
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where the table and plot go")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.calls)))
        return 0
    started, rows = time.time(), []
    for natoms in args.sizes:
        runs: dict[str, list[dict]] = {name: [] for name in CONFIGS}
        for r in range(args.rounds):
            for name, value in CONFIGS.items() if r % 2 == 0 else reversed(CONFIGS.items()):
                runs[name].append(x := run_config(natoms, args.calls, value))
                print(
                    f"{natoms:5d} atoms  {name:38s} faults/call {x['faults']:8.0f}  user {x['user_ms']:7.1f}  "
                    f"kernel {x['sys_ms']:7.1f}  wall {x['wall_ms']:7.1f} ms/call",
                    flush=True,
                )
        same = len({x["forces_hash"] for rs in runs.values() for x in rs}) == 1
        print(f"{natoms:5d} atoms  forces of all runs identical bit for bit: {same}", flush=True)
        rows += [{"natoms": natoms, "pages": name, "runs": rs, "forces_identical": same} for name, rs in runs.items()]
    header = (
        f"Page faults of a model call, fresh processes alternated; measured {time.strftime('%Y-%m-%d')} "
        f"in {(time.time() - started) / 60:.0f} min, {args.rounds} runs of {args.calls} calls each."
    )
    write_results(rows, args.out, header)
    return 0


def write_results(rows: list[dict], out: Path, header: str) -> None:
    """page_faults.md (``header``, then a row per size and pages, the runs in turn), .json, .png."""
    lines = [
        header,
        "",
        "| atoms | pages | faults / call | kernel CPU ms / call | user CPU ms / call | wall ms / call | "
        "forces identical |",
        "|---|---|---|---|---|---|---|",
    ]

    def each(r: dict, key: str, fmt: str) -> str:
        return " and ".join(format(x[key], fmt) for x in r["runs"] if x.get(key) is not None)

    for r in rows:
        lines.append(
            f"| {r['natoms']} | {r['pages']} | {each(r, 'faults', ',.0f')} | {each(r, 'sys_ms', '.0f')} | "
            f"{each(r, 'user_ms', '.0f')} | {each(r, 'wall_ms', '.0f')} | {'yes' if r['forces_identical'] else 'NO'} |"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "page_faults.md").write_text("\n".join(lines) + "\n")
    (out / "page_faults.json").write_text(json.dumps(rows, indent=1) + "\n")
    sizes = sorted({r["natoms"] for r in rows})
    grouped_bars(
        out / "page_faults.png",
        [f"{n} atoms" for n in sizes],
        {
            f"{name.split(' (')[0]}: {what}": [
                statistics.median(x[key] for r in rows if r["natoms"] == n and r["pages"] == name for x in r["runs"])
                for n in sizes
            ]
            for name in CONFIGS
            for what, key in (("kernel CPU", "sys_ms"), ("wall", "wall_ms"))
        },
        ylabel="ms per model call",
        title="A model call's kernel time and wall time, 4 kB pages vs huge pages",
    )


if __name__ == "__main__":
    raise SystemExit(main())
