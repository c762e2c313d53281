"""What the benchmarks share: structures, one timed i-PI run per client, model timing."""

from __future__ import annotations

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

from ensemble_driver.demo.inputs import SocketSettings, prepare_input  # noqa: E402
from ensemble_driver.demo.launch import ProcessGroup  # noqa: E402

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
        f.write(
            f"{natoms}\n# CELL(abcABC): {lengths[0]:.5f} {lengths[1]:.5f} {lengths[2]:.5f} 90 90 90 "
            "positions{angstrom} cell{angstrom}\n"
        )
        for s, p in zip(atoms.get_chemical_symbols(), atoms.positions):
            f.write(f"{s:>4s} {p[0]:.8f} {p[1]:.8f} {p[2]:.8f}\n")
    ase_file = directory / "init.extxyz"
    atoms.write(ase_file)
    return ipi, ase_file


@dataclass
class Client:
    name: str
    argv: list[str]  # "ADDRESS" is replaced by the socket name of the run
    ok_status: frozenset = frozenset({0})
    files: dict[str, str] = field(default_factory=dict)  # written in the run directory, "ADDRESS" replaced
    env: dict[str, str] = field(default_factory=dict)  # added to the environment
    model: tuple[str, Path] | None = None  # (python, model file): time the model's share in each round

    def environ(self) -> dict[str, str] | None:
        return {**os.environ, **self.env} if self.env else None


def wait_for_socket(ipi, address: str, timeout: float = 120) -> None:
    """Wait until i-PI (a ProcessGroup member) has opened its UNIX socket: some clients
    (i-PI's own, ASE's) do not retry connecting. Raises if i-PI ends or times out first."""
    socket_file = Path("/tmp/ipi_" + address)
    deadline = time.monotonic() + timeout
    while not socket_file.exists():
        if ipi.popen.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"i-PI did not open {socket_file}: {ipi.tail()}")
        time.sleep(0.05)


def time_per_step(
    workdir: Path,
    client: Client,
    structure: Path,
    steps: int,
    timeout: float,
    *,
    xml: str = "nvt.xml",
    nbeads: int | None = None,
    batch_size: int | None = None,
    copies: int = 1,
    skip: int = 100,
) -> float:
    """Mean seconds per i-PI step (its own timing, ``verbosity='medium'``: means over
    steps 0, 1-100, 101-200, ...; the windows up to step 100, with TorchScript's slow
    first calls, are dropped) with ``copies`` instances of ``client`` connected.

    With ``skip`` under 100 (short runs), i-PI times every step (``verbosity='high'``)
    and the median of the steps after ``skip`` is returned: short runs alternated
    many times follow this machine's drift (10-20% over minutes) more closely."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    address = f"bench-{os.getpid()}-{abs(hash(str(workdir))) % 100000}"
    prepare_input(
        ROOT / "ipi_inputs" / xml,
        workdir / "input.xml",
        socket=SocketSettings(address=address, consolidate_messages=True, timeout=0, batch_size=batch_size),
        steps=steps,
        nbeads=nbeads,
        prefix="bench",
        outputs=[],
        verbosity="medium" if skip >= 100 else "high",
    )
    shutil.copy(structure, workdir / "init.xyz")  # after: prepare_input copies the input's own init.xyz
    argv = [a.replace("ADDRESS", address) for a in client.argv]
    for name, content in client.files.items():
        (workdir / name).write_text(content.replace("ADDRESS", address))
    with ProcessGroup(workdir / "logs") as group:
        ipi = group.start("i-pi", [str(BIN / "i-pi"), "input.xml"], cwd=workdir)
        wait_for_socket(ipi, address)
        for k in range(copies):
            group.start(f"client{k}", argv, cwd=workdir, ok_status=client.ok_status, env=client.environ())
        group.wait(timeout)
    Path("/tmp/ipi_" + address).unlink(missing_ok=True)
    windows = [(int(s), float(t)) for s, t in _TIMING.findall((workdir / "logs" / "i-pi.log").read_text())]
    steady = [t for s, t in windows if s > skip]
    if not steady:
        raise RuntimeError(f"no timing after step {skip} in {workdir / 'logs' / 'i-pi.log'}")
    return statistics.mean(steady) if skip >= 100 else statistics.median(steady)


def model_ms(python: str, model: Path, structure: Path) -> float:
    out = subprocess.run(
        [python, str(HERE / "model_time.py"), str(model), str(structure)],
        capture_output=True,
        text=True,
        check=True,
        timeout=1800,
    )
    return float(out.stdout.strip().splitlines()[-1])


def compress(model: Path, out: Path) -> Path:
    if not out.exists():
        subprocess.run(
            [str(BIN / "dp"), "--pt", "compress", "-i", str(model), "-o", str(out)],
            cwd=out.parent,
            check=True,
            capture_output=True,
            timeout=1800,
        )
    return out


def grouped_bars(
    path: Path,
    groups: list[str],
    series: dict[str, list[float]],
    *,
    ylabel: str,
    title: str,
    hline: float | None = None,
    figsize=(8, 4.5),
) -> None:
    """A PNG of bars: one group per entry of ``groups``, one bar per series in each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=figsize)
    width = 0.8 / max(len(series), 1)
    for k, (label, values) in enumerate(series.items()):
        ax.bar(np.arange(len(groups)) + k * width, values, width, label=label)
    if hline is not None:
        ax.axhline(hline, color="black", lw=1, ls="--")
    ax.set_xticks(np.arange(len(groups)) + width * (len(series) - 1) / 2)
    ax.set_xticklabels(groups)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
