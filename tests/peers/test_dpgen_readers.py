"""DP-GEN's and dpgen2's own reading and selection code (installed from PyPI in
virtual environments of their own, beside the driver's: their dependencies are not
the driver's) on task directories the driver wrote under real i-PI with --bead-files and
--traj-files dpgen / dpgen2: the frames each tool picks are the driver's candidates, row
by row, and their structures are those i-PI sent (dpdata wraps them into the box:
compared modulo the lattice)."""

from __future__ import annotations

import json
import subprocess

import ase.io
import numpy as np
import pytest
from support.harness import driver_command, run_ipi
from support.mpi import mpiexec
from support.paths import SUPPORT
from support.venvs import CACHE, venv_with

# made once per machine, outside the checkout (tests/support/venvs.py; a new machine makes them, ~3 min)
DPGEN2_VENV = CACHE / "venv-dpgen2"
DPGEN2 = ("dpgen2==0.1.0", "dpdata==1.1.0")
DPGEN_VENV = CACHE / "venv-dpgen"
# DP-GEN 0.14 without its dependencies, then those its generator imports: its own list
# asks for openbabel, which has no wheel for this Python and is not used by this code
DPGEN = ("dpgen==0.14.0",)
DPGEN_DEPENDENCIES = (
    "dpdata==1.1.0",
    "cp2kdata",
    "pymatgen",
    "ase",
    "monty",
    "paramiko",
    "custodian",
    "dpdispatcher",
    "netCDF4",
    "dargs",
    "h5py",
    "packaging",
    "scipy",
)
NBEADS, STEPS, OUT_FREQ = 4, 12, 2
F_LO, F_HI = 0.05, 0.053  # this run's max_devi_f grows from 0.049 to 0.056: all three classes


@pytest.fixture(scope="session")
def dpgen2_python() -> str:
    return venv_with(DPGEN2_VENV, DPGEN2)


@pytest.fixture(scope="session")
def dpgen_python() -> str:
    return venv_with(DPGEN_VENV, ("--no-deps", *DPGEN), DPGEN_DEPENDENCIES)


def run_task(tmp_path, address, model_paths, naming: str):
    """A 4-bead PIMD task directory made by the driver under i-PI, laid out for ``naming``."""
    command = mpiexec(
        3,
        driver_command(
            model_paths[:3],
            tmp_path / "init.xyz",
            address,
            "--nbeads",
            str(NBEADS),
            "--out-freq",
            str(OUT_FREQ),
            "--bead-files",
            naming,
            "--traj-files",
            naming,
            "--trust-lo",
            str(F_LO),
            "--trust-hi",
            str(F_HI),
        ),
    )
    run_ipi(tmp_path, "pimd.xml", address=address, steps=STEPS, nbeads=NBEADS, drivers=[command])


@pytest.mark.timeout(1800)
def test_dpgen_selects_the_driver_candidates(tmp_path, address, model_paths, reference, symbols, dpgen_python):
    """DP-GEN merges the bead files itself (model_devi.out, each bead's steps shifted by
    bead x (last step + 1), the frames renamed to match) and picks by max_devi_f; every
    pick is a driver candidate, of that bead and step, with that structure."""
    run_task(tmp_path, address, model_paths, "dpgen")
    type_map = reference.deeppot(model_paths[0]).get_type_map()
    ours = {}
    for bead in range(NBEADS):
        path = tmp_path / f"candidates{bead + 1}.xyz"
        for frame in ase.io.read(path, index=":") if path.exists() else []:
            ours[(bead, frame.info["step"])] = frame
    elsewhere = tmp_path / "cwd"  # importing dpgen writes dpdispatcher.log where it runs
    elsewhere.mkdir()
    proc = subprocess.run(
        [dpgen_python, str(SUPPORT / "dpgen_select.py"), str(tmp_path), str(F_LO), str(F_HI)] + [",".join(type_map)],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    picked = json.loads(proc.stdout.strip().splitlines()[-1])
    classes = json.loads((tmp_path / "devi_summary.json").read_text())["total"]
    assert picked["counter"] == {k: classes[k] for k in ("candidate", "failed", "accurate")}
    shift = STEPS + 1  # DP-GEN's own: bead b's step s becomes b * (last step + 1) + s
    assert sorted(picked["candidates"]) == sorted(b * shift + s for b, s in ours)
    for frame in picked["frames"]:
        mine = ours[divmod(frame["step"], shift)]
        assert frame["names"] == list(symbols)
        np.testing.assert_allclose(frame["cell"], mine.cell[:], atol=1e-8)
        lattice = (np.array(frame["coords"]) - mine.positions) @ np.linalg.inv(mine.cell[:])
        np.testing.assert_allclose(lattice, np.round(lattice), atol=1e-8)


@pytest.mark.timeout(1200)
def test_dpgen2_selects_the_driver_candidates(tmp_path, address, model_paths, reference, symbols, dpgen2_python):
    run_task(tmp_path, address, model_paths, "dpgen2")
    type_map = reference.deeppot(model_paths[0]).get_type_map()
    work = tmp_path / "dpgen2"
    work.mkdir()
    proc = subprocess.run(
        [dpgen2_python, str(SUPPORT / "dpgen2_select.py"), str(tmp_path), str(NBEADS), str(F_LO), str(F_HI)]
        + [",".join(type_map), str(work)],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    selected = json.loads(proc.stdout.strip().splitlines()[-1])
    ours = []
    for bead in range(NBEADS):
        rows = np.loadtxt(tmp_path / f"model_devi.{bead + 1}.out", ndmin=2)
        expected = [k for k, r in enumerate(rows) if F_LO <= r[4] < F_HI]
        assert selected["ids"][bead] == expected, bead  # the same rows, by dpgen2's own report
        frames = ase.io.read(tmp_path / f"candidates.{bead + 1}.xyz", index=":") if expected else []
        assert [f.info["step"] for f in frames] == [int(rows[k, 0]) for k in expected]
        ours.extend(frames)
    classes = json.loads((tmp_path / "devi_summary.json").read_text())["total"]
    assert classes["candidate"] == len(ours) > 0 and classes["accurate"] > 0 and classes["failed"] > 0, classes
    # dpgen2's selected structures (from the dumps) are the driver's candidate structures
    assert len(selected["frames"]) == len(ours)
    for theirs, mine in zip(selected["frames"], ours):
        assert theirs["names"] == list(symbols)
        np.testing.assert_allclose(theirs["cell"], mine.cell[:], atol=1e-8)
        shift = (np.array(theirs["coords"]) - mine.positions) @ np.linalg.inv(mine.cell[:])
        np.testing.assert_allclose(shift, np.round(shift), atol=1e-8)
