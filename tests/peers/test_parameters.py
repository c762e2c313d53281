"""Frame and atomic parameters (--fparam, --aparam, --aparam-array) with the shipped
models trained with ``numb_fparam: 1`` and ``numb_aparam: 1``
(examples/models/make_param_models.py), against deepmd-kit's own DeepPot.eval with the
same parameters: under a real i-PI 3.3 (one model), under mpiexec (an ensemble of two,
the deviation rows), in ``devi``, and the bad values refused with one line."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from ase import Atoms
from ase.io import write
from support.harness import CHECK_OUTPUTS, check_run_against_model, driver_command, run_ipi
from support.ipi_runs import BIN_OUTPUT, bead_file, read_ipi_binary
from support.mpi import mpiexec
from support.paths import IPI_INPUTS, MODELS, tool

from ensemble_driver.demo.inputs import SocketSettings, prepare_input
from ensemble_driver.demo.launch import ProcessGroup
from ensemble_driver.deviation import Deviation
from ensemble_driver.outputs.model_devi import format_row, header_line
from ensemble_driver.wire import units
from ensemble_driver.wire.template import read_template

STEPS = 4
FPARAM = [0.6]
APARAM = [0.3]
FMODELS = [MODELS / "fparam0.pth", MODELS / "fparam1.pth"]
AMODELS = [MODELS / "aparam0.pth", MODELS / "aparam1.pth"]


class WithParameters:
    """DeepPot.eval with frame and atomic parameters: the reference of these tests."""

    def __init__(self, reference, fparam=None, aparam=None, charge_spin=None):
        self.reference, self.fparam, self.aparam = reference, fparam, aparam
        self.extra = {} if charge_spin is None else {"charge_spin": np.array([charge_spin], dtype=float)}

    def eval(self, path, atoms, periodic: bool = True):
        dp = self.reference.deeppot(path)
        tmap = dp.get_type_map()
        atype = [tmap.index(s) for s in atoms.get_chemical_symbols()]
        cell = atoms.cell.array.reshape(1, 9) if periodic else None
        positions = atoms.positions.reshape(1, -1)
        e, f, v = dp.eval(positions, cell, atype, fparam=self.fparam, aparam=self.aparam, **self.extra)[:3]
        return float(np.ravel(e)[0]), np.asarray(f).reshape(-1, 3), np.asarray(v).reshape(3, 3)


def template_with_array(path, name: str = "q", columns: int = 1, seed: int = 3) -> np.ndarray:
    """The shipped init.xyz as extended XYZ with a per-atom array ``name``; returns it."""
    template = read_template(IPI_INPUTS / "init.xyz")
    atoms = Atoms(list(template.labels), positions=template.positions, cell=template.cell, pbc=True)
    values = np.random.default_rng(seed).uniform(size=(template.natoms, columns))
    atoms.arrays[name] = values[:, 0] if columns == 1 else values
    write(path, atoms, format="extxyz")
    return values


@pytest.mark.parametrize("case", ["fparam", "aparam", "aparam-array"])
def test_forces_ipi_receives_are_deeppot_eval_with_the_parameters(tmp_path, address, reference, case):
    """One model under i-PI (NVT; the template array case as PIMD with 2 beads): every
    energy, force and virial i-PI received is DeepPot.eval's with the same parameters
    (1e-6), and not the one with other values (so the parameters did reach the model)."""
    nbeads, template, xml = 1, tmp_path / "init.xyz", "nvt.xml"
    if case == "fparam":
        model, args, given, other = FMODELS[0], ["--fparam", "0.6"], {"fparam": FPARAM}, {"fparam": [0.1]}
    elif case == "aparam":
        model, args, given, other = AMODELS[0], ["--aparam", "0.3"], {"aparam": APARAM}, {"aparam": [0.9]}
    else:
        template, xml, nbeads = tmp_path / "init_q.extxyz", "pimd.xml", 2
        q = template_with_array(template)
        model, args = AMODELS[0], ["--aparam-array", "q"]
        given, other = {"aparam": q.reshape(1, -1)}, {"aparam": q.reshape(1, -1)[:, ::-1]}
    command = driver_command([model], template, address, "--init-each", *args)
    run = run_ipi(tmp_path, xml, address=address, steps=STEPS, nbeads=nbeads, drivers=[command])
    check_run_against_model(run, model, WithParameters(reference, **given))
    assert run.evaluations_per_rid() == {b: STEPS + 1 for b in range(nbeads)}
    assert "every model evaluated with " in run.driver_logs[0]
    frame, received = run.trajectory("pos", 0)[-1], run.trajectory("for", 0)[-1].get_forces()
    _, f_other, _ = WithParameters(reference, **other).eval(model, frame)
    assert np.abs(received - f_other).max() > 1e-4 * np.abs(f_other).max()


def expected_rows(run, models, reference, symbols, out_freq: int) -> dict[int, list[str]]:
    """Every bead's rows from i-PI's binary positions (the numbers it sent), each model
    evaluated by DeepPot.eval with the parameters, the deviation by deepmd-kit's
    calc_model_devi_f / calc_model_devi_v (as tests/peers/test_ensemble.py)."""
    from deepmd.infer.model_devi import calc_model_devi_f, calc_model_devi_v

    rows: dict[int, list[str]] = {}
    frames: dict[int, list[Atoms]] = {}
    for bead in range(run.nbeads):
        rows[bead], frames[bead] = [], []
        for step, h, q in read_ipi_binary(run.workdir / f"{run.prefix}.bin_{bead}.bin", STEPS + 1):
            if step % out_freq:
                continue
            cell, positions = units.cell_from_wire(h), units.positions_from_wire(q)
            atoms = Atoms(symbols, positions=positions, cell=cell, pbc=True)
            atoms.info["step"] = step
            frames[bead].append(atoms)
            results = [reference.eval(path, atoms) for path in models]
            forces = np.array([f for _, f, _ in results])
            per_atom = np.array([v.reshape(9) for _, _, v in results]) / len(positions)
            fmax, fmin, favg = (x[0] for x in calc_model_devi_f(forces[:, None]))
            vmax, vmin, vavg = (x[0] for x in calc_model_devi_v(per_atom[:, None]))
            rows[bead].append(format_row(step, Deviation(vmax, vmin, vavg, fmax, fmin, favg)))
    return rows, frames


@pytest.mark.parametrize("case", ["fparam", "aparam-array"])
def test_ensemble_rows_and_devi_with_the_parameters(tmp_path, address, reference, symbols, case):
    """Two models on two ranks (PIMD, 2 beads): every deviation row equals the one made
    from DeepPot.eval with the parameters; ``devi`` with the same options, on the very
    structures i-PI sent (extended XYZ, 8 decimals), gives the same rows to 1e-6."""
    out_freq, nbeads = 2, 2
    live = tmp_path / "live"
    live.mkdir()
    if case == "fparam":
        models, template, args = FMODELS, live / "init.xyz", ["--fparam", "0.6"]
        ref = WithParameters(reference, fparam=FPARAM)
    else:
        template = live / "init_q.extxyz"
        q = template_with_array(template, seed=5)
        models, args = AMODELS, ["--aparam-array", "q"]
        ref = WithParameters(reference, aparam=q.reshape(1, -1))
    command = mpiexec(2, driver_command(models, template, address, "--nbeads", "2", "--out-freq", "2", *args))
    run = run_ipi(
        live,
        "pimd.xml",
        address=address,
        steps=STEPS,
        nbeads=nbeads,
        drivers=[command],
        outputs=(*CHECK_OUTPUTS, BIN_OUTPUT),
    )
    check_run_against_model(run, models[0], ref)  # the dynamics: model 0 with the parameters
    expected, frames = expected_rows(run, models, ref, symbols, out_freq)
    for bead in range(nbeads):
        lines = bead_file(live, bead).read_text().splitlines(keepends=True)
        assert lines[0] == header_line(atomic=False)
        assert lines[1:] == expected[bead], (case, bead)
        assert [int(line.split()[0]) for line in lines[1:]] == [0, 2, 4]

    post = tmp_path / "post"
    post.mkdir()
    trajectories = []
    for bead in range(nbeads):
        if case != "fparam":
            for atoms in frames[bead]:
                atoms.arrays["q"] = q[:, 0]  # every frame carries its own array for devi
        trajectories.append(post / f"bead{bead}.extxyz")
        write(trajectories[-1], frames[bead], format="extxyz")
    proc = subprocess.run(
        [tool("ensemble-driver"), "devi", *map(str, trajectories), "--models", *map(str, models), *args],
        cwd=post,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for bead in range(nbeads):
        mine = np.loadtxt(bead_file(post, bead), ndmin=2)
        live_rows = np.loadtxt(bead_file(live, bead), ndmin=2)
        np.testing.assert_array_equal(mine[:, 0], live_rows[:, 0])
        np.testing.assert_allclose(mine[:, 1:], live_rows[:, 1:], rtol=1e-6, atol=1e-9)


@pytest.mark.timeout(400)
def test_parameters_from_ipi_replace_the_command_line(tmp_path, address, reference, symbols):
    """i-PI's <parameters>{fparam: 0.9}</parameters> in the INIT of every request: model 0
    (the forces i-PI receives) and the other rank's model (the rows) are evaluated with
    0.9, not with the run's --fparam 0.6."""
    out_freq, nbeads = 2, 2
    command = mpiexec(
        2,
        driver_command(FMODELS, tmp_path / "init.xyz", address, "--nbeads", "2", "--out-freq", "2", "--fparam", "0.6"),
    )
    run = run_ipi(
        tmp_path,
        "pimd.xml",
        address=address,
        steps=STEPS,
        nbeads=nbeads,
        drivers=[command],
        parameters="{fparam: 0.9}",
        outputs=(*CHECK_OUTPUTS, BIN_OUTPUT),
    )
    ref = WithParameters(reference, fparam=[0.9])
    check_run_against_model(run, FMODELS[0], ref)
    assert "i-PI's <parameters>: every model evaluated with fparam 0.9" in run.driver_logs[0]
    expected, _ = expected_rows(run, FMODELS, ref, symbols, out_freq)
    for bead in range(nbeads):
        lines = bead_file(tmp_path, bead).read_text().splitlines(keepends=True)
        assert lines[1:] == expected[bead], bead
    frame, received = run.trajectory("pos", 0)[-1], run.trajectory("for", 0)[-1].get_forces()
    _, f_cli, _ = WithParameters(reference, fparam=FPARAM).eval(FMODELS[0], frame)
    assert np.abs(received - f_cli).max() > 1e-4 * np.abs(f_cli).max()  # not the command line's


