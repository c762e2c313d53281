"""Uncertainty-biased exploration against plain MD: candidates found in the same steps.

Runs the shipped NVT input (32-atom Cu-Au, 600 K) twice from the same start with the same
four shipped models under `mpiexec -n 2 ensemble-driver run --ipi-input`: once plain,
once with `--bias-uncertainty TAU`. Every --out-freq steps the deviation row is written
and classified by DP-GEN's trust levels; the script counts the classes of each run and
draws, in one PNG, max_devi_f against step for both runs and the biased run's most
uncertain candidate with every atom coloured by its own force deviation (the candidate
file's per-atom array devi_f).

    python benchmarks/bias_exploration.py                 # 1000 steps, TAU 10 eV
    python benchmarks/bias_exploration.py --steps 100     # a quick look

Writes benchmarks/results/bias_exploration.{json,md} and docs/img/bias_exploration.png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from common import BIN  # noqa: E402

from ensemble_driver.demo.inputs import SocketSettings, prepare_input  # noqa: E402
from ensemble_driver.demo.launch import ProcessGroup  # noqa: E402

MODELS = [ROOT / "examples" / "models" / f"m{k}.pth" for k in range(4)]


def run(workdir: Path, steps: int, tau: float, args) -> dict:
    """One i-PI run with the driver; the classes of its rows, its rows and its time."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    address = f"bias-{workdir.name}-{int(time.time() * 1000) % 100000}"
    prepare_input(
        ROOT / "ipi_inputs" / "nvt.xml", workdir / "input.xml", socket=SocketSettings(address=address), steps=steps
    )
    driver = [str(BIN / "mpiexec"), "-n", "2", str(BIN / "ensemble-driver"), "run", "--models", *map(str, MODELS)]
    driver += ["--ipi-input", "input.xml", "--out-freq", str(args.out_freq), "--connect-timeout", "120"]
    driver += ["--trust-lo", str(args.trust_lo), "--trust-hi", str(args.trust_hi)]
    if tau:
        driver += ["--bias-uncertainty", str(tau)]
    started = time.perf_counter()
    with ProcessGroup(workdir / "logs") as group:
        group.start("i-pi", [str(BIN / "i-pi"), "input.xml"], cwd=workdir)
        group.start("driver", driver, cwd=workdir)
        group.wait(args.timeout)
    seconds = time.perf_counter() - started
    summary = json.loads((workdir / "devi_summary.json").read_text())["total"]
    rows = np.loadtxt(workdir / "model_devi.out", ndmin=2)
    return {"tau": tau, "seconds": round(seconds, 1), "rows": len(rows), **summary, "workdir": str(workdir)}


def draw(results: list[dict], png: Path) -> None:
    import ase.io
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1.6, 1]})
    for result, colour in zip(results, ("tab:blue", "tab:red")):
        rows = np.loadtxt(Path(result["workdir"]) / "model_devi.out", ndmin=2)
        label = "plain MD" if not result["tau"] else f"--bias-uncertainty {result['tau']:g}"
        left.plot(rows[:, 0], rows[:, 4], color=colour, lw=0.9, label=f"{label}: {result['candidate']} candidates")
    for level in (results[0]["trust_lo"], results[0]["trust_hi"]):
        left.axhline(level, color="grey", ls="--", lw=0.7)
    left.set_xlabel("step")
    left.set_ylabel("max_devi_f (eV/Å)")
    left.legend(fontsize=8, loc="upper left")
    left.set_title("the same start, models and steps")
    biased = Path(results[-1]["workdir"]) / "candidates.xyz"
    frames = ase.io.read(biased, ":") if biased.exists() else []
    if frames:
        frame = max(frames, key=lambda f: f.arrays["devi_f"].max())
        devi = frame.arrays["devi_f"]
        order = np.argsort(frame.positions[:, 2])  # back to front
        points = right.scatter(
            frame.positions[order, 0],
            frame.positions[order, 1],
            c=devi[order],
            s=[260 if s == "Au" else 170 for s in np.array(frame.get_chemical_symbols())[order]],
            cmap="viridis",
            edgecolors="black",
            linewidths=0.4,
        )
        fig.colorbar(points, ax=right, label="devi_f (eV/Å)")
        right.set_aspect("equal")
        right.set_xlabel("x (Å)")
        right.set_ylabel("y (Å)")
        right.set_title(f"biased run's candidate, step {frame.info['step']}: devi_f per atom", fontsize=9)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000, help="MD steps of each run (default: %(default)s)")
    parser.add_argument("--tau", type=float, default=10.0, help="TAU of the biased run, eV (default: %(default)s)")
    parser.add_argument("--out-freq", type=int, default=10, help="steps between rows (default: %(default)s)")
    parser.add_argument("--trust-lo", type=float, default=0.10, help="eV/Angstrom (default: %(default)s)")
    parser.add_argument("--trust-hi", type=float, default=0.20, help="eV/Angstrom (default: %(default)s)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run (default: %(default)s)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "bench_output" / "bias_exploration")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--png", type=Path, default=ROOT / "docs" / "img" / "bias_exploration.png")
    args = parser.parse_args(argv)
    results = []
    for tau in (0.0, args.tau):
        result = run(args.workdir / ("biased" if tau else "plain"), args.steps, tau, args)
        result.update(trust_lo=args.trust_lo, trust_hi=args.trust_hi, steps=args.steps)
        results.append(result)
        print(json.dumps(result), flush=True)
    draw(results, args.png)
    per_1000 = [1000 * r["candidate"] / args.steps for r in results]
    table = [
        "| run | rows | accurate | candidate | failed | candidates per 1000 steps | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for r, rate in zip(results, per_1000):
        name = "plain MD" if not r["tau"] else f"`--bias-uncertainty {r['tau']:g}`"
        table.append(
            f"| {name} | {r['rows']} | {r['accurate']} | {r['candidate']} | {r['failed']} | {rate:.0f} | {r['seconds']} |"
        )
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "bias_exploration.json").write_text(json.dumps(results, indent=1) + "\n")
    (args.results / "bias_exploration.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))
    print(f"wrote {args.png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
