"""i-PI's own committee (<ffcommittee> with <parse_json>) on the MPI ensemble: one driver
with --committee-json answers every structure with all four models in the extras.

i-PI then drives the dynamics with the committee MEAN and writes its energy uncertainty,
committee_uncertainty, the sample standard deviation (ddof=1, ipi/engine/forcefields.py
FFCommittee.gather, alpha = 1) of the members' energies, times the driver's --alpha
(ensemble-driver calibrate's calibration) when given. Both are recomputed here from
i-PI's own binary positions with the four models in-process; the deviation rows are the
models' own."""

from __future__ import annotations

import numpy as np
import pytest
from support.harness import driver_command, run_ipi
from support.ipi_runs import BIN_OUTPUT, read_ipi_binary
from support.mpi import mpiexec
from support.paths import tool

from ensemble_driver.deviation import force_deviation
from ensemble_driver.wire import units

STEPS = 6
OUTPUTS = (
    BIN_OUTPUT,
    "<trajectory filename='for' stride='1' format='ase'> forces{ase} </trajectory>",
    "<trajectory filename='unc' stride='1' extra_type='committee_uncertainty'> extras </trajectory>",
)


def read_uncertainty(path) -> list[float]:
    """i-PI's extras trajectory: a ' #EXTRAS(committee_uncertainty)# Step: ...' line, then the value."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    assert all(line.lstrip().startswith("#EXTRAS(committee_uncertainty)#") for line in lines[0::2]), lines[:4]
    return [float(line) for line in lines[1::2]]


@pytest.mark.parametrize(
    "nranks, extra",
    [(2, []), (3, ["--connections", "2"]), (2, ["--ipi-input"]), (2, ["--alpha", "2.5"])],
    ids=["one", "two-connections", "ipi-input", "alpha"],
)
def test_ipi_committee_uncertainty_is_the_models_energy_std(
    tmp_path, address, model_paths, reference, symbols, nranks, extra
):
    options = ("--committee-json", "--out-freq", "3")
    if extra == ["--ipi-input"]:  # the socket inside <ffcommittee>, found in i-PI's own input
        driver = [tool("ensemble-driver"), "run", "--models", *map(str, model_paths), "--ipi-input", "input.xml"]
        command = mpiexec(nranks, driver + ["--connect-timeout", "120", *options])
    else:
        command = mpiexec(nranks, driver_command(model_paths, tmp_path / "init.xyz", address, *options, *extra))
    run = run_ipi(tmp_path, "committee.xml", address=address, steps=STEPS, drivers=[command], outputs=OUTPUTS)
    frames = read_ipi_binary(tmp_path / f"{run.prefix}.bin_0.bin", STEPS + 1)
    # --alpha (ensemble-driver calibrate's): the members moved as i-PI's <alpha> moves them
    alpha = float(extra[1]) if extra[:1] == ["--alpha"] else 1.0
    uncertainty = read_uncertainty(next(tmp_path.glob(f"{run.prefix}.unc*")))
    forces = run.trajectory("for", 0)
    assert len(uncertainty) == len(forces) == len(frames) == STEPS + 1
    spread, devi_f = [], {}
    for (step, h, q), unc, fframe in zip(frames, uncertainty, forces):
        cell, positions = units.cell_from_wire(h), units.positions_from_wire(q)
        energies, model_forces = [], []
        for path in model_paths:
            dp = reference.deeppot(path)
            tmap = dp.get_type_map()
            e, f, _ = dp.eval(positions.reshape(1, -1), cell.reshape(1, 9), [tmap.index(s) for s in symbols])[:3]
            energies.append(float(np.ravel(e)[0]))
            model_forces.append(np.reshape(f, (-1, 3)))
        expected = alpha * np.std(energies, ddof=1) / units.HARTREE_EV
        np.testing.assert_allclose(unc, expected, rtol=1e-6, err_msg=f"step {step}")
        # the dynamics are the committee mean's (i-PI's choice), not model 0's
        mean = np.mean(model_forces, axis=0)
        np.testing.assert_allclose(fframe.get_forces(), mean, rtol=1e-6, atol=1e-8)
        assert np.abs(mean - model_forces[0]).max() > 1e-4
        spread.append(unc)
        devi_f[step] = force_deviation(np.array(model_forces)).max()
    assert min(spread) > 0
    # the deviation file is written as usual, every --out-freq steps
    rows = np.loadtxt(tmp_path / "model_devi.out", ndmin=2)
    np.testing.assert_array_equal(rows[:, 0], [0, 3, 6])
    # the models' own deviation, whatever --alpha
    np.testing.assert_allclose(rows[:, 4], [devi_f[k] for k in (0, 3, 6)], rtol=1e-6)
