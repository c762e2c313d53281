"""Per-step cost of a real i-PI NVT run with each client, measured side by side in one run.

For 32, 256 and 2048 atoms of the Cu-Au alloy, i-PI runs ``ipi_inputs/nvt.xml`` (its
default consolidated messages) with, one after another:

- i-PI's zero-cost ``dummy`` client: i-PI's own share of a step;
- ``ensemble-driver`` on the shipped model 0, and on the same model compressed;
- ASE's ``SocketClient`` with deepmd-kit's ASE calculator (``ase_client.py``);
- with ``--tf-python`` (a TensorFlow environment, see README): deepmd-kit's C++ ``dp_ipi``
  and ``ensemble-driver`` on the same TensorFlow ``.pb`` model (``--pb``).

i-PI measures the time per step itself (``verbosity='medium'``: the mean over each 100
steps); the first window (warm-up) is dropped. The model's share is ``DeepPot.eval`` in a
fresh process of the same environment (``model_time.py``). Reported per client: the time
per step, the time it adds on top of i-PI's own share, that divided by the model's share
(1.00 is the floor: the client adds nothing but the model), and its time relative to
ensemble-driver's. A table (Markdown) and a PNG plot are written to ``--out``.

    .venv/bin/python benchmarks/step_cost.py                    # about 15 minutes on 2 cores
    .venv/bin/python benchmarks/step_cost.py --sizes 32 --steps 301
    .venv/bin/python benchmarks/step_cost.py --tf-python .venv-tf/bin/python \\
        --pb compare_dp_ipi_output/train/model.pb
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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent

from ensemble_driver.ipi_input import SocketSettings, prepare_input  # noqa: E402
from ensemble_driver.launch import ProcessGroup  # noqa: E402

REPEATS = {32: (2, 2, 2), 256: (4, 4, 4), 2048: (8, 8, 8)}
_TIMING = re.compile(r"Average timings at MD step\s+(\d+)\. t/step:\s+([0-9.eE+-]+)")


def write_structures(directory: Path, natoms: int) -> tuple[Path, Path]:
    """The alloy with ``natoms`` atoms as i-PI xyz (for i-PI) and extxyz (for ASE)."""
    from ase.build import bulk

    atoms = bulk("Cu", "fcc", a=3.87, cubic=True).repeat(REPEATS[natoms])
    rng = np.random.default_rng(natoms)
    symbols = np.array(["Cu", "Au"] * (natoms // 2))
    rng.shuffle(symbols)
    atoms.set_chemical_symbols(list(symbols))
    directory.mkdir(parents=True, exist_ok=True)
    ipi = directory / "init.xyz"
    lengths = atoms.cell.lengths()
    with open(ipi, "w") as f:
        f.write(f"{natoms}\n# CELL(abcABC): {lengths[0]:.5f} {lengths[1]:.5f} {lengths[2]:.5f} 90 90 90 "
                "positions{angstrom} cell{angstrom}\n")
        for s, p in zip(atoms.get_chemical_symbols(), atoms.positions):
            f.write(f"{s:>4s} {p[0]:.8f} {p[1]:.8f} {p[2]:.8f}\n")
    ase_file = directory / "init.extxyz"
    atoms.write(ase_file)
    return ipi, ase_file


@dataclass
class Client:
    name: str
    argv: list[str]  # "ADDRESS" is replaced by the socket name of the run
    model_ms: float | None  # the model's share for this client's model, None for dummy
    ok_status: frozenset = frozenset({0})
    files: dict[str, str] = field(default_factory=dict)  # written in the run directory, "ADDRESS" replaced


def time_per_step(workdir: Path, client: Client, structure: Path, steps: int, timeout: float) -> float:
    """Mean seconds per i-PI step with ``client``, windows after the first."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    shutil.copy(structure, workdir / "init.xyz")
    address = f"bench-{os.getpid()}-{abs(hash(str(workdir))) % 100000}"
    prepare_input(ROOT / "ipi_inputs" / "nvt.xml", workdir / "input.xml",
                  socket=SocketSettings(address=address, consolidate_messages=True, timeout=0),
                  steps=steps, prefix="bench", outputs=[], verbosity="medium")
    argv = [a.replace("ADDRESS", address) for a in client.argv]
    for name, content in client.files.items():
        (workdir / name).write_text(content.replace("ADDRESS", address))
    with ProcessGroup(workdir / "logs") as group:
        ipi = group.start("i-pi", [str(BIN / "i-pi"), "input.xml"], cwd=workdir)
        socket_file = Path("/tmp/ipi_" + address)
        deadline = time.monotonic() + 120
        while not socket_file.exists():  # some clients (i-PI's own) do not retry connecting
            if ipi.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"i-PI did not open {socket_file}: {ipi.tail()}")
            time.sleep(0.05)
        group.start("client", argv, cwd=workdir, ok_status=client.ok_status)
        group.wait(timeout)
    Path("/tmp/ipi_" + address).unlink(missing_ok=True)
    windows = [(int(s), float(t)) for s, t in _TIMING.findall((workdir / "logs" / "i-pi.log").read_text())]
    steady = [t for s, t in windows if s >= 100]
    if not steady:
        raise RuntimeError(f"no timing after step 100 in {workdir / 'logs' / 'i-pi.log'}")
    return statistics.mean(steady)


def model_ms(python: str, model: Path, structure: Path) -> float:
    out = subprocess.run([python, str(HERE / "model_time.py"), str(model), str(structure)],
                         capture_output=True, text=True, check=True, timeout=1800)
    return float(out.stdout.strip().splitlines()[-1])


