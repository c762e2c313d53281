"""``--ipi-input`` with i-PI's geometry optimisers (``<motion mode='minimize'>``), which
evaluate through their clone of the forces: a row for every structure a line search
evaluates, labelled with the optimiser's step (the step repeated, as LAMMPS's
``pair_style deepmd`` writes during ``minimize``), the last row of each step on i-PI's
structure of that step. Each run is real i-PI 3.3 with the driver under mpiexec; the
evaluations per step are i-PI's own count (``Number of force calls``, which it prints at
every step), every row is recomputed with deepmd-kit's ``calc_model_devi`` on the structure
i-PI sent (the driver's dump of it), and the last row of every step on i-PI's own binary
frame of that step, at the printed precision. An estimator's clone gets no rows, said once."""

from __future__ import annotations

import re
import shutil

import ase.io
import numpy as np
import pytest
from support.ipi_inputs import OUT_FREQ, expected_rows, written_rows
from support.ipi_runs import read_ipi_binary
from support.mpi import mpiexec
from support.paths import IPI_INPUTS, tool

from ensemble_driver.demo.launch import ProcessGroup
from ensemble_driver.wire import units

STEPS = 6


def optimizer_state(mode: str) -> str:
    """State that makes i-PI's line searches evaluate several times per step on this system
    (whose plain bfgs and lbfgs accept every full step): for bfgs an inverse Hessian 300
    times too large (it backtracks), for lbfgs a previous direction that is uphill (its
    searches restart along the gradient and backtrack 15-30 times per step)."""
    if mode == "bfgs":
        values = (np.eye(96) * 300.0).reshape(-1)
        return f"<invhessian_bfgs shape='(96, 96)'> [{', '.join('%g' % v for v in values)}] </invhessian_bfgs>"
    if mode == "lbfgs":
        values = np.random.default_rng(5).normal(0, 3.0, 96)
        return f"<old_direction shape='(1, 96)'> [{', '.join('%.6f' % v for v in values)}] </old_direction>"
    return ""


def minimize_input(address: str, mode: str, estimator: bool = False) -> str:
    """With ``estimator``, the scaled-coordinates estimator every other step, which i-PI
    evaluates through its properties' clone of the forces (no trajectory: no rows)."""
    properties = "\n    <properties stride='2'> [ step, scaledcoords ] </properties>" if estimator else ""
    ensemble = "\n    <ensemble><temperature units='kelvin'> 300 </temperature></ensemble>" if estimator else ""
    return f"""<simulation verbosity='quiet'>
  <output prefix='sim'>
    <trajectory filename='bin' stride='1' format='bin'> positions </trajectory>{properties}
  </output>
  <total_steps> {STEPS} </total_steps>
  <ffsocket name='dp' mode='unix'>
    <address> {address} </address>
    <timeout> 600 </timeout>
  </ffsocket>
  <system>
    <initialize nbeads='1'>
      <file mode='xyz' units='angstrom'> init.xyz </file>
    </initialize>
    <forces> <force forcefield='dp'/> </forces>{ensemble}
    <motion mode='minimize'>
      <optimizer mode='{mode}'>
        {optimizer_state(mode)}
        <tolerances><energy> 1e-8 </energy><force> 1e-7 </force><position> 1e-7 </position></tolerances>
      </optimizer>
    </motion>
  </system>
</simulation>
"""


