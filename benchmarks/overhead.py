"""What the driver adds to a step besides the model, with the model timed inside the run.

    .venv/bin/python benchmarks/overhead.py [--sizes 32 256 2048] [--rounds 3] [--init-each] [--sleeping-model] [--ase]
    .venv/bin/python benchmarks/overhead.py --sizes 32 --rounds 1 --steps 41 --warmup 10   # a smoke test
    .venv/bin/python benchmarks/overhead.py --tf-python .venv-tf/bin/python --pb model.pb

``step_cost.py`` divides the time a client adds to i-PI's step by the model's share timed
in another process. On a small virtual machine the model's own speed wanders by 5-10%
over tens of seconds (the same call, the same process), more than the 3% the target
allows, so that ratio mixes the client's cost with the machine's drift. Here the driver
runs in a child process with ``DeepPotModel.evaluate_batch`` wrapped by a clock: for
every step after the first 100 it records the model call and the period between two
calls (one whole i-PI step as the driver sees it). Both come from the same steps, so
the drift cancels:

    added / model = (median period - i-PI alone) / median model call

where "i-PI alone" is i-PI's time per step with its zero-cost dummy client (as in
step_cost.py). 1.00 means the driver costs nothing but the model call. What is above it
is the driver's own work and whatever makes i-PI's turn slower than with the dummy, so
the driver's own work is also measured alone: the CPU time of its thread from the end
of one model call to the start of the next (socket reads and writes, unit conversions,
bookkeeping), which leaves out the time it waits for i-PI or is preempted by it.
``--ase`` adds ASE's ``SocketClient`` with deepmd-kit's ASE calculator, clocked the same
way around its ``DeepPot.eval`` (the same model, so the two rows compare what each client
does besides the model without the drift between processes that ``step_cost.py`` is
exposed to). ``--init-each`` adds a row with an INIT before every structure (as with two or more
models); ``--sleeping-model`` one with the model replaced by a sleep as long as its call
(the driver's path unchanged, no CPU spent on a model, zero forces). Each configuration
runs ``--rounds`` times, interleaved; the median of the runs is reported. A table
(Markdown, JSON) and a PNG go to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    BIN,
    REPEATS,
    ROOT,
    Client,
    compress,
    grouped_bars,
    time_per_step,
    wait_for_socket,
    write_structures,
)

STEPS = {32: 401, 256: 301, 2048: 201}
WARMUP = 100  # steps dropped: TorchScript's first calls are slow
ASE = "ase-client"  # the child's flag for ASE's client instead of the driver


def child(
    model: str,
    natoms: int,
    workdir: Path,
    steps: int,
    flags: tuple[str, ...] | list[str] = (),
    sleep_ms: float | None = None,
) -> dict:
    """Run the driver in this process against a real i-PI; the clocked model calls. With
    ``sleep_ms`` the model call is replaced by a sleep that long (no CPU, zero forces)."""
    from ensemble_driver.cli import build_parser
    from ensemble_driver.demo.launch import ProcessGroup
    from ensemble_driver.models import deepmd as model_module
    from ensemble_driver.models.results import BatchEvaluation
    from ensemble_driver.run.command import run_command

    address = _prepare(workdir, natoms, steps)
    calls: list[tuple[float, float, float, float]] = []
    evaluate = model_module.DeepPotModel.evaluate_batch
    if sleep_ms is not None:

        def evaluate(self, positions, cells, atom_types, **parameters):
            time.sleep(sleep_ms / 1000)
            n = len(positions)
            return BatchEvaluation(np.zeros(n), np.zeros(positions.shape), np.zeros((n, 3, 3)))

    def clocked(self, *args, **kwargs):
        start, cpu_start = time.perf_counter(), time.thread_time()
        result = evaluate(self, *args, **kwargs)
        calls.append((start, time.perf_counter(), cpu_start, time.thread_time()))
        return result

    model_module.DeepPotModel.evaluate_batch = clocked
    args = build_parser().parse_args(
        [
            "run",
            "--models",
            model,
            "--template",
            str(workdir / "init.xyz"),
            "--unix",
            "--address",
            address,
            "-q",
            *flags,
        ]
    )
    with ProcessGroup(workdir / "logs") as group:
        group.start("i-pi", [str(BIN / "i-pi"), "input.xml"], cwd=workdir)
        watcher = threading.Thread(target=group.wait, args=(3600,), daemon=True)
        status = run_command(args)
        watcher.start()
        watcher.join(120)
    Path("/tmp/ipi_" + address).unlink(missing_ok=True)
    if status:
        raise SystemExit(f"the driver ended with status {status}")
    return _clocked_steps(calls)


def ase_child(model: str, natoms: int, workdir: Path, steps: int) -> dict:
    """The same run and clock with ASE's SocketClient and deepmd-kit's ASE calculator
    (``ase_client.py``) in this process: its model call is ``DeepPot.eval``, the rest
    (ASE's socket client, ``Atoms`` updates, the calculator's own work) is its own."""
    import ase.io
    from ase.calculators.socketio import SocketClient
    from ase_client import DPForSocket

    from ensemble_driver.demo.launch import ProcessGroup

    address = _prepare(workdir, natoms, steps)
    atoms = ase.io.read(workdir / "structure" / "init.extxyz")
    atoms.calc = calc = DPForSocket(model)
    calls: list[tuple[float, float, float, float]] = []
    evaluate = calc.dp.eval

    def clocked(*args, **kwargs):
        start, cpu_start = time.perf_counter(), time.thread_time()
        result = evaluate(*args, **kwargs)
        calls.append((start, time.perf_counter(), cpu_start, time.thread_time()))
        return result

    calc.dp.eval = clocked
    with ProcessGroup(workdir / "logs") as group:
        wait_for_socket(group.start("i-pi", [str(BIN / "i-pi"), "input.xml"], cwd=workdir), address)
        watcher = threading.Thread(target=group.wait, args=(3600,), daemon=True)
        SocketClient(unixsocket=address).run(atoms, use_stress=True)
        watcher.start()
        watcher.join(120)
    Path("/tmp/ipi_" + address).unlink(missing_ok=True)
    return _clocked_steps(calls)


def _prepare(workdir: Path, natoms: int, steps: int) -> str:
    """A fresh run directory with the i-PI input and structure; the socket's address."""
    from ensemble_driver.demo.inputs import SocketSettings, prepare_input

    if workdir.exists():
        shutil.rmtree(workdir)
    structure, _ = write_structures(workdir / "structure", natoms)
    address = f"overhead-{os.getpid()}"
    prepare_input(
        ROOT / "ipi_inputs" / "nvt.xml",
        workdir / "input.xml",
        socket=SocketSettings(address=address, consolidate_messages=True, timeout=0),
        steps=steps,
        prefix="o",
        outputs=[],
    )
    shutil.copy(structure, workdir / "init.xyz")
    return address


