"""The driver under ASE's real socket server (SocketIOCalculator), over UNIX and INET.

Energy, forces and stress must equal deepmd's own ASE calculator (deepmd.calculator.DP)
to a relative 1e-6, on rattled structures in strained triclinic cells (a wrong cell or
virial transpose would show) and on a non-periodic cluster. ASE closes the socket
without EXIT: the driver must then exit 0.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
from support.ase_runs import Launcher, alloy, driver_args, structures
from support.harness import relative_error
from support.models import convert_backend
from support.mpi import mpiexec
from support.paths import MODELS, tool
from support.sockets import free_port

TOL = 1e-6


def cluster():
    from ase.cluster import Icosahedron

    atoms = Icosahedron("Cu", noshells=2, latticeconstant=3.87)
    atoms.symbols[[0, 3, 5, 7]] = "Au"
    atoms.center(vacuum=0.0)  # no cell: ASE sends a zero cell
    atoms.cell[:] = 0.0
    atoms.pbc = False
    return atoms


def run_against_dp(tmp_path, model, base, seed, unixsocket=None, port=None, extra=(), **dp_options):
    from ase.calculators.socketio import SocketIOCalculator
    from deepmd.calculator import DP

    template = tmp_path / "template.extxyz"
    base.write(template)

    def build(unixsocket, port):
        return [
            tool("ensemble-driver"),
            "run",
            "--models",
            str(model),
            "--template",
            str(template),
            "--connect-timeout",
            "120",
            *extra,
            *driver_args(unixsocket, port),
        ]

    launcher = Launcher(build, tmp_path / "driver.log")
    reference = DP(str(model), **dp_options)
    periodic = base.pbc.any()
    with SocketIOCalculator(launch_client=launcher, unixsocket=unixsocket, port=port, timeout=120) as calc:
        for atoms in structures(base, seed):
            atoms.calc = calc
            energy, forces = atoms.get_potential_energy(), atoms.get_forces()
            stress = atoms.get_stress() if periodic else None
            ref = atoms.copy()
            ref.calc = reference
            assert relative_error(energy, ref.get_potential_energy()) <= TOL
            assert relative_error(forces, ref.get_forces()) <= TOL
            if periodic:
                assert relative_error(stress, ref.get_stress()) <= TOL
    # ASE closed the socket without EXIT: a clean end for the driver
    assert launcher.proc.wait(timeout=60) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    return (tmp_path / "driver.log").read_text()


@pytest.mark.timeout(300)
def test_ase_unix(tmp_path, address, model_paths):
    log = run_against_dp(tmp_path, model_paths[0], alloy(1), seed=2, unixsocket=address)
    assert "server closed the connection" in log


@pytest.mark.timeout(300)
def test_ase_inet(tmp_path, model_paths):
    # model 2 lists its types as [Au, Cu]: matching by name, not by order
    run_against_dp(tmp_path, model_paths[2], alloy(3), seed=4, port=free_port())


@pytest.mark.timeout(300)
def test_ase_nonperiodic_cluster(tmp_path, address, model_paths):
    log = run_against_dp(tmp_path, model_paths[1], cluster(), seed=5, unixsocket=address)
    assert "not periodic" in log


@pytest.mark.timeout(300)
def test_ase_multitask_head(tmp_path, address):
    """--head picks a head of a multi-task checkpoint (not its first, named in another
    case): the answers are DeepPot(model, head=...)'s, and differ from the other head's."""
    from deepmd.calculator import DP

    model = MODELS / "multitask.pt"
    log = run_against_dp(
        tmp_path, model, alloy(6), seed=7, unixsocket=address, extra=("--head", "SCALED", "-v"), head="scaled"
    )
    assert "direct PyTorch evaluation matches DeepPot.eval; using it" in log  # the fast path, with a head
    atoms = structures(alloy(6), 7)[0]
    forces = {}
    for head in ("emt", "scaled"):
        atoms.calc = DP(str(model), head=head)
        forces[head] = atoms.get_forces()
    assert relative_error(forces["emt"], forces["scaled"]) > 1e-3


@pytest.mark.timeout(120)
def test_multitask_model_without_head_is_refused(tmp_path):
    alloy(6).write(tmp_path / "template.extxyz")
    command = [tool("ensemble-driver"), "run", "--models", str(MODELS / "multitask.pt")]
    command += [
        "--template",
        str(tmp_path / "template.extxyz"),
        "--unix",
        "--address",
        "never",
        "--connect-timeout",
        "1",
    ]
    for extra, message in (
        ([], "is a multi-task model with heads emt, scaled: choose one with --head NAME"),
        (["--head", "nope"], "has no head 'nope'; its heads: emt, scaled"),
    ):
        proc = subprocess.run(command + extra, capture_output=True, text=True, timeout=100)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("ensemble-driver: error:")]
        assert proc.returncode == 2 and len(errors) == 1 and message in errors[0], proc.stderr[-2000:]


@pytest.fixture(scope="session")
def dpa3_pte(tmp_path_factory) -> Path:
    """The shipped charge/spin DPA-3 exported to deepmd-kit's pt_expt backend (.pte), about
    20 s here."""
    return convert_backend(tmp_path_factory, MODELS / "dpa3_chg_spin.pth", "dpa3_chg_spin.pte")


def charge_spin_session(tmp_path, unixsocket, models, charge_spin, nranks=1, extra=()):
    """ASE's server on rattled alloys, the driver on ``models`` with --charge-spin: the
    driver's (structures, energies, forces), and its log."""
    from ase.calculators.socketio import SocketIOCalculator

    template = tmp_path / "template.extxyz"
    alloy(8).write(template)

    def build(unix, port):
        command = [tool("ensemble-driver"), "run", "--models", *map(str, models), "--template", str(template)]
        command += ["--unix", "--address", unix, "--connect-timeout", "120", "--charge-spin", *charge_spin]
        command += ["--out-freq", "1", "--out-file", str(tmp_path / "model_devi.out"), *extra]
        return mpiexec(nranks, command) if nranks > 1 else command

    launcher = Launcher(build, tmp_path / "driver.log")
    results = []
    with SocketIOCalculator(launch_client=launcher, unixsocket=unixsocket, timeout=120) as calc:
        for atoms in structures(alloy(8), 9)[:2]:
            atoms.calc = calc
            results.append((atoms.copy(), atoms.get_potential_energy(), atoms.get_forces()))
    assert launcher.proc.wait(timeout=60) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    return results, (tmp_path / "driver.log").read_text()


