"""``ensemble-driver calibrate`` against ``ensemble-driver devi`` on the same frames,
whole processes, side by side.

The target: calibrate on labelled frames costs at most devi's time on the same frames
plus 10 % (it evaluates them through devi's machinery, keeping each frame's errors
instead of a deviation row). The frames: 1000 (``--frames``) of the 256-atom Cu-Au alloy
of the other benchmarks, each the alloy with its atoms moved by a random Gaussian
displacement (0.05-0.15 Angstrom, growing along the file, as ``devi_speed.py``),
labelled with ASE's EMT and written once as extended XYZ with energy and forces: devi
reads the structures of that file, calibrate the structures and the labels. The four
shipped models. Each run is one whole process from the command line to its written files
(start-up, imports, loading the models, reading, evaluating, writing), timed by the wall
clock; both choose their own threads (no ``OMP_NUM_THREADS``). calibrate runs with
``--error-target 0.3`` (a proposal) and without a figure (``-o``, which adds matplotlib's
import and about a second).

Rounds alternate the two (devi first in even rounds, calibrate first in odd ones: a
shared machine's speed drifts within minutes); the ratio is calibrate's time over devi's
in the same round, and the figure is their median. Each process also prints its own
clock; "evaluating" is rank 0's time in the model calls. The load average before and
after is recorded: on a loaded machine the ratio, not the seconds, is the figure.

    .venv/bin/python benchmarks/calibrate_speed.py [--frames 1000] [--rounds 3]
    .venv/bin/python benchmarks/calibrate_speed.py --frames 40 --rounds 1   # a smoke test
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
from common import HERE, ROOT, write_structures  # noqa: E402

NATOMS = 256
DEVI, CALIBRATE = "ensemble-driver devi", "ensemble-driver calibrate"
EVALUATING = re.compile(r"evaluating ([0-9.]+) s")


def make_frames(work: Path, nframes: int) -> Path:
    """The labelled trajectory as extended XYZ (energy and forces from EMT), made once per
    frame count in the work folder (labelling 1000 frames takes minutes)."""
    path = work / f"labelled_{nframes}.extxyz"
    if path.is_file():
        return path
    from ase.calculators.emt import EMT
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import read, write

    _, ase_file = write_structures(work, NATOMS)
    base = read(ase_file)
    rng = np.random.default_rng(17)
    frames = []
    emt = EMT()
    for k in range(nframes):
        atoms = base.copy()
        atoms.positions += rng.normal(scale=0.05 + 0.1 * k / max(nframes - 1, 1), size=atoms.positions.shape)
        atoms.calc = emt
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        frames.append(atoms)
    write(work / "partial.extxyz", frames, format="extxyz")
    (work / "partial.extxyz").rename(path)
    return path


def commands(models: list[Path], data: Path) -> dict[str, list[str]]:
    run = [sys.executable, "-m", "ensemble_driver"]
    return {
        DEVI: [*run, "devi", str(data), "--models", *map(str, models), "--out-file", "model_devi.out"],
        CALIBRATE: [*run, "calibrate", str(data), "--models", *map(str, models), "--error-target", "0.3"],
    }


def timed(command: list[str], cwd: Path) -> tuple[float, float | None]:
    """Wall seconds of one whole process in a new folder, and its own "evaluating" clock."""
    shutil.rmtree(cwd, ignore_errors=True)
    cwd.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode:
        raise RuntimeError(f"{' '.join(command)} exited {proc.returncode}: {proc.stderr[-3000:]}")
    (cwd / "stdout").write_text(proc.stdout)
    clock = EVALUATING.search(proc.stdout)
    return seconds, float(clock.group(1)) if clock else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--workdir", type=Path, default=Path("bench_output"))
    args = parser.parse_args()
    work = args.workdir.resolve() / "calibrate_speed"
    work.mkdir(parents=True, exist_ok=True)
    models = [ROOT / "examples" / "models" / f"m{k}.pth" for k in range(4)]
    data = make_frames(work, args.frames)
    load_before = os.getloadavg()
    started = time.time()
    configs = commands(models, data)
    runs: dict[str, list[float]] = {name: [] for name in configs}
    clocks: dict[str, list[float]] = {name: [] for name in configs}
    for round_ in range(args.rounds):
        order = list(configs) if round_ % 2 == 0 else list(reversed(configs))
        for name in order:
            seconds, clock = timed(configs[name], work / f"{name.split()[-1]}_{round_}")
            runs[name].append(seconds)
            if clock is not None:
                clocks[name].append(clock)
            print(f"round {round_}  {name:28s} {seconds:8.2f} s (evaluating {clock} s)", flush=True)
    ratios = [c / d for c, d in zip(runs[CALIBRATE], runs[DEVI])]
    load = os.getloadavg()
    result = {
        "frames": args.frames,
        "natoms": NATOMS,
        "models": 4,
        "rounds": args.rounds,
        "seconds": runs,
        "evaluating": clocks,
        "ratio_rounds": ratios,
        "ratio": statistics.median(ratios),
        "target_met": statistics.median(ratios) <= 1.10,
        "load_before": load_before,
        "load_after": load,
        "cores": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
    }
    lines = [
        f"`calibrate` against `devi`: {args.frames} labelled frames of {NATOMS} atoms, the 4 shipped models, whole "
        f"processes; measured {result['date']} on this machine ({os.cpu_count()} cores), one session of "
        f"{(time.time() - started) / 60:.0f} min, {args.rounds} round(s) alternating the two (load average before "
        f"{load_before[0]:.1f}, after {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}).",
        "",
        "| command | s per run (runs) | of which evaluating, s (runs) | calibrate / devi (rounds) |",
        "|---|---|---|---|",
    ]
    for name in configs:
        times = ", ".join(f"{t:.1f}" for t in runs[name])
        evaluating = ", ".join(f"{t:.1f}" for t in clocks[name])
        ratio = "" if name == DEVI else f"{result['ratio']:.3f} ({', '.join(f'{r:.3f}' for r in ratios)})"
        lines.append(f"| {name} | {statistics.median(runs[name]):.1f} ({times}) | {evaluating} | {ratio} |")
    lines += ["", f"Target calibrate <= 1.10 x devi: {'met' if result['target_met'] else 'missed'}."]
    table = "\n".join(lines) + "\n"
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "calibrate_speed.md").write_text(table)
    (args.out / "calibrate_speed.json").write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