def compress(model: Path, out: Path) -> Path:
    if not out.exists():
        subprocess.run([str(BIN / "dp"), "--pt", "compress", "-i", str(model), "-o", str(out)], cwd=out.parent,
                       check=True, capture_output=True, timeout=1800)
    return out


def clients_for(natoms: int, structures: tuple[Path, Path], work: Path, args) -> list[Client]:
    ipi_xyz, ase_xyz = structures
    m0 = ROOT / "examples" / "models" / "m0.pth"
    m0c = compress(m0, work / "m0_compressed.pth")
    py = sys.executable
    ours = [str(BIN / "ensemble-driver"), "run", "--template", "init.xyz", "--unix", "--address", "ADDRESS", "-q"]
    clients = [
        Client("i-PI alone (dummy client)", [str(BIN / "i-pi-py_driver"), "-m", "dummy", "-u", "-a", "ADDRESS"], None),
        Client("ensemble-driver", ours[:2] + ["--models", str(m0)] + ours[2:], model_ms(py, m0, ase_xyz)),
        Client("ensemble-driver, compressed", ours[:2] + ["--models", str(m0c)] + ours[2:], model_ms(py, m0c, ase_xyz)),
        Client("ASE SocketClient + deepmd DP", [py, str(HERE / "ase_client.py"), str(m0), str(ase_xyz), "ADDRESS"],
               model_ms(py, m0, ase_xyz)),
    ]
    if args.tf_python and args.pb:
        tf_bin = Path(args.tf_python).parent
        pb_ms = model_ms(args.tf_python, args.pb, ase_xyz)
        type_map = subprocess.run(
            [args.tf_python, "-c", f"from deepmd.infer import DeepPot; print(' '.join(DeepPot('{args.pb}').get_type_map()))"],
            capture_output=True, text=True, check=True).stdout.split()
        config = json.dumps({
            "verbose": False, "use_unix": True, "port": 31415, "host": "ADDRESS", "graph_file": str(args.pb),
            "coord_file": "init.xyz", "atom_type": {e: i for i, e in enumerate(type_map)},
        })
        clients += [
            # dp_ipi exits 1 when i-PI sends EXIT
            Client("dp_ipi (C++, .pb)", [str(tf_bin / "dp_ipi"), "dp_ipi.json"], pb_ms, frozenset({0, 1}),
                   files={"dp_ipi.json": config}),
            Client("ensemble-driver (.pb)", [str(tf_bin / "ensemble-driver"), "run", "--models", str(args.pb),
                                             *ours[2:]], pb_ms),
        ]
    return clients


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 256, 2048], choices=sorted(REPEATS))
    parser.add_argument("--steps", type=int, default=None, help="i-PI steps per run (default: 401, 301, 201 by size)")
    parser.add_argument("--tf-python", help="python of a TensorFlow environment with deepmd-kit[cpu] and dp_ipi")
    parser.add_argument("--pb", type=Path, help="TensorFlow model of Cu/Au for dp_ipi")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="where the table and plot go")
    parser.add_argument("--workdir", type=Path, default=Path("bench_output"))
    args = parser.parse_args()
    if args.pb:
        args.pb = args.pb.resolve()
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    started = time.time()
    for natoms in args.sizes:
        structures = write_structures(work / f"n{natoms}", natoms)
        steps = args.steps or {32: 401, 256: 301, 2048: 201}[natoms]
        clients = clients_for(natoms, structures, work, args)
        per_step = {}
        for client in clients:
            per_step[client.name] = time_per_step(work / f"n{natoms}" / "runs" / client.name.split()[0], client,
                                                  structures[0], steps, timeout=3600)
            print(f"{natoms:5d} atoms  {client.name:32s} {per_step[client.name] * 1000:9.2f} ms/step", flush=True)
        alone = per_step[clients[0].name]
        ours = per_step["ensemble-driver"]
        for client in clients:
            total = per_step[client.name]
            row = {"natoms": natoms, "client": client.name, "ms_per_step": total * 1000,
                   "model_ms": client.model_ms, "added_ms": None, "added_over_model": None,
                   "relative_to_ours": total / ours}
            if client.model_ms is not None:
                row["added_ms"] = (total - alone) * 1000
                row["added_over_model"] = row["added_ms"] / client.model_ms
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
        f"({os.cpu_count()} cores), all runs in one session of {seconds / 60:.0f} min.",
        "",
        "| atoms | client | ms/step | model ms | added ms | added / model | time vs ensemble-driver |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        fmt = (lambda x, f: "" if x is None else f % x)
        lines.append(f"| {r['natoms']} | {r['client']} | {r['ms_per_step']:.2f} | {fmt(r['model_ms'], '%.2f')} | "
                     f"{fmt(r['added_ms'], '%.2f')} | {fmt(r['added_over_model'], '%.3f')} | "
                     f"{r['relative_to_ours']:.3f} |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r["natoms"] for r in rows})
    names = [r["client"] for r in rows if r["natoms"] == sizes[0] and r["added_over_model"] is not None]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    width = 0.8 / max(len(names), 1)
    for k, name in enumerate(names):
        values = [next((r["added_over_model"] for r in rows if r["natoms"] == n and r["client"] == name), np.nan)
                  for n in sizes]
        ax.bar(np.arange(len(sizes)) + k * width, values, width, label=name)
    ax.axhline(1.0, color="black", lw=1, ls="--")
    ax.set_xticks(np.arange(len(sizes)) + width * (len(names) - 1) / 2)
    ax.set_xticklabels([f"{n} atoms" for n in sizes])
    ax.set_ylabel("time added per step / model's own time")
    ax.set_title("Cost of each client on top of i-PI (1.0 = the model alone)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    raise SystemExit(main())
