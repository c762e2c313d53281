"""Path integrals: one request per bead, several drivers, or i-PI's batched transport.

i-PI runs ``ipi_inputs/pimd.xml`` (32 atoms, consolidated messages) with P = 8 and 32
beads, served by:

- one ensemble-driver, one request per bead (P model calls per step);
- two ensemble-drivers, one thread each (i-PI gives each a share of the beads);
- one ensemble-driver with ``<batch_size>P</batch_size>``: the whole ring polymer in one
  message and one model call;
- the first and the last with model 0 compressed by ``dp --pt compress``.

Model 0 only (no deviation), so the numbers show the transport. Reported: i-PI's time
per step and the speed-up over one request per bead.

    .venv/bin/python benchmarks/pimd_batch.py [--beads 8 32] [--steps 201] [--skip 100]
    .venv/bin/python benchmarks/pimd_batch.py --beads 8 --steps 21 --skip 5 --no-compressed   # a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HERE, ROOT, Client, compress, grouped_bars, time_per_step, write_structures  # noqa: E402

ONE_THREAD = {"OMP_NUM_THREADS": "1", "DP_INTRA_OP_PARALLELISM_THREADS": "1", "DP_INTER_OP_PARALLELISM_THREADS": "1"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--beads", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--steps", type=int, default=201)
    parser.add_argument(
        "--skip",
        type=int,
        default=100,
        help="steps dropped at the start of each run (default 100); under 100 i-PI times every step and the "
        "median after SKIP is used (short runs: --steps 31 --skip 10)",
    )
    parser.add_argument("--no-compressed", action="store_true", help="leave out the compressed model's rows")
    parser.add_argument("--model", type=Path, default=ROOT / "examples" / "models" / "m0.pth")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--workdir", type=Path, default=Path("bench_output"))
    args = parser.parse_args()
    work = args.workdir.resolve() / "pimd"
    ipi_xyz, _ = write_structures(work, 32)
    args.out.mkdir(parents=True, exist_ok=True)
    driver = [
        sys.executable,
        "-m",
        "ensemble_driver",
        "run",
        "--models",
        str(args.model),
        "--template",
        "init.xyz",
        "--unix",
        "--address",
        "ADDRESS",
        "-q",
    ]
    compressed = list(driver)
    if not args.no_compressed:
        compressed[5] = str(compress(args.model, work / "m0_compressed.pth"))
    started = time.time()
    rows = []
    for nbeads in args.beads:
        configs = [
            ("one driver, a request per bead", Client("single", driver), 1, None),
            ("two drivers, a request per bead", Client("two", driver, env=ONE_THREAD), 2, None),
            (f"one driver, batches of {nbeads}", Client("batched", driver), 1, nbeads),
            ("compressed: one driver, a request per bead", Client("c-single", compressed), 1, None),
            (f"compressed: one driver, batches of {nbeads}", Client("c-batched", compressed), 1, nbeads),
        ]
        for name, client, copies, batch in configs[:3] if args.no_compressed else configs:
            seconds = time_per_step(
                work / f"p{nbeads}_{client.name}",
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
            rows.append({"beads": nbeads, "kind": client.name, "config": name, "ms_per_step": seconds * 1000})
            print(f"P={nbeads:3d}  {name:34s} {seconds * 1000:9.2f} ms/step", flush=True)
    lines = [
        f"Path integrals, 32 atoms, i-PI PIMD (consolidated messages), model 0 only; measured "
        f"{time.strftime('%Y-%m-%d')} on this machine ({os.cpu_count()} cores), one session of "
        f"{(time.time() - started) / 60:.0f} min.",
        "",
        "| beads | configuration | ms/step | speed-up over a request per bead (same model) |",
        "|---|---|---|---|",
    ]
    for r in rows:
        kind = "c-single" if r["kind"].startswith("c-") else "single"
        base = next(x["ms_per_step"] for x in rows if x["beads"] == r["beads"] and x["kind"] == kind)
        r["speedup"] = base / r["ms_per_step"]
        lines.append(f"| {r['beads']} | {r['config']} | {r['ms_per_step']:.2f} | {r['speedup']:.2f} |")
    table = "\n".join(lines) + "\n"
    print(table)
    (args.out / "pimd_batch.md").write_text(table)
    (args.out / "pimd_batch.json").write_text(json.dumps(rows, indent=1))
    plot(rows, args.out / "pimd_batch.png")
    return 0


def plot(rows, path: Path) -> None:
    beads = sorted({r["beads"] for r in rows})
    labels = {
        "single": "one driver, a request per bead",
        "two": "two drivers",
        "batched": "one driver, batched",
        "c-single": "compressed, a request per bead",
        "c-batched": "compressed, batched",
    }
    series = {
        label: [next(r["ms_per_step"] for r in rows if r["beads"] == p and r["kind"] == kind) for p in beads]
        for kind, label in labels.items()
        if any(r["kind"] == kind for r in rows)
    }
    grouped_bars(
        path,
        [f"P = {p}" for p in beads],
        series,
        ylabel="ms per i-PI step",
        title="PIMD, 32 atoms: requests per bead vs i-PI's batched transport",
        figsize=(7, 4),
    )


if __name__ == "__main__":
    raise SystemExit(main())
