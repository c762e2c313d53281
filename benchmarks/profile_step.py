"""Profile the hot path of a plain step: the driver under cProfile while i-PI runs NVT.

    .venv/bin/python benchmarks/profile_step.py [--natoms 32] [--steps 301] [--top 25]

Runs ``ensemble-driver run`` in this process under ``cProfile`` (model 0, no deviation)
against a real i-PI, then prints the functions by own time and, per step, the time the
driver spends outside the model call (socket, unit conversion, bookkeeping, and waiting
for i-PI).
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BIN, ROOT, write_structures  # noqa: E402

from ensemble_driver.cli import build_parser  # noqa: E402
from ensemble_driver.demo.inputs import SocketSettings, prepare_input  # noqa: E402
from ensemble_driver.demo.launch import ProcessGroup  # noqa: E402
from ensemble_driver.run.command import run_command  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--natoms", type=int, default=32, choices=[32, 256, 2048])
    parser.add_argument("--steps", type=int, default=301)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--model", default=str(ROOT / "examples" / "models" / "m0.pth"))
    parser.add_argument("--workdir", type=Path, default=Path("bench_output"))
    args = parser.parse_args()
    work = args.workdir.resolve() / f"profile{args.natoms}"
    if work.exists():
        shutil.rmtree(work)
    structure, _ = write_structures(work / "structure", args.natoms)
    address = f"profile-{os.getpid()}"
    prepare_input(
        ROOT / "ipi_inputs" / "nvt.xml",
        work / "input.xml",
        socket=SocketSettings(address=address, consolidate_messages=True, timeout=0),
        steps=args.steps,
        prefix="prof",
        outputs=[],
    )
    shutil.copy(structure, work / "init.xyz")
    driver_args = build_parser().parse_args(
        ["run", "--models", args.model, "--template", str(work / "init.xyz"), "--unix", "--address", address, "-q"]
    )
    profile = cProfile.Profile()
    with ProcessGroup(work / "logs") as group:
        group.start("i-pi", [str(BIN / "i-pi"), "input.xml"], cwd=work)
        watcher = threading.Thread(target=group.wait, args=(3600,), daemon=True)
        started = time.perf_counter()
        profile.enable()
        status = run_command(driver_args)
        profile.disable()
        wall = time.perf_counter() - started
        watcher.start()
        watcher.join(120)
    Path("/tmp/ipi_" + address).unlink(missing_ok=True)
    if status:
        raise SystemExit(f"the driver ended with status {status}")
    stats = pstats.Stats(profile)
    stats.sort_stats("tottime").print_stats(args.top)
    print("the driver's own functions, by cumulative time:")
    stats.sort_stats("cumulative").print_stats("ensemble_driver", args.top)
    # the model's share: DeepPotModel.evaluate_batch (the direct PyTorch path or DeepPot.eval)
    evals = [
        (k, v) for k, v in stats.stats.items() if k[2] == "evaluate_batch" and k[0].endswith(("deepmd.py", "direct.py"))
    ]
    in_eval = max((v[3] for k, v in evals), default=0.0)
    calls = max((v[1] for k, v in evals), default=0)
    loop = [(k, v) for k, v in stats.stats.items() if k[2] == "run" and k[0].endswith("session.py")]
    in_loop = loop[0][1][3] if loop else float("nan")
    print(
        f"wall {wall:.2f} s; Session.run {in_loop:.2f} s; model calls {in_eval:.2f} s in {calls} calls "
        "(times include cProfile's own overhead)"
    )
    if calls:
        print(
            f"per step: {1000 * in_eval / calls:.3f} ms in the model call, "
            f"{1000 * (in_loop - in_eval) / calls:.3f} ms elsewhere in the session (waiting on i-PI included)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
