"""Soak: 20,000 evaluations through a real i-PI, watching the driver's memory and descriptors.

Runs ``ipi_inputs/pimd.xml`` (4 beads, i-PI's default consolidated messages) for 5,000
steps (20,004 evaluations) with ``mpiexec -n 2 ensemble-driver`` on the four shipped
models (deviation every 10 steps, so the MPI path is soaked too), samples every rank's
resident memory (VmRSS) and open file descriptors from /proc once a second, and prints
them at the start (after 1,000 evaluations, once the models are warm) and at the end
(the last sample before i-PI finishes). A leak shows as growth; the aim is less than
5 MB and no descriptor per rank.

    .venv/bin/python benchmarks/soak.py [--steps 5000] [--workdir soak_output]

Not a test: it takes about 5 minutes on 2 cores and its numbers are printed, not kept.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

from ensemble_driver.demo.inputs import SocketSettings, prepare_input  # noqa: E402
from ensemble_driver.demo.launch import ProcessGroup  # noqa: E402


def rank_pids(marker: str) -> dict[int, int]:
    """{MPI rank: pid} of the driver processes whose command line contains ``marker``."""
    ranks = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker.encode() in cmdline and b"ensemble_driver" in cmdline:
            for var in environ:
                if var.startswith(b"PMI_RANK="):
                    ranks[int(var[9:])] = int(entry.name)
    return ranks


def sample(pid: int) -> tuple[float, int] | None:
    """(resident memory in MB, open descriptors) of a process, None if it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return rss_kb / 1024.0, fds


def last_step(props: Path) -> int:
    try:
        lines = [line for line in props.read_text().splitlines() if line and not line.startswith("#")]
    except OSError:
        return -1
    return int(float(lines[-1].split()[0])) if lines else -1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=5000, help="i-PI steps, 4 beads each (default: %(default)s)")
    parser.add_argument("--workdir", type=Path, default=Path("soak_output"))
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    address = f"soak-{os.getpid()}"
    prepare_input(
        ROOT / "ipi_inputs" / "pimd.xml",
        workdir / "input.xml",
        socket=SocketSettings(address=address, consolidate_messages=True),
        steps=args.steps,
        prefix="soak",
        outputs=["<properties stride='10' filename='out'> [ step, potential{electronvolt} ] </properties>"],
    )
    models = [str(ROOT / "examples" / "models" / f"m{k}.pth") for k in range(4)]
    driver = [
        str(BIN / "mpiexec"),
        "-n",
        "2",
        sys.executable,
        "-m",
        "ensemble_driver",
        "run",
        "--models",
        *models,
        "--template",
        "init.xyz",
        "--unix",
        "--address",
        address,
        "--nbeads",
        "4",
        "--out-freq",
        "10",
        "-q",
    ]
    start_step = 250  # 1,000 evaluations: past the models' warm-up
    samples: dict[int, list[tuple[int, float, int]]] = {}
    t0 = time.perf_counter()
    with ProcessGroup(workdir / "logs") as group:
        group.start("i-pi", [str(BIN / "i-pi"), "input.xml"], cwd=workdir)
        group.start("driver", driver, cwd=workdir)
        while True:
            codes = group.poll()
            if all(code is not None for code in codes.values()):
                break
            if any(code not in (None, 0) for code in codes.values()):
                group.stop()
                print(f"soak: a process failed: {codes}; see {workdir / 'logs'}")
                return 1
            step = last_step(workdir / "soak.out")
            if step >= start_step:
                for rank, pid in rank_pids(address).items():
                    got = sample(pid)
                    if got is not None:
                        samples.setdefault(rank, []).append((step, *got))
            time.sleep(1.0)
    wall = time.perf_counter() - t0
    evaluations = 4 * (args.steps + 1)
    print(
        f"soak: {evaluations} evaluations (i-PI PIMD, 4 beads, {args.steps} steps; 4 models on 2 ranks, "
        f"deviation every 10 steps) in {wall:.0f} s"
    )
    print(
        f"{'rank':>4} {'from step':>10} {'to step':>8} {'RSS start MB':>13} {'RSS end MB':>11} {'growth MB':>10} "
        f"{'fds start':>10} {'fds end':>8}"
    )
    worst_rss, worst_fd = 0.0, 0
    for rank in sorted(samples):
        (s0, rss0, fd0), (s1, rss1, fd1) = samples[rank][0], samples[rank][-1]
        worst_rss, worst_fd = max(worst_rss, rss1 - rss0), max(worst_fd, fd1 - fd0)
        print(f"{rank:>4} {s0:>10} {s1:>8} {rss0:>13.1f} {rss1:>11.1f} {rss1 - rss0:>10.1f} {fd0:>10} {fd1:>8}")
    ok = worst_rss < 5.0 and worst_fd == 0
    print(
        f"soak: largest growth {worst_rss:.1f} MB and {worst_fd} descriptors: {'within' if ok else 'OUTSIDE'} "
        "the aim (< 5 MB, 0 descriptors)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
