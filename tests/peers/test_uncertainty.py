"""Uncertainty beyond the row: each atom's force deviation (LAMMPS's ``atomic``, the
``--atomic`` columns of the row) wherever a structure is written, under real i-PI: the
candidate files (extended XYZ array ``devi_f``), the dumps of ``--traj-files`` (column
``devi_f``, still read by dpdata) and i-PI's extras trajectory (``devi_f_atoms``)."""

from __future__ import annotations

import ase.io
import numpy as np
import pytest
from support.ipi_inputs import OUT_FREQ, STEPS, ipi_input, run, system

EXTRAS = "\n    <trajectory filename='devi' stride='1' extra_type='devi_f_atoms'> extras </trajectory>"


def read_extras(path) -> dict[int, list[float]]:
    """i-PI's extras trajectory: '#EXTRAS(devi_f_atoms)# Step: N ...' then the values."""
    out, step = {}, None
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#EXTRAS"):
            step = int(line.split("Step:")[1].split()[0])
        elif line.strip() and step is not None:
            out.setdefault(step, []).extend(
                float(x) for x in line.replace("[", " ").replace("]", " ").replace(",", " ").split()
            )
    return out


@pytest.mark.timeout(600)
def test_per_atom_deviation_in_candidates_dumps_and_extras(tmp_path, address, model_paths, reference):
    xml = ipi_input(address, system(2, "<force forcefield='dp'/>"), outputs=EXTRAS)
    options = ["--atomic", "--trust-lo", "0", "--trust-hi", "10", "--bead-files", "dpgen2", "--traj-files", "dpgen2"]
    run(tmp_path, xml, model_paths[:2], *options, "--extras")
    type_map = reference.deeppot(model_paths[0]).get_type_map()
    import dpdata

    for bead in (1, 2):
        rows = np.loadtxt(tmp_path / f"model_devi.{bead}.out", ndmin=2)
        assert rows[:, 0].tolist() == list(range(0, STEPS + 1, OUT_FREQ))
        atomic = rows[:, 7:]
        assert atomic.shape[1] == 32
        # every row is a candidate (trust levels 0 and 10): one frame each, with devi_f
        frames = ase.io.read(tmp_path / f"candidates.{bead}.xyz", ":")
        assert [f.info["step"] for f in frames] == rows[:, 0].tolist()
        for frame, row, devi in zip(frames, rows, atomic):
            np.testing.assert_allclose(frame.arrays["devi_f"], devi, rtol=1e-6)
            np.testing.assert_allclose(frame.arrays["devi_f"].max(), row[4], rtol=1e-6)
        # the dump: the last column, devi_f
        dumps = (tmp_path / f"traj.{bead}.dump").read_text().split("ITEM: TIMESTEP\n")[1:]
        assert len(dumps) == len(rows)
        for text, devi in zip(dumps, atomic):
            assert "ITEM: ATOMS id type x y z fx fy fz devi_f" in text
            column = [float(line.split()[-1]) for line in text.splitlines()[-32:]]
            np.testing.assert_allclose(column, devi, rtol=1e-6)
        system_ = dpdata.System(str(tmp_path / f"traj.{bead}.dump"), fmt="lammps/dump", type_map=type_map)
        assert system_.get_nframes() == len(rows)
        # i-PI's extras trajectory of this bead (i-PI counts beads from 0)
        extras = read_extras(next(tmp_path.glob(f"sim.devi_{bead - 1}*")))
        assert sorted(extras) == list(range(STEPS + 1))
        for step, values in extras.items():
            if step % OUT_FREQ:
                assert values == [-1.0] * 32
            else:
                np.testing.assert_allclose(values, atomic[step // OUT_FREQ], rtol=1e-6)


def bias_reference(models, atoms, tau: float, reference):
    """E_0 - tau sigma_E and its exact gradient, from DeepPot.eval of every model (written
    out here, not the driver's function): (energy, forces, stress in ASE's convention)."""
    energies, forces, virials = [], [], []
    for path in models:
        e, f, v = reference.eval(path, atoms)
        energies.append(e)
        forces.append(f)
        virials.append(v)
    energies, forces, virials = np.array(energies), np.array(forces), np.array(virials)
    sigma = energies.std()  # population form
    weights = (energies - energies.mean()) / (len(models) * sigma)
    energy = energies[0] - tau * sigma
    force = forces[0] - tau * np.einsum("m,mij->ij", weights, forces)
    virial = virials[0] - tau * np.einsum("m,mij->ij", weights, virials)
    stress = -virial / atoms.get_volume()  # ASE's stress from DeePMD's virial (-V stress)
    return energy, force, stress.ravel()[[0, 4, 8, 5, 2, 1]], sigma


def run_biased(tmp_path, unixsocket, models, tau: str, check, extra=()) -> str:
    """The driver (mpiexec -n len(models)) under ASE's server with --bias-uncertainty tau;
    ``check(atoms)`` is called with the server's calculator attached."""
    from ase.calculators.socketio import SocketIOCalculator
    from support.ase_runs import Launcher, alloy
    from support.mpi import mpiexec
    from support.paths import tool

    template = tmp_path / "template.extxyz"
    alloy(11).write(template)
    build = lambda unix, port: mpiexec(  # noqa: E731
        len(models),
        [tool("ensemble-driver"), "run", "--models", *map(str, models), "--template", str(template)]
        + ["--unix", "--address", unix, "--connect-timeout", "120", "--bias-uncertainty", tau, "--out-freq", "1"]
        + ["--out-file", str(tmp_path / "model_devi.out"), *extra],
    )
    launcher = Launcher(build, tmp_path / "driver.log")
    with SocketIOCalculator(launch_client=launcher, unixsocket=unixsocket, timeout=120) as calc:
        atoms = alloy(11)
        atoms.rattle(stdev=0.1, seed=3)
        atoms.set_cell(atoms.cell.array @ np.array([[1.02, 0.01, 0], [0, 0.99, 0.02], [0, 0, 1.01]]), scale_atoms=True)
        atoms.calc = calc
        check(atoms)
    assert launcher.proc.wait(timeout=60) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    return (tmp_path / "driver.log").read_text()


@pytest.mark.timeout(600)
def test_bias_uncertainty_is_the_exact_biased_answer(tmp_path, address, model_paths, reference):
    """--bias-uncertainty 0.2 with three models under ASE's server: the energy, forces and
    stress equal E_0 - TAU sigma_E and its exact gradient (1e-6), and central finite
    differences of the returned energy in positions and in strain give the returned
    forces and stress."""
    from ase.calculators.fd import calculate_numerical_forces, calculate_numerical_stress
    from support.harness import relative_error

    models, tau = model_paths[:3], 0.2

    def check(atoms):
        energy, forces, stress, sigma = bias_reference(models, atoms, tau, reference)
        assert sigma > 1e-3  # the models disagree: the bias matters
        assert relative_error(atoms.get_potential_energy(), energy) <= 1e-6
        assert relative_error(atoms.get_forces(), forces) <= 1e-6
        assert relative_error(atoms.get_stress(), stress) <= 1e-6
        numeric = calculate_numerical_forces(atoms, eps=1e-4, iatoms=[0, 7, 21])
        np.testing.assert_allclose(numeric, atoms.get_forces()[[0, 7, 21]], rtol=1e-3, atol=2e-5)
        np.testing.assert_allclose(
            calculate_numerical_stress(atoms, eps=1e-5), atoms.get_stress(), rtol=1e-3, atol=1e-6
        )

    log = run_biased(tmp_path, address, models, str(tau), check)
    assert "--bias-uncertainty 0.2 eV:" in log


@pytest.mark.timeout(600)
def test_alpha_scales_the_bias(tmp_path, address, model_paths, reference):
    """--bias-uncertainty 0.1 --alpha 2 (the committee's calibration, as i-PI applies it):
    the answer of TAU 0.2 without alpha (1e-6); the row is the unbiased models' own."""
    from support.harness import relative_error

    from ensemble_driver.deviation import force_deviation

    models = model_paths[:3]
    rows = []

    def check(atoms):
        energy, forces, stress, sigma = bias_reference(models, atoms, 0.2, reference)
        assert relative_error(atoms.get_potential_energy(), energy) <= 1e-6
        assert relative_error(atoms.get_forces(), forces) <= 1e-6
        assert relative_error(atoms.get_stress(), stress) <= 1e-6
        rows.append(force_deviation(np.array([reference.eval(m, atoms)[1] for m in models])).max())

    run_biased(tmp_path, address, models, "0.1", check, extra=("--alpha", "2"))
    written = np.loadtxt(tmp_path / "model_devi.out", ndmin=2)
    assert written[0, 4] == pytest.approx(rows[0], rel=1e-6)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("case", ["tau-0", "identical-models"])
def test_no_bias_is_model_0s_answer(tmp_path, address, model_paths, reference, case):
    """TAU 0, or models that agree (sigma_E = 0): model 0's own answer, never NaN."""
    models, tau = (model_paths[:3], "0") if case == "tau-0" else ([model_paths[0]] * 3, "0.5")

    def check(atoms):
        energy, forces, virial = reference.eval(model_paths[0], atoms)
        assert atoms.get_potential_energy() == pytest.approx(energy, rel=1e-9)
        np.testing.assert_allclose(atoms.get_forces(), forces, rtol=1e-9, atol=1e-12)

    run_biased(tmp_path, address, models, tau, check)


@pytest.mark.timeout(300)
def test_devi_candidates_carry_devi_f(tmp_path, model_paths):
    """`ensemble-driver devi` writes the same per-atom array in its candidate files."""
    import subprocess

    from ase.build import bulk
    from support.paths import tool

    frames = []
    for seed in range(3):
        atoms = bulk("Cu", "fcc", a=3.87, cubic=True).repeat(2)
        atoms.symbols[::3] = "Au"
        atoms.rattle(stdev=0.1, seed=seed)
        frames.append(atoms)
    ase.io.write(tmp_path / "frames.extxyz", frames)
    proc = subprocess.run(
        [tool("ensemble-driver"), "devi", "frames.extxyz", "--models", *map(str, model_paths[:2]), "--atomic"]
        + ["--trust-lo", "0", "--trust-hi", "10"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=250,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = np.loadtxt(tmp_path / "model_devi.out", ndmin=2)
    candidates = ase.io.read(tmp_path / "candidates.xyz", ":")
    assert len(candidates) == len(rows) == 3
    for frame, row in zip(candidates, rows):
        np.testing.assert_allclose(frame.arrays["devi_f"], row[7:], rtol=1e-6)
