"""``ensemble-driver devi`` against deepmd-kit's ``dp --pt model-devi``, whole processes.

The same frames, the same three models, the same rows: 500 frames (``--frames``) of the
256-atom Cu-Au alloy of the other benchmarks, each frame the alloy with its atoms moved
by a random Gaussian displacement (0.05-0.15 Angstrom, growing along the trajectory so
that the deviation varies), written twice: as extended XYZ with ``step=`` (what ``devi``
reads) and as a deepmd/npy system (what ``dp model-devi`` reads). Each configuration is
one whole process from the command line to the written file (start-up, imports, model
loading, reading, evaluation, writing), timed by the wall clock:

- ``dp --pt model-devi -m M0 M1 M2 -s system -f 10`` (one process, torch's own threads);
- ``ensemble-driver devi frames.extxyz --models M0 M1 M2`` (one process);
- ``mpiexec -n 2 ensemble-driver devi ...`` (two ranks).

The models: ``dp model-devi`` refuses an ensemble whose type maps differ, and of the
shipped models only m0 and m1 list Cu first (m2 and m3 list Au first), so the third model
is a copy of m0 under another name: loaded and evaluated like any other model (the
deviation is then that of m0, m0, m1).

Rounds alternate the configurations (on a shared machine its speed drifts within
minutes); the speed-up is dp's time over the configuration's in the same round, the median
over rounds. Rows: the one-rank and two-rank files must be identical byte for byte;
against ``dp model-devi`` (which prints ``%19.6e`` and an eighth column, ``devi_e``) the
step and the first six values must agree to the printed digits (one unit in the last
printed digit, for rounding).

    .venv/bin/python benchmarks/devi_speed.py [--frames 500] [--rounds 2]
    .venv/bin/python benchmarks/devi_speed.py --frames 40 --rounds 1   # a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
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
DP = "dp --pt model-devi (one process)"
ONE = "ensemble-driver devi, one process"
TWO = "mpiexec -n 2 ensemble-driver devi"


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


def commands(models: list[Path], extxyz: Path, system: Path) -> dict[str, tuple[list[str], str]]:
    """Each configuration's command line and the deviation file it writes (in its own folder)."""
    devi = [sys.executable, "-m", "ensemble_driver", "devi", str(extxyz), "--models", *map(str, models)]
    devi += ["--out-file", "model_devi.out"]
    return {
        DP: (
            [str(BIN / "dp"), "--pt", "model-devi", "-m", *map(str, models), "-s", str(system), "-f", str(STRIDE)]
            + ["-o", "model_devi.out"],
            "model_devi.out",
        ),
        ONE: (devi, "model_devi.out"),
        TWO: ([str(BIN / "mpiexec"), "-n", "2", *devi], "model_devi.out"),
    }


def timed(command: list[str], cwd: Path) -> float:
    if cwd.exists():
        shutil.rmtree(cwd)
    cwd.mkdir(parents=True)
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - started
    (cwd / "stdout").write_text(proc.stdout)
    (cwd / "stderr").write_text(proc.stderr)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(command)} exited {proc.returncode}: {proc.stderr[-3000:]}")
    return seconds


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
    runs: dict[str, list[float]] = {name: [] for name in (DP, ONE, TWO)}
    rows: dict[str, str] = {}
    configs = commands(models, extxyz, system)
    for round_ in range(args.rounds):
        order = list(configs) if round_ % 2 == 0 else list(reversed(configs))
        for name in order:
            command, out_file = configs[name]
            cwd = work / f"{'dp one two'.split()[list(configs).index(name)]}_{round_}"
            seconds = timed(command, cwd)
            runs[name].append(seconds)
            print(f"round {round_}  {name:40s} {seconds:8.2f} s", flush=True)
        dp_file, one_file, two_file = (work / f"{k}_{round_}" / "model_devi.out" for k in ("dp", "one", "two"))
        rows[DP] = "the reference"
        rows[ONE] = against_dp(one_file, dp_file)
        two_same = two_file.read_bytes() == one_file.read_bytes()
        rows[TWO] = "identical to one process's" if two_same else "differ from one process's"
        rows[TWO] += f"; {against_dp(two_file, dp_file)}" if not two_same else ""
        print(f"round {round_}  rows: one process: {rows[ONE]}; two ranks: {rows[TWO]}", flush=True)
    table_rows = []
    for name, times in runs.items():
        ratios = [d / t for d, t in zip(runs[DP], times)]
        table_rows.append(
            {
                "config": name,
                "frames": args.frames,
                "seconds": statistics.median(times),
                "runs": times,
                "frames_per_s": args.frames / statistics.median(times),
                "speedup": statistics.median(ratios),
                "speedup_rounds": ratios,
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
        "| configuration | s per run (runs) | frames/s | speed-up over dp model-devi (rounds) | rows |",
        "|---|---|---|---|---|",
    ]
    for r in table_rows:
        runs_text = ", ".join(f"{t:.1f}" for t in r["runs"])
        rounds_text = ", ".join(f"{x:.2f}" for x in r["speedup_rounds"])
        lines.append(
            f"| {r['config']} | {r['seconds']:.1f} ({runs_text}) | {r['frames_per_s']:.1f} | "
            f"{r['speedup']:.2f} ({rounds_text}) | {r['rows']} |"
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
