"""``ensemble-driver demo``: a short i-PI path-integral run on the shipped ensemble.

It runs the very files a user starts from (``ipi_inputs/pimd.xml`` and the four models
in ``examples/models/``) with a private socket name and fewer steps, by the one command a
user runs: the driver under ``mpiexec`` with ``--start-ipi`` (rank 0 runs i-PI; model 0
drives, the others give the deviation every few steps), watched with a deadline, and
prints where the outputs are.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DriverError
from .inputs import SocketSettings, prepare_input
from .launch import GroupFailed, ProcessGroup

ROOT = Path(__file__).resolve().parents[3]  # driver/ensemble_driver/demo/command.py -> the checkout
MARKER = ".ensemble-driver-demo"


def _find(name: str) -> str:
    candidate = Path(sys.executable).parent / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise ConfigError(f"demo: the command {name!r} is not installed (pip install ipi)")
    return found


def _prepare_outdir(outdir: Path) -> None:
    if outdir.exists() and any(outdir.iterdir()):
        if not (outdir / MARKER).exists():
            raise ConfigError(f"demo: {outdir} exists and is not a demo directory; choose another --outdir")
        shutil.rmtree(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / MARKER).write_text("written by ensemble-driver demo; removed by the next demo run\n")


def run_demo(outdir: str | Path, *, steps: int, beads: int, ranks: int, out_freq: int, timeout: float) -> int:
    xml = ROOT / "ipi_inputs" / "pimd.xml"
    models = [ROOT / "examples" / "models" / f"m{k}.pth" for k in range(4)]
    for needed in (xml, *models):
        if not needed.exists():
            raise ConfigError(f"demo: {needed} not found; the demo runs from a source checkout")
    if steps < 1 or beads < 1 or out_freq < 1:
        raise ConfigError("demo: --steps, --beads and --out-freq must be at least 1")
    if not 1 <= ranks <= len(models):
        raise ConfigError(f"demo: --ranks must be between 1 and {len(models)}")
    outdir = Path(outdir).resolve()
    _prepare_outdir(outdir)
    address = f"demo-{os.getpid()}"
    prepare_input(xml, outdir / "pimd.xml", socket=SocketSettings(address=address), steps=steps, nbeads=beads)
    driver_cmd = [
        _find("mpiexec"),
        "-n",
        str(ranks),
        sys.executable,
        "-m",
        "ensemble_driver",
        "run",
        "--models",
        *map(str, models),
        "--ipi-input",
        "pimd.xml",  # the atoms, the socket and the beads: i-PI's own input says them
        "--start-ipi",  # and rank 0 runs i-PI on it
        "--connect-timeout",
        "120",
        "--out-freq",
        str(out_freq),
    ]
    print(f"demo: i-PI path-integral run, {beads} beads, {steps} steps, 32-atom Cu-Au at 600 K, in {outdir}")
    print(f"demo: driver: mpiexec -n {ranks} ensemble-driver {' '.join(driver_cmd[6:])}")
    try:
        with ProcessGroup(outdir / "logs") as group:
            group.start("driver", driver_cmd, cwd=outdir)
            group.wait(timeout)
    except GroupFailed as exc:
        raise DriverError(f"demo failed: {exc}") from None
    finally:
        Path("/tmp/ipi_" + address).unlink(missing_ok=True)
    _summarise(outdir, beads)
    return 0


def property_columns(path: Path) -> dict[str, int]:
    """Column index of each property in an i-PI properties file, from its header lines
    ``# column   6     --> potential{electronvolt} : ...`` (``cols.  2-3`` for vectors:
    the first column)."""
    columns = {}
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        match = re.match(r"#\s*col(?:umn|s\.)\s+(\d+)(?:-\d+)?\s+-->\s+([A-Za-z_]\w*)", line)
        if match:
            columns[match.group(2)] = int(match.group(1)) - 1
    return columns


def _summarise(outdir: Path, beads: int) -> None:
    props = np.atleast_2d(np.loadtxt(outdir / "pimd.out"))
    col = property_columns(outdir / "pimd.out")
    driver_log = (outdir / "logs" / "driver.log").read_text()
    counts = re.search(r"evaluations per request id: (\{[^}]*\})", driver_log)
    pot, temp, step = col["potential"], col["temperature"], col["step"]
    print(
        f"demo: done. Potential energy (eV): step 0 {props[0, pot]:.4f} -> step {int(props[-1, step])} "
        f"{props[-1, pot]:.4f}; temperature {props[-1, temp]:.0f} K"
    )
    if counts:
        print(f"demo: evaluations per bead (request id: count): {counts.group(1)}")
    devi_files = sorted(outdir.glob("model_devi*.out"))
    for path in devi_files:
        table = np.atleast_2d(np.loadtxt(path))
        print(
            f"demo: {path.name}: {len(table)} rows (steps {int(table[0, 0])}..{int(table[-1, 0])}), "
            f"max_devi_f {table[:, 4].min():.3f}-{table[:, 4].max():.3f} eV/A"
        )
    print("demo: outputs:")
    described = {
        "model_devi*.out": "model deviation of the 4-model ensemble, one file per bead (LAMMPS format: "
        "step, max/min/avg_devi_v, max/min/avg_devi_f)",
        "pimd.out": "i-PI properties, one row per step (columns described in its header)",
        "pimd.pos_*.extxyz": f"positions of each of the {beads} beads (extxyz, Angstrom), every 10 steps",
        "pimd.xml": "the i-PI input that ran (ipi_inputs/pimd.xml with this socket and step count)",
        "logs/driver.log": "the driver's log",
        "ipi.log": "i-PI's log (i-PI started by the driver)",
    }
    for pattern, what in described.items():
        if any(outdir.glob(pattern)):
            print(f"  {outdir / pattern}: {what}")