def test_charge_spin_from_ipi_reaches_every_rank(tmp_path, address, reference, symbols):
    """i-PI's <parameters>{charge_spin: 1 2}</parameters> over the run's --charge-spin 0 1,
    with the charge/spin DPA-3 twice on two ranks: i-PI receives DeepPot.eval's answers
    with charge_spin [[1, 2]], and the rows are zero (rank 1 evaluated with 1 2 as well:
    with 0 1 its forces would differ by far more)."""
    model = MODELS / "dpa3_chg_spin.pth"
    command = mpiexec(
        2,
        driver_command([model, model], tmp_path / "init.xyz", address, "--out-freq", "1", "--charge-spin", "0", "1"),
    )
    run = run_ipi(tmp_path, "nvt.xml", address=address, steps=STEPS, drivers=[command], parameters="{charge_spin: 1 2}")
    # the energies i-PI received (its properties keep 16 digits; this model's forces near
    # the lattice are ~1e-4 eV/A, below what the ASE-format trajectory keeps)
    potentials = run.properties()[:, 1]
    for frame, received in zip(run.trajectory("pos", 0), potentials):
        energy = WithParameters(reference, charge_spin=[1, 2]).eval(model, frame)[0]
        assert received == pytest.approx(energy, rel=1e-6)
        assert abs(received - WithParameters(reference, charge_spin=[0, 1]).eval(model, frame)[0]) > 0.1
    rows = np.loadtxt(tmp_path / "model_devi.out", ndmin=2)
    assert len(rows) == STEPS + 1 and rows[:, 4].max() < 1e-6