@pytest.mark.timeout(600)
def test_charge_spin_reaches_the_model(tmp_path, address):
    """--charge-spin 0 1 gives DeepPot.eval(..., charge_spin=[[0, 1]])'s answers (1e-6) on
    the direct path, and other answers than --charge-spin 1 2."""
    from deepmd.infer import DeepPot

    model = MODELS / "dpa3_chg_spin.pth"
    dp = DeepPot(str(model))
    answers = {}
    for charge_spin in (("0", "1"), ("1", "2")):
        (tmp_path / "-".join(charge_spin)).mkdir()
        results, log = charge_spin_session(
            tmp_path / "-".join(charge_spin), address, [model], charge_spin, extra=["-v"]
        )
        assert "direct PyTorch evaluation matches DeepPot.eval; using it" in log
        for atoms, energy, forces in results:
            types = [dp.get_type_map().index(s) for s in atoms.get_chemical_symbols()]
            e, f = dp.eval(
                atoms.positions.reshape(1, -1),
                atoms.cell.array.reshape(1, 9),
                types,
                charge_spin=np.array([[float(x) for x in charge_spin]]),
            )[:2]
            assert relative_error(energy, float(np.ravel(e)[0])) <= TOL
            assert relative_error(forces, np.reshape(f, (-1, 3))) <= TOL
        answers[charge_spin] = results[0][2]
    assert relative_error(answers[("0", "1")], answers[("1", "2")]) > 1e-3


@pytest.mark.timeout(900)
def test_charge_spin_on_every_rank_and_mixed_backends(tmp_path, address, dpa3_pte):
    """An ensemble of the .pte (pt_expt) and the .pth of one DPA-3 under --charge-spin 1 2 on
    two ranks: (near) zero deviation in every row, so rank 1 got the value too."""
    charge_spin_session(tmp_path, address, [dpa3_pte, MODELS / "dpa3_chg_spin.pth"], ("1", "2"), nranks=2)
    rows = np.loadtxt(tmp_path / "model_devi.out", ndmin=2)
    assert len(rows) == 2 and rows[:, 4].max() < 1e-5, rows


@pytest.mark.timeout(300)
def test_charge_spin_refusals(tmp_path, model_paths):
    """No --charge-spin for a model without a default, or one for a model without the
    embedding: one line each, status 2, before connecting."""
    alloy(8).write(tmp_path / "template.extxyz")
    base = ["run", "--template", str(tmp_path / "template.extxyz"), "--unix", "--address", "never"]
    cases = (
        (
            [str(MODELS / "dpa3_chg_spin.pth")],
            "is conditioned on charge and spin (add_chg_spin_ebd) and has no default",
        ),
        ([str(model_paths[0]), "--charge-spin", "0", "1"], "has no charge/spin embedding, but --charge-spin gives 0 1"),
        ([str(MODELS / "dpa3_chg_spin.pth"), "--charge-spin", "0.5", "1"], "--charge-spin takes two whole numbers"),
    )
    for models, message in cases:
        proc = subprocess.run(
            [tool("ensemble-driver"), *base, "--connect-timeout", "1", "--models", *models],
            capture_output=True,
            text=True,
            timeout=200,
        )
        errors = [line for line in proc.stderr.splitlines() if line.startswith("ensemble-driver: error:")]
        assert proc.returncode == 2 and len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
