"""Scale-out of one MPI job over a path-integral run: model 0 on one rank or on two.

i-PI runs ``ipi_inputs/pimd.xml`` (32 atoms, consolidated messages) with P = 8 and 32
beads; the ensemble is models 0 and 1 with a deviation every 10 steps, so every layout
writes per-bead rows. Layouts (each i-PI step timed by i-PI itself):

- one driver, a request per bead: model 0 on rank 0, model 1 on rank 1 (``mpiexec -n 2``);
- two independent drivers (model 0 only, one thread each): what i-PI users do for speed,
  whose deviation files would be wrong (each counts only the beads it happened to get);
- ``--connections 2``: two connections from one job, model 0 on ranks 0 and 1 (one
  thread each), model 1 on rank 2;
- one driver, batches of P (``<batch_size>P</batch_size>``);
- ``--model0-ranks 2``, batches of P: each batch split over ranks 0 and 1 (one thread each).

The rows of every layout that writes them are compared with those of the one-driver run
(same input, same seed): "identical" means byte for byte, else the largest relative
difference of a printed value. Rounds alternate the layouts; ms/step is the median over
rounds of each run's median step after ``--skip``.

    .venv/bin/python benchmarks/scale.py [--beads 8 32] [--steps 61] [--skip 20] [--rounds 2]
    .venv/bin/python benchmarks/scale.py --beads 8 --steps 21 --skip 5 --rounds 1   # a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HERE, ROOT, Client, grouped_bars, time_per_step, write_structures  # noqa: E402

ONE_THREAD = {"OMP_NUM_THREADS": "1", "DP_INTRA_OP_PARALLELISM_THREADS": "1", "DP_INTER_OP_PARALLELISM_THREADS": "1"}
OUT_FREQ = 10
BASE = "one driver, a request per bead"


def layouts(models: list[Path], nbeads: int) -> list[tuple[str, str, Client, int, int | None]]:
    """(name, kind, client, copies, batch size)."""
    mpiexec = str(Path(sys.executable).parent / "mpiexec")
    run = [sys.executable, "-m", "ensemble_driver", "run", "--template", "init.xyz", "--unix", "--address", "ADDRESS"]
    ensemble = [*run, "--models", *map(str, models), "--nbeads", str(nbeads), "--out-freq", str(OUT_FREQ), "-q"]
    alone = [*run, "--models", str(models[0]), "-q"]
    return [
        (BASE, "single", Client("single", [mpiexec, "-n", "2", *ensemble]), 1, None),
        ("two independent drivers (model 0 only)", "two", Client("two", alone, env=ONE_THREAD), 2, None),
        (
            "--connections 2",
            "connections",
            Client("connections", [mpiexec, "-n", "3", *ensemble, "--connections", "2"], env=ONE_THREAD),
            1,
            None,
        ),
        (f"one driver, batches of {nbeads}", "batched", Client("batched", [mpiexec, "-n", "2", *ensemble]), 1, nbeads),
        (
            f"--model0-ranks 2, batches of {nbeads}",
            "split",
            Client("split", [mpiexec, "-n", "3", *ensemble, "--model0-ranks", "2"], env=ONE_THREAD),
            1,
            nbeads,
        ),
    ]


def rows_of(workdir: Path, nbeads: int) -> list[str] | None:
    files = [workdir / f"model_devi{b + 1:0{2 if nbeads > 9 else 1}d}.out" for b in range(nbeads)]
    return [f.read_text() for f in files] if all(f.exists() for f in files) else None


def compare(rows: list[str] | None, base: list[str] | None) -> str:
    if rows is None:
        return "no rows"
    if base is None:
        return ""
    if rows == base:
        return "identical"
    worst = 0.0
    for mine, theirs in zip(rows, base):
        a = np.array([[float(x) for x in line.split()] for line in mine.splitlines()[1:]])
        b = np.array([[float(x) for x in line.split()] for line in theirs.splitlines()[1:]])
        if a.shape != b.shape:
            return f"different rows ({a.shape[0]} vs {b.shape[0]})"
        worst = max(worst, float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300))))
    return f"max relative difference {worst:.1e}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--beads", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--steps", type=int, default=61)
    parser.add_argument("--skip", type=int, default=20, help="steps dropped at the start of each run (default 20)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--workdir", type=Path, default=Path("bench_output"))
    args = parser.parse_args()
    models = [ROOT / "examples" / "models" / f"m{k}.pth" for k in (0, 1)]
    work = args.workdir.resolve() / "scale"
    ipi_xyz, _ = write_structures(work, 32)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    rows = []
    for nbeads in args.beads:
        runs: dict[str, list[float]] = {}
        devi: dict[str, str] = {}
        base_rows = None
        for round_ in range(args.rounds):
            for name, kind, client, copies, batch in layouts(models, nbeads):
                workdir = work / f"p{nbeads}_{kind}_{round_}"
                seconds = time_per_step(
                    workdir,
                    client,
                    ipi_xyz,
                    args.steps,
                    timeout=3600,
                    xml="pimd.xml",
                    nbeads=nbeads,
                    batch_size=batch,
                    copies=copies,
                    skip=args.skip,
                )
                runs.setdefault(name, []).append(seconds * 1000)
                if kind != "two":
                    found = rows_of(workdir, nbeads)
                    if kind == "single" and round_ == 0:
                        base_rows = found
                    devi[name] = compare(found, None if kind == "single" else base_rows) or "the reference"
                print(f"P={nbeads:3d}  {name:40s} {seconds * 1000:9.2f} ms/step  {devi.get(name, '')}", flush=True)
        base = statistics.median(runs[BASE])
        for name, times in runs.items():
            ms = statistics.median(times)
            rows.append(
                {
                    "beads": nbeads,
                    "config": name,
                    "ms_per_step": ms,
                    "runs": times,
                    "speedup": base / ms,
                    "rows": devi.get(name, "none written (independent drivers cannot count the beads)"),
                }
            )
    lines = [
        f"PIMD, 32 atoms, i-PI (consolidated messages), models 0 and 1 with a deviation every {OUT_FREQ} steps; "
        f"measured {time.strftime('%Y-%m-%d')} on this machine ({os.cpu_count()} cores), one session of "
        f"{(time.time() - started) / 60:.0f} min, {args.rounds} round(s) alternating the layouts.",
        "",
        "| beads | layout | ms/step (runs) | speed-up over one driver | deviation rows vs one driver's |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        runs_text = ", ".join(f"{t:.1f}" for t in r["runs"])
        lines.append(
            f"| {r['beads']} | {r['config']} | {r['ms_per_step']:.2f} ({runs_text}) | {r['speedup']:.2f} | {r['rows']} |"
        )
    table = "\n".join(lines) + "\n"
    print(table)
    (args.out / "scale.md").write_text(table)
    (args.out / "scale.json").write_text(json.dumps(rows, indent=1))
    plot(rows, args.out / "scale.png")
    return 0


def plot(rows, path: Path) -> None:
    beads = sorted({r["beads"] for r in rows})
    names = list(dict.fromkeys(r["config"].replace(f"batches of {r['beads']}", "batches of P") for r in rows))
    series = {
        name: [
            next(r["ms_per_step"] for r in rows if r["beads"] == p and r["config"].replace(f"of {p}", "of P") == name)
            for p in beads
        ]
        for name in names
    }
    grouped_bars(
        path,
        [f"P = {p}" for p in beads],
        series,
        ylabel="ms per i-PI step",
        title="PIMD, 32 atoms: model 0 on one rank or two",
        figsize=(8, 4),
    )


if __name__ == "__main__":
    raise SystemExit(main())
