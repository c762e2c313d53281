"""``ensemble-driver devi`` against deepmd-kit's ``dp --pt model-devi``, whole processes.

The same frames, the same three models, the same rows: 500 frames (``--frames``) of the
256-atom Cu-Au alloy of the other benchmarks, each frame the alloy with its atoms moved
by a random Gaussian displacement (0.05-0.15 Angstrom, growing along the trajectory so
that the deviation varies), written twice: as extended XYZ with ``step=`` (what ``devi``
reads) and as a deepmd/npy system (what ``dp model-devi`` reads). Each configuration is
one whole process from the command line to the written file (start-up, imports, model
loading, reading, evaluation, writing), timed by the wall clock, with its peak memory
(the largest resident set of its processes, from ``wait4``):

- ``dp --pt model-devi -m M0 M1 M2 -s system -f 10`` with ``OMP_NUM_THREADS=1`` and with
  ``OMP_NUM_THREADS=2`` (dp's fair settings on 2 cores: torch's threads, one or two);
- ``ensemble-driver devi frames.extxyz --models M0 M1 M2`` (one process, its own choice
  of threads: no ``OMP_NUM_THREADS`` set);
- ``mpiexec -n 2 ensemble-driver devi ...`` (two ranks).

``devi`` prints its own clock (reading, loading the models, evaluating, writing); the
"evaluating" column is rank 0's time in the model calls and rows, the rest of its wall
time is start-up (Python, imports, loading) and input/output.

The models: ``dp model-devi`` refuses an ensemble whose type maps differ, and of the
shipped models only m0 and m1 list Cu first (m2 and m3 list Au first), so the third model
is a copy of m0 under another name: loaded and evaluated like any other model (the
deviation is then that of m0, m0, m1).

Rounds alternate the configurations (on a shared machine its speed drifts within
minutes); the speed-up is the faster dp's time over the configuration's in the same
round, the median over rounds. Rows: the one-rank and two-rank files must be identical
byte for byte; against ``dp model-devi`` (which prints ``%19.6e`` and an eighth column,
``devi_e``) the step and the first six values must agree to the printed digits (one unit
in the last printed digit, for rounding). A figure to quote comes from a quiet machine:
the table states the load average at the end.

    .venv/bin/python benchmarks/devi_speed.py [--frames 500] [--rounds 2]
    .venv/bin/python benchmarks/devi_speed.py --frames 40 --rounds 1   # a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BIN, HERE, ROOT, grouped_bars, write_structures  # noqa: E402

NATOMS = 256
STRIDE = 10
DP1 = "dp --pt model-devi, OMP_NUM_THREADS=1"
DP2 = "dp --pt model-devi, OMP_NUM_THREADS=2"
DPS = (DP1, DP2)
ONE = "ensemble-driver devi, one process"
TWO = "mpiexec -n 2 ensemble-driver devi"
FOLDERS = {DP1: "dp1", DP2: "dp2", ONE: "one", TWO: "two"}
#: devi's own clock, as it prints it: "... in 12.3 s (reading 0.4 s, ..., evaluating 9.1 s, writing 0.0 s)"
EVALUATING = re.compile(r"evaluating ([0-9.]+) s")


def make_frames(work: Path, nframes: int) -> tuple[Path, Path]:
    """The trajectory as extended XYZ and as a deepmd/npy system (type map Cu, Au)."""
    from ase.io import read, write

    _, ase_file = write_structures(work, NATOMS)
    base = read(ase_file)
    rng = np.random.default_rng(17)
    frames = []
    for k in range(nframes):
        atoms = base.copy()
        atoms.positions += rng.normal(scale=0.05 + 0.1 * k / max(nframes - 1, 1), size=atoms.positions.shape)
        atoms.info["step"] = STRIDE * k
        frames.append(atoms)
    extxyz = work / "frames.extxyz"
    write(extxyz, frames)
    system = work / "system"
    shutil.rmtree(system, ignore_errors=True)
    (system / "set.000").mkdir(parents=True)
    type_map = ["Cu", "Au"]
    (system / "type_map.raw").write_text("\n".join(type_map) + "\n")
    (system / "type.raw").write_text("\n".join(str(type_map.index(s)) for s in base.get_chemical_symbols()) + "\n")
    # as written to the extxyz file (8 decimals), so that both tools see the same numbers
    again = read(extxyz, index=":")
    np.save(system / "set.000" / "coord.npy", np.array([a.positions.ravel() for a in again]))
    np.save(system / "set.000" / "box.npy", np.array([a.cell.array.ravel() for a in again]))
    return extxyz, system


def commands(models: list[Path], extxyz: Path, system: Path) -> dict[str, tuple[list[str], dict]]:
    """Each configuration's command line and environment (it writes model_devi.out in its
    own folder). devi runs with no thread variable set, so that it chooses its threads."""
    devi = [sys.executable, "-m", "ensemble_driver", "devi", str(extxyz), "--models", *map(str, models)]
    devi += ["--out-file", "model_devi.out"]
    dp = [str(BIN / "dp"), "--pt", "model-devi", "-m", *map(str, models), "-s", str(system), "-f", str(STRIDE)]
    dp += ["-o", "model_devi.out"]
    threads = (
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "DP_INTRA_OP_PARALLELISM_THREADS",
        "DP_INTER_OP_PARALLELISM_THREADS",
    )
    clean = {k: v for k, v in os.environ.items() if k not in threads}
    return {
        DP1: (dp, {**clean, "OMP_NUM_THREADS": "1"}),
        DP2: (dp, {**clean, "OMP_NUM_THREADS": "2"}),
        ONE: (devi, clean),
        TWO: ([str(BIN / "mpiexec"), "-n", "2", *devi], clean),
    }


def timed(command: list[str], env: dict, cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak memory (GB: the largest resident set among the process and
    the descendants it waited for, ``wait4``'s ``ru_maxrss``) of one whole process."""
    if cwd.exists():
        shutil.rmtree(cwd)
    cwd.mkdir(parents=True)
    with open(cwd / "stdout", "w") as out, open(cwd / "stderr", "w") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(command)} exited {proc.returncode}: {(cwd / 'stderr').read_text()[-3000:]}")
    return seconds, usage.ru_maxrss / 1024**2  # kB on Linux


