"""Per-step cost of a real i-PI NVT run with each client, measured side by side in one run.

For 32, 256 and 2048 atoms of the Cu-Au alloy, i-PI runs ``ipi_inputs/nvt.xml`` (its
default consolidated messages) with, one after another:

- i-PI's zero-cost ``dummy`` client: i-PI's own share of a step;
- ``ensemble-driver`` on the shipped model 0, and on the same model compressed;
- ASE's ``SocketClient`` with deepmd-kit's ASE calculator (``ase_client.py``);
- with ``--tf-python`` (a TensorFlow environment, see docs/dp-ipi.md): deepmd-kit's C++ ``dp_ipi``
  and ``ensemble-driver`` on the same TensorFlow ``.pb`` model (``--pb``).

i-PI measures the time per step itself (``verbosity='medium'``: the mean over each 100
steps); the windows up to step 100 (warm-up) are dropped. The model's share is ``DeepPot.eval`` in a
fresh process of the same environment (``model_time.py``), timed again in every round just
before the first client that uses the model (the machine's speed drifts by 10-20% over
minutes), and its median over the rounds is used. Reported per client: the time
per step, the time it adds on top of i-PI's own share, that divided by the model's share
(1.00 is the floor: the client adds nothing but the model), and its time relative to
ensemble-driver's. The clients run in turn, round after round, every other round in the
reverse order. A table (Markdown) and a PNG plot are written to ``--out``.

    .venv/bin/python benchmarks/step_cost.py                    # 20-40 minutes on 2 cores
    .venv/bin/python benchmarks/step_cost.py --sizes 32 --steps 301
    .venv/bin/python benchmarks/step_cost.py --sizes 2048 --rounds 3 --only ASE --out results/ase_2048
    .venv/bin/python benchmarks/step_cost.py --sizes 2048 --steps 41 --skip 10 --rounds 10 --only ASE --plain-eval
    .venv/bin/python benchmarks/step_cost.py --tf-python .venv-tf/bin/python \\
        --pb compare_dp_ipi_output/train/model.pb
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    BIN,
    HERE,
    REPEATS,
    ROOT,
    Client,
    compress,
    grouped_bars,
    model_ms,
    time_per_step,
    write_structures,
)

PLAIN = "ensemble-driver, DeepPot.eval"


def clients_for(natoms: int, structures: tuple[Path, Path], work: Path, args) -> list[Client]:
    ipi_xyz, ase_xyz = structures
    m0 = ROOT / "examples" / "models" / "m0.pth"
    m0c = compress(m0, work / "m0_compressed.pth")
    py = sys.executable
    ours = [str(BIN / "ensemble-driver"), "run", "--template", "init.xyz", "--unix", "--address", "ADDRESS", "-q"]
    clients = [
        Client("i-PI alone (dummy client)", [str(BIN / "i-pi-py_driver"), "-m", "dummy", "-u", "-a", "ADDRESS"]),
        Client("ensemble-driver", ours[:2] + ["--models", str(m0)] + ours[2:], model=(py, m0)),
        Client("ensemble-driver, compressed", ours[:2] + ["--models", str(m0c)] + ours[2:], model=(py, m0c)),
        Client(
            "ASE SocketClient + deepmd DP",
            [py, str(HERE / "ase_client.py"), str(m0), str(ase_xyz), "ADDRESS"],
            model=(py, m0),
        ),
    ]
    if args.plain_eval:
        clients.insert(2, Client(PLAIN, clients[1].argv, model=(py, m0), env={"ENSEMBLE_DRIVER_PLAIN_EVAL": "1"}))
    if args.tf_python and args.pb:
        tf_bin = Path(args.tf_python).parent
        type_map = subprocess.run(
            [
                args.tf_python,
                "-c",
                f"from deepmd.infer import DeepPot; print(' '.join(DeepPot('{args.pb}').get_type_map()))",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        config = json.dumps(
            {
                "verbose": False,
                "use_unix": True,
                "port": 31415,
                "host": "ADDRESS",
                "graph_file": str(args.pb),
                "coord_file": "init.xyz",
                "atom_type": {e: i for i, e in enumerate(type_map)},
            }
        )
        clients += [
            # dp_ipi exits 1 when i-PI sends EXIT
            Client(
                "dp_ipi (C++, .pb)",
                [str(tf_bin / "dp_ipi"), "dp_ipi.json"],
                frozenset({0, 1}),
                files={"dp_ipi.json": config},
                model=(args.tf_python, args.pb),
            ),
            Client(
                "ensemble-driver (.pb)",
                [str(tf_bin / "ensemble-driver"), "run", "--models", str(args.pb), *ours[2:]],
                model=(args.tf_python, args.pb),
            ),
        ]
    return clients


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 256, 2048], choices=sorted(REPEATS))
    parser.add_argument("--steps", type=int, default=None, help="i-PI steps per run (default: 401, 301, 201 by size)")
    parser.add_argument("--tf-python", help="python of a TensorFlow environment with deepmd-kit[cpu] and dp_ipi")
    parser.add_argument("--pb", type=Path, help="TensorFlow model of Cu/Au for dp_ipi")
    parser.add_argument(
        "--rounds",
        type=int,
        help="runs of each client, interleaved; the median is reported (default: 2, 1 for 2048 atoms)",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="NAME",
        help="run only the clients whose names start with "
        "one of these (e.g. ASE dp_ipi); i-PI alone and ensemble-driver always run",
    )
    parser.add_argument(
        "--skip",
        type=int,
        default=100,
        help="steps dropped at the start of each run (default "
        "100); under 100 i-PI times every step and the median after SKIP is used: with short "
        "runs (--steps 41 --skip 10) many alternated rounds fit in the time of a few",
    )
    parser.add_argument(
        "--plain-eval",
        action="store_true",
        help="add ensemble-driver with ENSEMBLE_DRIVER_PLAIN_EVAL=1 (DeepPot.eval, the path ASE's calculator takes)",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where the table and plot go")
    parser.add_argument("--workdir", type=Path, default=Path("bench_output"))
    args = parser.parse_args()
    if args.pb:
        args.pb = args.pb.resolve()
    if args.tf_python:  # absolute but not resolved: the venv's bin/ (dp_ipi) sits beside its python link
        args.tf_python = str(Path(args.tf_python).absolute())
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    started = time.time()
    for natoms in args.sizes:
        structures = write_structures(work / f"n{natoms}", natoms)
        steps = args.steps or {32: 401, 256: 301, 2048: 201}[natoms]
        clients = clients_for(natoms, structures, work, args)
        if args.only:
            clients = [
                c
                for i, c in enumerate(clients)
                if i == 0 or c.name == "ensemble-driver" or c.name == PLAIN or c.name.startswith(tuple(args.only))
            ]
        rounds = args.rounds or (1 if natoms >= 2048 else 2)
        samples: dict[str, list[float]] = {c.name: [] for c in clients}
        model_samples: dict[str, list[float]] = {c.name: [] for c in clients}
        for r in range(rounds):  # interleaved, so that a slow spell of the machine hits every client
            timed: dict[tuple, float] = {}  # the model's share, timed once per round, before its first client
            # every other round in the reverse order (A B, B A, A B, ...): the machine's
            # speed drifts over minutes, and a fixed order would favour whoever runs first
            for client in clients if r % 2 == 0 else clients[::-1]:
                if client.model is not None:
                    if client.model not in timed:
                        timed[client.model] = model_ms(client.model[0], client.model[1], structures[1])
                    model_samples[client.name].append(timed[client.model])
                t = time_per_step(
                    work / f"n{natoms}" / "runs" / client.name.split()[0],
                    client,
                    structures[0],
                    steps,
                    timeout=3600,
                    skip=args.skip,
                )
                samples[client.name].append(t)
                print(f"{natoms:5d} atoms  round {r + 1}  {client.name:32s} {t * 1000:9.2f} ms/step", flush=True)
        per_step = {name: statistics.median(ts) for name, ts in samples.items()}
        alone = per_step[clients[0].name]
        ours = per_step["ensemble-driver"]
        for client in clients:
            total = per_step[client.name]
            model = statistics.median(model_samples[client.name]) if model_samples[client.name] else None
            # paired: each round's time over ensemble-driver's in the same round, whose runs
            # were minutes apart at most (the overall medians can come from different rounds)
            paired = [t / o for t, o in zip(samples[client.name], samples["ensemble-driver"])]
            row = {
                "natoms": natoms,
                "client": client.name,
                "ms_per_step": total * 1000,
                "rounds_ms": [t * 1000 for t in samples[client.name]],
                "paired_ratios": paired,
                "paired_median": statistics.median(paired),
                "model_ms": model,
                "model_rounds_ms": model_samples[client.name],
                "added_ms": None,
                "added_over_model": None,
                "relative_to_ours": total / ours,
            }
            if model is not None:
                row["added_ms"] = (total - alone) * 1000
                row["added_over_model"] = row["added_ms"] / model
            rows.append(row)
    stamp = time.strftime("%Y-%m-%d")
    table = render(rows, stamp, time.time() - started)
    print(table)
    (args.out / "step_cost.md").write_text(table)
    (args.out / "step_cost.json").write_text(json.dumps(rows, indent=1))
    plot(rows, args.out / "step_cost.png")
    print(f"wrote {args.out / 'step_cost.md'} and {args.out / 'step_cost.png'}")
    return 0


def render(rows: list[dict], stamp: str, seconds: float) -> str:
    lines = [
        f"Per-step cost under i-PI NVT (consolidated messages), measured {stamp} on this machine "
        f"({os.cpu_count()} cores), all runs in one session of {seconds / 60:.0f} min: each client run "
        "several times, interleaved; ms/step is the median, the runs are in brackets.",
        "",
        "| atoms | client | ms/step (runs) | model ms | added ms | added / model | time vs ensemble-driver "
        "| same, round by round: median (range) |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def fmt(x, f):
        return "" if x is None else f % x

    for r in rows:
        runs = ", ".join(f"{t:.1f}" for t in r["rounds_ms"])
        lines.append(
            f"| {r['natoms']} | {r['client']} | {r['ms_per_step']:.2f} ({runs}) | {fmt(r['model_ms'], '%.2f')} | "
            f"{fmt(r['added_ms'], '%.2f')} | {fmt(r['added_over_model'], '%.3f')} | "
            f"{r['relative_to_ours']:.3f} | {r['paired_median']:.3f} "
            f"({min(r['paired_ratios']):.3f}-{max(r['paired_ratios']):.3f}) |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    sizes = sorted({r["natoms"] for r in rows})
    names = [r["client"] for r in rows if r["natoms"] == sizes[0] and r["added_over_model"] is not None]
    series = {
        name: [
            next((r["added_over_model"] for r in rows if r["natoms"] == n and r["client"] == name), np.nan)
            for n in sizes
        ]
        for name in names
    }
    grouped_bars(
        path,
        [f"{n} atoms" for n in sizes],
        series,
        hline=1.0,
        ylabel="time added per step / model's own time",
        title="Cost of each client on top of i-PI (1.0 = the model alone)",
    )


if __name__ == "__main__":
    raise SystemExit(main())
