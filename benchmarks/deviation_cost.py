"""What the deviation costs: i-PI steps with a deviation at EVERY step (--out-freq 1)
against model 0 alone, measured side by side in one run.

i-PI runs ``ipi_inputs/nvt.xml`` (32 atoms, consolidated messages). Configurations:

- model 0 alone (no deviation): the plain step;
- 2 models on 2 ranks;
- 4 models on 1 rank: every model evaluated one after another in one process, which is
  what LAMMPS's multi-model ``pair_style deepmd`` does at a deviation step;
- 4 models on 2 ranks, and on 4 ranks (on a 2-core machine the ranks then outnumber
  the cores, and i-PI needs CPU too);
- the same with the models compressed by ``dp --pt compress`` (plain, 2 on 2 ranks, 4
  serial), each compared with its own plain step.

Every process gets one thread (OMP_NUM_THREADS=1), so "a rank per core" means what it
says. Reported: time per step and its ratio to the plain step.

    .venv/bin/python benchmarks/deviation_cost.py [--natoms 32] [--steps 401] [--skip 100]
    .venv/bin/python benchmarks/deviation_cost.py --steps 31 --skip 10 --max-models 2 --no-compressed  # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BIN, HERE, ROOT, Client, compress, time_per_step, write_structures  # noqa: E402

ONE_THREAD = {"OMP_NUM_THREADS": "1", "DP_INTRA_OP_PARALLELISM_THREADS": "1", "DP_INTER_OP_PARALLELISM_THREADS": "1"}


def driver(models: int, ranks: int, compressed_dir: Path | None = None) -> list[str]:
    paths = [str(ROOT / "examples" / "models" / f"m{k}.pth") for k in range(models)]
    if compressed_dir is not None:
        paths = [str(compress(Path(p), compressed_dir / f"m{k}_compressed.pth")) for k, p in enumerate(paths)]
    command = [
        sys.executable,
        "-m",
        "ensemble_driver",
        "run",
        "--models",
        *paths,
        "--template",
        "init.xyz",
        "--unix",
        "--address",
        "ADDRESS",
        "-q",
        "--out-freq",
        "1",
        "--overwrite",
    ]
    return [str(BIN / "mpiexec"), "-n", str(ranks), *command] if ranks > 1 else command


CONFIGS = [  # name, models, ranks, compressed
    ("model 0 alone (no deviation)", 1, 1, False),
    ("2 models, 2 ranks", 2, 2, False),
    ("2 models, 1 rank (serial, as LAMMPS)", 2, 1, False),
    ("4 models, 1 rank (serial, as LAMMPS)", 4, 1, False),
    ("4 models, 2 ranks", 4, 2, False),
    ("4 models, 4 ranks (ranks > cores here)", 4, 4, False),
    ("compressed: model 0 alone", 1, 1, True),
    ("compressed: 2 models, 2 ranks", 2, 2, True),
    ("compressed: 4 models, 1 rank (serial)", 4, 1, True),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--natoms", type=int, default=32, choices=[32, 256, 2048])
    parser.add_argument("--steps", type=int, default=401)
    parser.add_argument(
        "--skip",
        type=int,
        default=100,
        help="steps dropped at the start of each run (default 100); under 100 i-PI times every step and the "
        "median after SKIP is used (short runs: --steps 31 --skip 10)",
    )
    parser.add_argument(
        "--max-models", type=int, default=4, help="leave out the configurations with more models than this"
    )
    parser.add_argument("--no-compressed", action="store_true", help="leave out the compressed models' rows")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--workdir", type=Path, default=Path("bench_output"))
    args = parser.parse_args()
    work = args.workdir.resolve() / f"devi{args.natoms}"
    ipi_xyz, _ = write_structures(work, args.natoms)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    rows = []
    configs = [c for c in CONFIGS if c[1] <= args.max_models and not (args.no_compressed and c[3])]
    for name, models, ranks, compressed in configs:
        client = Client(name, driver(models, ranks, work if compressed else None), env=ONE_THREAD)
        seconds = time_per_step(work / f"m{models}r{ranks}", client, ipi_xyz, args.steps, timeout=3600, skip=args.skip)
        rows.append(
            {"config": name, "models": models, "ranks": ranks, "compressed": compressed, "ms_per_step": seconds * 1000}
        )
        print(f"{name:40s} {seconds * 1000:8.2f} ms/step", flush=True)
    plain = {r["compressed"]: r["ms_per_step"] for r in rows if r["models"] == 1}
    lines = [
        f"Deviation at every step (--out-freq 1), {args.natoms} atoms, i-PI NVT, one thread per process; "
        f"measured {time.strftime('%Y-%m-%d')} on this machine ({os.cpu_count()} cores), one session of "
        f"{(time.time() - started) / 60:.0f} min.",
        "",
        "| configuration | ms/step | step / plain step (same kind of model) | steps per second |",
        "|---|---|---|---|",
    ]
    for r in rows:
        r["ratio"] = r["ms_per_step"] / plain[r["compressed"]]
        lines.append(f"| {r['config']} | {r['ms_per_step']:.2f} | {r['ratio']:.2f} | {1000 / r['ms_per_step']:.1f} |")
    table = "\n".join(lines) + "\n"
    print(table)
    (args.out / f"deviation_cost_{args.natoms}.md").write_text(table)
    (args.out / f"deviation_cost_{args.natoms}.json").write_text(json.dumps(rows, indent=1))
    plot(rows, args.out / f"deviation_cost_{args.natoms}.png", args.natoms)
    return 0


def plot(rows, path: Path, natoms: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    names = [r["config"] for r in rows]
    ax.barh(names[::-1], [r["ratio"] for r in rows][::-1], color="tab:blue")
    ax.axvline(1.0, color="black", lw=1, ls="--")
    ax.set_xlabel("time per step / time of a plain step (model 0 alone)")
    ax.set_title(f"Deviation at every step, {natoms} atoms")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