def dump_frames(text: str) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(step, h (Bohr, columns), q (Bohr)) of every frame of a LAMMPS dump of an
    orthorhombic box, the atoms in id order."""
    frames = []
    for chunk in text.split("ITEM: TIMESTEP\n")[1:]:
        lines = chunk.splitlines()
        step, natoms = int(lines[0]), int(lines[2])
        box = np.diag([float(line.split()[1]) - float(line.split()[0]) for line in lines[4:7]])
        atoms = sorted((int(a.split()[0]), [float(v) for v in a.split()[2:5]]) for a in lines[8 : 8 + natoms])
        xyz = np.array([p for _, p in atoms])
        frames.append((step, box.T / units.BOHR_ANGSTROM, xyz.reshape(-1) / units.BOHR_ANGSTROM))
    return frames


def values(rows: list[str]) -> np.ndarray:
    return np.array([row.split() for row in rows], float)


@pytest.mark.timeout(600)
@pytest.mark.parametrize(
    ("mode", "layout"), [("bfgs", "dpgen2"), ("lbfgs", "dpgen"), ("cg", "dpgen2"), ("sd", "dpgen")]
)
def test_every_structure_of_a_line_search_gets_a_row(tmp_path, address, model_paths, reference, symbols, mode, layout):
    shutil.copy(IPI_INPUTS / "init.xyz", tmp_path / "init.xyz")
    estimator = mode == "cg"
    (tmp_path / "input.xml").write_text(minimize_input(address, mode, estimator))
    models = model_paths[:2]
    driver = [tool("ensemble-driver"), "run", "--models", *map(str, models), "--ipi-input", "input.xml"]
    driver += ["--out-freq", str(OUT_FREQ), "--connect-timeout", "120", "--traj-files", layout]
    driver += ["--trust-lo", "0", "--trust-hi", "10"]
    with ProcessGroup(tmp_path / "logs") as group:
        ipi = group.start("i-pi", [tool("i-pi"), "input.xml"], cwd=tmp_path)
        member = group.start("driver", mpiexec(2, driver), cwd=tmp_path)
        group.wait(300)
    calls = [int(n) for n in re.findall(r"Number of force calls: (\d+)", ipi.log_path.read_text())]
    assert len(calls) == STEPS and max(calls) >= 3, calls  # line searches of several evaluations
    labels = [0] + [k + 1 for k, n in enumerate(calls) for _ in range(n)]  # i-PI's step k evaluates for k + 1
    rows = written_rows(tmp_path / "model_devi.out")
    steps = [int(r.split()[0]) for r in rows]
    assert steps == [s for s in labels if s % OUT_FREQ == 0]
    log = member.log_path.read_text()
    evaluations = "evaluations per request id: {0: 1, 1: %d" % sum(calls)  # the system's, the optimiser's
    said = [line for line in log.splitlines() if "no bead of a system's trajectory" in line]
    if estimator:  # request id 2: the properties' clone, twice per output (steps 0, 2, 4, 6)
        assert evaluations + ", 2: 8}" in log and len(said) == 1 and "request id 2 " in said[0], log[-3000:]
    else:
        assert evaluations + "}" in log and not said, log[-3000:]

    # the last row of every step: on i-PI's own frame of that step, to the printed digits
    ipi_frames = read_ipi_binary(tmp_path / "sim.bin_0.bin", STEPS + 1)
    last = [r for k, r in enumerate(rows) if k + 1 == len(rows) or steps[k + 1] != steps[k]]
    assert last == expected_rows(ipi_frames, models, reference, symbols)

    # every row: on the structure i-PI sent, as the driver dumped it (10 decimals)
    if layout == "dpgen2":  # every row's frame, in order
        frames = dump_frames((tmp_path / "traj.dump").read_text())
        assert [f[0] for f in frames] == steps
        checked = rows
    else:  # one file per step, rewritten by each structure of the step: the last, i-PI's
        kept = range(0, STEPS + 1, OUT_FREQ)
        assert sorted(p.name for p in (tmp_path / "traj").iterdir()) == sorted(f"{s}.lammpstrj" for s in kept)
        frames = [dump_frames((tmp_path / "traj" / f"{s}.lammpstrj").read_text())[0] for s in kept]
        for (step, _, q), (ipi_step, _, ipi_q) in zip(frames, ipi_frames[::OUT_FREQ]):
            assert step == ipi_step
            np.testing.assert_allclose(q * units.BOHR_ANGSTROM, ipi_q * units.BOHR_ANGSTROM, rtol=0, atol=1e-9)
        checked = last
    want = expected_rows(frames, models, reference, symbols)
    np.testing.assert_allclose(values(checked), values(want), rtol=1e-5, atol=1e-9)

    # the candidates: every row's (trust levels 0 and 10), with its step
    assert [a.info["step"] for a in ase.io.read(tmp_path / "candidates.xyz", ":")] == steps
