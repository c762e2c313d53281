"""i-PI inputs written by the tests, run with the driver reading them (``--ipi-input``),
and the rows expected of those runs: the builders of tests/peers/test_ipi_input.py (a
``<system>``, a ``<simulation>`` writing every bead's positions in i-PI's binary format),
the run, every bead's frames and the rows deepmd-kit makes of them, also used by
test_uncertainty, test_replacement, test_ipi_minimize and test_start_ipi."""

from __future__ import annotations

import shutil

from ensemble_driver.demo.launch import ProcessGroup
from ensemble_driver.deviation import Deviation
from ensemble_driver.outputs.model_devi import format_row
from ensemble_driver.wire import units
from support.harness import deepmd_deviation
from support.ipi_runs import read_ipi_binary
from support.mpi import mpiexec
from support.paths import IPI_INPUTS, tool

#: every input's <total_steps>, and the driver's --out-freq
STEPS, OUT_FREQ = 6, 2
MOTION = """
    <motion mode='dynamics'>
      <dynamics mode='nvt'>
        <timestep units='femtosecond'> 2.0 </timestep>
        <thermostat mode='pile_l'><tau units='femtosecond'> 100 </tau></thermostat>{nmts}
      </dynamics>
    </motion>"""


def system(nbeads: int, forces: str, *, prefix: str = "", temperature: int = 600, nmts: str = "") -> str:
    attribute = f" prefix='{prefix}'" if prefix else ""
    return f"""
  <system{attribute}>
    <initialize nbeads='{nbeads}'>
      <file mode='xyz' units='angstrom'> init.xyz </file>
      <velocities mode='thermal' units='kelvin'> {temperature} </velocities>
    </initialize>
    <forces> {forces} </forces>
    <ensemble><temperature units='kelvin'> {temperature} </temperature></ensemble>{MOTION.format(nmts=nmts)}
  </system>"""


def ipi_input(
    address: str, systems: str, *, batch: int = 1, extra_ff: str = "", smotion: str = "", outputs: str = ""
) -> str:
    batching = f"<batch_size> {batch} </batch_size>" if batch > 1 else ""
    return f"""<simulation verbosity='quiet' safe_stride='2'>
  <output prefix='sim'>
    <trajectory filename='bin' stride='1' format='bin'> positions </trajectory>
    <checkpoint stride='2'/>{outputs}
  </output>
  <total_steps> {STEPS} </total_steps>
  <prng><seed> 31415 </seed></prng>
  <ffsocket name='dp' mode='unix'>
    <address> {address} </address>
    <timeout> 600 </timeout>{batching}
  </ffsocket>{extra_ff}{systems}{smotion}
</simulation>
"""


def run(tmp_path, xml: str, model_paths, *extra: str, nranks: int = 2) -> list[str]:
    """i-PI on ``xml`` and the driver with --ipi-input (no template, beads or socket)."""
    shutil.copy(IPI_INPUTS / "init.xyz", tmp_path / "init.xyz")
    (tmp_path / "input.xml").write_text(xml)
    driver = mpiexec(
        nranks,
        [tool("ensemble-driver"), "run", "--models", *map(str, model_paths), "--ipi-input", "input.xml"]
        + ["--out-freq", str(OUT_FREQ), "--connect-timeout", "120", "-v", *extra],
    )
    with ProcessGroup(tmp_path / "logs") as group:
        group.start("i-pi", [tool("i-pi"), "input.xml"], cwd=tmp_path)
        member = group.start("driver", driver, cwd=tmp_path)
        group.wait(300)
    return [member.log_path.read_text()]


def expected_rows(frames, model_paths, reference, symbols, per_step: int = 1) -> list[str]:
    """Rows from i-PI's frames [(step, h, q)] (q: the bead's positions, Bohr)."""
    rows = []
    for step, h, q in frames:
        if step % OUT_FREQ:
            continue
        cell, positions = units.cell_from_wire(h), units.positions_from_wire(q)
        row = Deviation(*deepmd_deviation(reference, model_paths, symbols, positions, cell))
        rows.append(format_row(step, row).rstrip("\n"))
    return rows


def written_rows(path) -> list[str]:
    return [line for line in path.read_text().splitlines() if not line.startswith("#")]


def bead_frames(workdir, nbeads: int, prefix: str = "") -> list[list[tuple]]:
    """Every bead's frames as i-PI wrote them (binary: full precision)."""
    name = f"{prefix}_sim" if prefix else "sim"
    width = len(str(nbeads - 1))
    return [read_ipi_binary(workdir / f"{name}.bin_{str(b).zfill(width)}.bin", STEPS + 1) for b in range(nbeads)]