def values(path: Path) -> np.ndarray:
    return np.loadtxt(path, ndmin=2)


def against_dp(ours: Path, dp: Path) -> str:
    """The first seven columns against dp's, to its printed precision (%.6e: a unit in the
    seventh significant digit)."""
    a, b = values(ours), values(dp)
    if a.shape[0] != b.shape[0]:
        return f"different row counts ({a.shape[0]} vs {b.shape[0]})"
    if not np.array_equal(a[:, 0], b[:, 0]):
        return "different steps"
    x, y = a[:, 1:7], b[:, 1:7]
    unit = 10.0 ** (np.floor(np.log10(np.maximum(np.abs(y), 1e-300))) - 6)
    off = np.abs(x - y) / unit
    if np.all(off <= 1.0 + 1e-9):
        same = int(np.sum(off == 0))
        if same == off.size:
            return f"same values (all {off.size} printed alike)"
        return f"same values ({same} of {off.size} printed alike, the others a last-digit rounding apart)"
    return f"differ: up to {off.max():.0f} units of the last printed digit"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--workdir", type=Path, default=Path("bench_output"))
    args = parser.parse_args()
    work = args.workdir.resolve() / "devi_speed"
    work.mkdir(parents=True, exist_ok=True)
    shipped = ROOT / "examples" / "models"
    third = work / "m0-copy.pth"
    shutil.copy(shipped / "m0.pth", third)
    models = [shipped / "m0.pth", shipped / "m1.pth", third]
    extxyz, system = make_frames(work, args.frames)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    configs = commands(models, extxyz, system)
    runs: dict[str, list[float]] = {name: [] for name in configs}
    memory: dict[str, list[float]] = {name: [] for name in configs}
    evaluating: dict[str, list[float]] = {name: [] for name in configs}
    rows: dict[str, str] = {}
    for round_ in range(args.rounds):
        order = list(configs) if round_ % 2 == 0 else list(reversed(configs))
        for name in order:
            command, env = configs[name]
            cwd = work / f"{FOLDERS[name]}_{round_}"
            seconds, gigabytes = timed(command, env, cwd)
            runs[name].append(seconds)
            memory[name].append(gigabytes)
            clock = EVALUATING.search((cwd / "stdout").read_text())
            if clock:
                evaluating[name].append(float(clock.group(1)))
            print(f"round {round_}  {name:40s} {seconds:8.2f} s {gigabytes:6.2f} GB", flush=True)
        dp_file, one_file, two_file = (work / f"{k}_{round_}" / "model_devi.out" for k in ("dp1", "one", "two"))
        for dp in DPS:
            rows[dp] = "the reference" if dp == DP1 else against_dp(work / f"dp2_{round_}" / "model_devi.out", dp_file)
        rows[ONE] = against_dp(one_file, dp_file)
        two_same = two_file.read_bytes() == one_file.read_bytes()
        rows[TWO] = "identical to one process's" if two_same else "differ from one process's"
        rows[TWO] += f"; {against_dp(two_file, dp_file)}" if not two_same else ""
        print(f"round {round_}  rows: one process: {rows[ONE]}; two ranks: {rows[TWO]}", flush=True)
    best_dp = [min(times) for times in zip(*(runs[dp] for dp in DPS))]  # the faster dp of each round
    table_rows = []
    for name, times in runs.items():
        ratios = [d / t for d, t in zip(best_dp, times)]
        table_rows.append(
            {
                "config": name,
                "frames": args.frames,
                "seconds": statistics.median(times),
                "runs": times,
                "frames_per_s": args.frames / statistics.median(times),
                "speedup": statistics.median(ratios),
                "speedup_rounds": ratios,
                "peak_gb": max(memory[name]),
                "evaluating": statistics.median(evaluating[name]) if evaluating[name] else None,
                "rows": rows[name],
            }
        )
    load = os.getloadavg()
    lines = [
        f"`devi` against `dp --pt model-devi`: {args.frames} frames of {NATOMS} atoms, 3 models (m0, m1 and a "
        f"copy of m0), whole processes from start to written file; measured {time.strftime('%Y-%m-%d')} on this "
        f"machine ({os.cpu_count()} cores), one session of {(time.time() - started) / 60:.0f} min, {args.rounds} "
        f"round(s) alternating the configurations (load average at the end {load[0]:.1f}, {load[1]:.1f}, "
        f"{load[2]:.1f}).",
        "",
        "| configuration | s per run (runs) | frames/s | speed-up over the faster dp (rounds) | peak memory, GB "
        "| of which evaluating (devi's clock), s | rows |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in table_rows:
        runs_text = ", ".join(f"{t:.1f}" for t in r["runs"])
        rounds_text = ", ".join(f"{x:.2f}" for x in r["speedup_rounds"])
        clock = "" if r["evaluating"] is None else f"{r['evaluating']:.1f}"
        lines.append(
            f"| {r['config']} | {r['seconds']:.1f} ({runs_text}) | {r['frames_per_s']:.1f} | "
            f"{r['speedup']:.2f} ({rounds_text}) | {r['peak_gb']:.2f} | {clock} | {r['rows']} |"
        )
    table = "\n".join(lines) + "\n"
    print(table)
    (args.out / "devi_speed.md").write_text(table)
    (args.out / "devi_speed.json").write_text(json.dumps(table_rows, indent=1))
    grouped_bars(
        args.out / "devi_speed.png",
        [f"round {k + 1}" for k in range(args.rounds)],
        {r["config"]: r["runs"] for r in table_rows},
        ylabel="seconds, whole process",
        title=f"Model deviation of {args.frames} frames, {NATOMS} atoms, 3 models",
        figsize=(8, 4),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