def _clocked_steps(calls: list[tuple[float, float, float, float]]) -> dict:
    """Medians over the steps after WARMUP of the clocked model calls (start, end, thread
    CPU at start, at end): the period between calls, the call, the client's own CPU."""
    steady = calls[WARMUP:]
    if len(steady) < 20:
        raise SystemExit(f"only {len(calls)} model calls")
    periods = [b[0] - a[0] for a, b in zip(steady, steady[1:])]
    # CPU time of the driver's thread from the end of one model call to the start of the
    # next: its own work (socket, conversions, bookkeeping), without the time it waits for
    # i-PI or is preempted by it
    own = [b[2] - a[3] for a, b in zip(steady, steady[1:])]
    return {
        "period_ms": statistics.median(periods) * 1000,
        "model_ms": statistics.median([c[1] - c[0] for c in steady]) * 1000,
        "own_cpu_ms": statistics.median(own) * 1000,
        "steps": len(periods),
    }


def main() -> int:
    global WARMUP  # --warmup: the steps _clocked_steps drops, in the children too
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 256, 2048], choices=sorted(REPEATS))
    parser.add_argument(
        "--rounds", type=int, default=3, help="runs of each configuration, interleaved (default: %(default)s)"
    )
    parser.add_argument("--tf-python", help="python of a TensorFlow environment (docs/dp-ipi.md), for --pb")
    parser.add_argument("--pb", type=Path, help="a TensorFlow model of Cu/Au: adds its rows")
    parser.add_argument(
        "--init-each",
        action="store_true",
        help="add a row with --init-each (an INIT before "
        "every structure, as with two or more models) beside the default",
    )
    parser.add_argument(
        "--sleeping-model",
        action="store_true",
        help="add a row with the model replaced by "
        "a sleep as long as the model's call (no CPU used): how much slower i-PI's turn gets "
        "when the client is slow, whatever the client",
    )
    parser.add_argument(
        "--ase",
        action="store_true",
        help="add a row for ASE's SocketClient with deepmd-kit's "
        "ASE calculator, clocked the same way (its model call is DeepPot.eval)",
    )
    parser.add_argument(
        "--steps", type=int, help="i-PI steps per run (default: 401, 301, 201 by size; at least WARMUP + 21)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=WARMUP,
        help="steps dropped at the start of each run (default: %(default)s); under 100, i-PI alone is the median "
        "of its steps after WARMUP instead of its means over 100 steps (short runs: --steps 41 --warmup 10)",
    )
    parser.add_argument("--no-compressed", action="store_true", help="leave out the compressed model's row")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--workdir", type=Path, default=Path("bench_output"))
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "NATOMS", "DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--child-flag", action="append", default=[], help=argparse.SUPPRESS)
    parser.add_argument("--child-sleep-ms", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    WARMUP = args.warmup
    if args.child:
        model, natoms, workdir = args.child
        steps = args.steps or STEPS[int(natoms)]
        if args.child_flag == [ASE]:
            print(json.dumps(ase_child(model, int(natoms), Path(workdir), steps)))
            return 0
        print(json.dumps(child(model, int(natoms), Path(workdir), steps, args.child_flag, args.child_sleep_ms)))
        return 0
    work = (args.workdir / "overhead").resolve()
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    m0 = ROOT / "examples" / "models" / "m0.pth"
    # (name, python, model, driver flags, sleep as long as the model's call in the round)
    configs = [("ensemble-driver", sys.executable, m0, [], False)]
    if args.init_each:
        configs.append(("ensemble-driver, --init-each", sys.executable, m0, ["--init-each"], False))
    if args.sleeping_model:
        configs.append(("ensemble-driver, model replaced by a sleep", sys.executable, m0, [], True))
    if not args.no_compressed:
        compressed = compress(m0, work / "m0_compressed.pth")
        configs.append(("ensemble-driver, compressed", sys.executable, compressed, [], False))
    if args.ase:
        configs.append(("ASE SocketClient + deepmd DP", sys.executable, m0, [ASE], False))
    if args.pb:
        if not args.tf_python:
            parser.error("--pb needs --tf-python")
        configs.append(("ensemble-driver (.pb)", str(Path(args.tf_python).absolute()), args.pb.resolve(), [], False))
    dummy = Client("dummy", [str(BIN / "i-pi-py_driver"), "-m", "dummy", "-u", "-a", "ADDRESS"])
    rows = []
    started = time.time()
    for natoms in args.sizes:
        ipi_xyz, _ = write_structures(work / f"n{natoms}", natoms)
        runs: dict[str, list[dict]] = {name: [] for name, *_ in configs}
        alone: list[float] = []
        for r in range(args.rounds):
            steps = args.steps or STEPS[natoms]
            alone.append(time_per_step(work / f"n{natoms}" / "dummy", dummy, ipi_xyz, steps, 3600, skip=WARMUP) * 1000)
            print(f"{natoms:5d} atoms  round {r + 1}  i-PI alone {alone[-1]:8.2f} ms/step", flush=True)
            for name, python, model, flags, sleeping in configs:
                command = [
                    python,
                    __file__,
                    "--child",
                    str(model),
                    str(natoms),
                    str(work / f"n{natoms}" / "run"),
                    f"--steps={steps}",
                    f"--warmup={WARMUP}",
                    *[f"--child-flag={flag}" for flag in flags],
                ]
                if sleeping:
                    command.append(f"--child-sleep-ms={runs['ensemble-driver'][-1]['model_ms']}")
                out = subprocess.run(command, capture_output=True, text=True, timeout=3600)
                if out.returncode:
                    raise SystemExit(f"{name}, {natoms} atoms: {out.stderr[-3000:]}")
                runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
                res = runs[name][-1]
                print(
                    f"{natoms:5d} atoms  round {r + 1}  {name:30s} period {res['period_ms']:8.2f}  "
                    f"model {res['model_ms']:8.2f}  own CPU {res['own_cpu_ms']:6.3f} ms",
                    flush=True,
                )
        ipi_alone = statistics.median(alone)
        for name, *_ in configs:
            ratios = [(x["period_ms"] - ipi_alone) / x["model_ms"] for x in runs[name]]
            rows.append(
                {
                    "natoms": natoms,
                    "client": name,
                    "ipi_alone_ms": ipi_alone,
                    "period_ms": statistics.median(x["period_ms"] for x in runs[name]),
                    "model_ms": statistics.median(x["model_ms"] for x in runs[name]),
                    "own_cpu_ms": statistics.median(x["own_cpu_ms"] for x in runs[name]),
                    "added_over_model": statistics.median(ratios),
                    "rounds": ratios,
                }
            )
    lines = [
        f"What the driver adds besides the model, the model timed inside the run; measured "
        f"{time.strftime('%Y-%m-%d')} in {(time.time() - started) / 60:.0f} min, median of "
        f"{args.rounds} interleaved runs.",
        "",
        "| atoms | client | i-PI alone ms | step ms | model call ms | client's own CPU ms | own / model | "
        "added / model (runs) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        each = ", ".join(f"{x:.3f}" for x in r["rounds"])
        lines.append(
            f"| {r['natoms']} | {r['client']} | {r['ipi_alone_ms']:.2f} | {r['period_ms']:.2f} | "
            f"{r['model_ms']:.2f} | {r['own_cpu_ms']:.3f} | {r['own_cpu_ms'] / r['model_ms']:.3f} | "
            f"{r['added_over_model']:.3f} ({each}) |"
        )
    table = "\n".join(lines) + "\n"
    print()
    print(table)
    (args.out / "overhead.md").write_text(table)
    (args.out / "overhead.json").write_text(json.dumps(rows, indent=1) + "\n")
    names = [name for name, *_ in configs]
    grouped_bars(
        args.out / "overhead.png",
        [f"{n} atoms" for n in args.sizes],
        {name: [r["added_over_model"] for r in rows if r["client"] == name] for name in names},
        ylabel="(step - i-PI alone) / model call",
        hline=1.0,
        title="What the driver adds besides the model (1.00: nothing)",
    )
    print(f"wrote {args.out / 'overhead.md'} and {args.out / 'overhead.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