def test_bad_parameters_from_ipi_are_one_line(tmp_path, address):
    """<parameters>{fparam: 0.1 0.2}</parameters> for a model with one frame parameter: one
    line naming the model and the values, status 2, i-PI left as a lost client leaves it."""
    command = driver_command(FMODELS[:1], tmp_path / "init.xyz", address, "--fparam", "0.6", "--init-each")
    prepare_input(
        IPI_INPUTS / "nvt.xml",
        tmp_path / "input.xml",
        socket=SocketSettings(address=address, parameters="{fparam: 0.1 0.2}"),
        steps=STEPS,
        prefix="sim",
    )
    with ProcessGroup(tmp_path / "logs") as group:
        group.start("i-pi", [tool("i-pi"), "input.xml"], cwd=tmp_path)
        driver = group.start("driver", command, cwd=tmp_path, ok_status=frozenset({2}))
        assert driver.popen.wait(timeout=300) == 2, driver.tail()
        errors = [line for line in driver.log_path.read_text().splitlines() if "error:" in line]
    assert len(errors) == 1 and "takes 1 frame parameter(s), but i-PI's <parameters> fparam gives 2" in errors[0], (
        errors
    )


def one_error_line(proc) -> str:
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    return errors[0]


BAD = {
    "fparam missing": (
        [FMODELS[0]],
        [],
        f"ensemble-driver: error: model {FMODELS[0]} needs 1 frame parameter(s) (numb_fparam 1): give them with --fparam",
    ),
    "fparam not taken": (
        [MODELS / "m0.pth"],
        ["--fparam", "0.5"],
        f"ensemble-driver: error: model {MODELS / 'm0.pth'} takes no frame parameters, but --fparam gives 0.5",
    ),
    "fparam count": (
        [FMODELS[0]],
        ["--fparam", "1", "2"],
        f"ensemble-driver: error: model {FMODELS[0]} takes 1 frame parameter(s), but --fparam gives 2 (1 2)",
    ),
    "aparam count": (
        [AMODELS[0]],
        ["--aparam", "0.1", "0.2"],
        f"ensemble-driver: error: model {AMODELS[0]} takes 1 atomic parameter(s) per atom, but --aparam gives 2 (0.1 0.2)",
    ),
    "aparam missing": ([AMODELS[0]], [], f"ensemble-driver: error: model {AMODELS[0]} needs 1 atomic parameter(s)"),
    "array missing": ([AMODELS[0]], ["--aparam-array", "charge"], "has no per-atom array 'charge' (its arrays: q)"),
    "array shape": (
        [AMODELS[0]],
        ["--aparam-array", "q2"],
        "takes 1 atomic parameter(s) per atom, but --aparam-array q2 of template",
    ),
    "both aparams": (
        [AMODELS[0]],
        ["--aparam", "1", "--aparam-array", "q"],
        "ensemble-driver: error: --aparam and --aparam-array exclude each other",
    ),
    "not finite": ([FMODELS[0]], ["--fparam", "nan"], "ensemble-driver: error: --fparam must be finite numbers"),
    # the second model, on rank 1, takes no frame parameters: every model is checked
    "rank 1": (
        [FMODELS[0], MODELS / "m1.pth"],
        ["--fparam", "0.6"],
        f"ensemble-driver: error: rank 1: model {MODELS / 'm1.pth'} takes no frame parameters, but --fparam gives 0.6",
    ),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_parameters_are_refused_with_one_line_before_connecting(tmp_path, address, case):
    """No server runs: the driver must fail as the models load, with status 2 and one
    line, never reaching the connection (it would wait --connect-timeout for it)."""
    models, args, message = BAD[case]
    template = tmp_path / "init_q.extxyz"
    template_with_array(template)
    if case == "array shape":
        template_with_array(template, name="q2", columns=2)
    command = driver_command(models, template, address, *args)
    command[command.index("--connect-timeout") + 1] = "600"  # a connection attempt would time the test out
    if len(models) > 1:
        command = mpiexec(2, command)
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 2, proc.stderr[-3000:]
    line = one_error_line(proc)
    assert line.startswith(message) if message.startswith("ensemble-driver") else message in line, line


def test_devi_refuses_bad_parameters(tmp_path):
    values = template_with_array(tmp_path / "frames.extxyz", seed=1)
    assert values.shape == (32, 1)
    for args, status, message in (
        ([], 2, "needs 1 atomic parameter(s) per atom (numb_aparam 1)"),
        (["--aparam-array", "nope"], 2, "trajectory frames.extxyz, frame 0 has no per-atom array 'nope'"),
        (["--aparam", "1", "--fparam", "1"], 2, "takes no frame parameters, but --fparam gives 1"),
    ):
        proc = subprocess.run(
            [tool("ensemble-driver"), "devi", "frames.extxyz", "--models", *map(str, AMODELS), *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert proc.returncode == status, proc.stderr[-3000:]
        assert message in one_error_line(proc)


@pytest.mark.timeout(400)
def test_two_force_fields_differing_in_fparam_served_by_one_driver(tmp_path, address, reference):
    """i-PI with two force fields on two sockets, <parameters>{fparam: 0.1}</parameters> and
    {fparam: 0.9}, each weighing 0.5 in the forces; one driver job serves both, one
    connection each (--connections 2 --address A B): i-PI's forces are the mean of
    DeepPot.eval with 0.1 and with 0.9, which differ."""
    import xml.etree.ElementTree as ET

    other = address + "-hi"
    prepare_input(
        IPI_INPUTS / "nvt.xml",
        tmp_path / "input.xml",
        socket=SocketSettings(address=address, parameters="{fparam: 0.1}", consolidate_messages=True),
        steps=STEPS,
        prefix="sim",
        outputs=CHECK_OUTPUTS,
        floatformat="%.16e",
    )
    tree = ET.parse(tmp_path / "input.xml")
    root = tree.getroot()
    low = root.find("ffsocket")
    high = ET.fromstring(ET.tostring(low))
    high.set("name", "deepmd-hi")
    high.find("address").text = f" {other} "
    high.find("parameters").text = " {fparam: 0.9} "
    root.insert(list(root).index(low) + 1, high)
    forces = root.find("system/forces")
    for force in list(forces):
        forces.remove(force)
    for name in ("deepmd", "deepmd-hi"):
        ET.SubElement(forces, "force", forcefield=name, weight="0.5")
    tree.write(tmp_path / "input.xml")
    command = mpiexec(2, driver_command(FMODELS[:1], tmp_path / "init.xyz", address, "--fparam", "0.6"))
    command[command.index("--address") + 1 : command.index("--address") + 2] = [address, other]
    command += ["--connections", "2"]
    with ProcessGroup(tmp_path / "logs") as group:
        group.start("i-pi", [tool("i-pi"), "input.xml"], cwd=tmp_path)
        driver = group.start("driver", command, cwd=tmp_path)
        group.wait(300)
    import ase.io

    positions = ase.io.read(tmp_path / "sim.pos_0.extxyz", index=":")
    received = ase.io.read(tmp_path / "sim.for_0.extxyz", index=":")
    assert len(positions) == len(received) == STEPS + 1
    low_ref, high_ref = WithParameters(reference, fparam=[0.1]), WithParameters(reference, fparam=[0.9])
    for frame, forces in zip(positions, received):
        _, f_low, _ = low_ref.eval(FMODELS[0], frame)
        _, f_high, _ = high_ref.eval(FMODELS[0], frame)
        assert np.abs(f_low - f_high).max() > 1e-3 * np.abs(f_low).max()  # the two really differ
        expected = 0.5 * (f_low + f_high)  # to 1e-6 of the largest component (extxyz prints 8 decimals)
        assert np.abs(forces.get_forces() - expected).max() <= 1e-6 * np.abs(expected).max()
    log = driver.log_path.read_text()
    assert "i-PI's <parameters>: every model evaluated with fparam 0.1" in log, log[-3000:]  # rank 0's, A's
