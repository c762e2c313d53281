"""--traj-files: a LAMMPS dump frame beside every deviation row, laid out as DP-GEN and
dpgen2 lay out their LAMMPS tasks, read back with dpdata (the reader both tools use for
these dumps): every row has its frame, of the same step, with the elements, the cell and
the positions i-PI sent at that step (to the dump's 10 printed decimals)."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from support.harness import CHECK_OUTPUTS, driver_command, run_ipi
from support.ipi_runs import BIN_OUTPUT, read_ipi_binary
from support.mpi import mpiexec
from support.paths import tool

from ensemble_driver.outputs.dumps import lammps_box, lammps_frame
from ensemble_driver.wire import units

NBEADS = 4
STEPS = 6
OUT_FREQ = 2

LAYOUTS = {
    # --traj-files: (its files of bead b, one per row step s; the deviation file of bead b)
    "dpgen2": (lambda b, s: f"traj.{b + 1}.dump", lambda b: f"model_devi.{b + 1}.out"),
    "dpgen": (lambda b, s: f"traj/{s}.lammpstrj{b + 1}", lambda b: f"model_devi{b + 1}.out"),
}


@pytest.mark.timeout(400)
@pytest.mark.parametrize("naming", sorted(LAYOUTS))
def test_frames_pair_with_rows(tmp_path, address, model_paths, reference, symbols, naming):
    import dpdata

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
        ),
    )
    run = run_ipi(
        tmp_path,
        "pimd.xml",
        address=address,
        steps=STEPS,
        nbeads=NBEADS,
        drivers=[command],
        outputs=(*CHECK_OUTPUTS, BIN_OUTPUT),
    )
    type_map = reference.deeppot(model_paths[0]).get_type_map()
    traj_name, devi_name = LAYOUTS[naming]
    for bead in range(NBEADS):
        rows = np.loadtxt(tmp_path / devi_name(bead), ndmin=2)
        steps = [int(s) for s in rows[:, 0]]
        assert steps == list(range(0, STEPS + 1, OUT_FREQ))
        sent = {step: (h, q) for step, h, q in read_ipi_binary(tmp_path / f"{run.prefix}.bin_{bead}.bin", STEPS + 1)}
        if naming == "dpgen2":  # one file per bead, frame k is row k
            frames = [dpdata.System(str(tmp_path / traj_name(bead, None)), fmt="lammps/dump", type_map=type_map)]
            system = frames[0]
            assert system.get_nframes() == len(steps)
            frame_of = [system.sub_system([k]) for k in range(len(steps))]
        else:  # one file per row
            frame_of = [
                dpdata.System(str(tmp_path / traj_name(bead, s)), fmt="lammps/dump", type_map=type_map) for s in steps
            ]
        for k, step in enumerate(steps):
            frame = frame_of[k]
            assert frame.get_nframes() == 1
            assert [frame["atom_names"][t] for t in frame["atom_types"]] == list(symbols)
            h, q = sent[step]
            cell, positions = units.cell_from_wire(h), units.positions_from_wire(q)
            np.testing.assert_allclose(frame["cells"][0], cell, atol=2e-10)
            # dpdata wraps the atoms into the box: the same structure, modulo the lattice
            shift = (frame["coords"][0] - positions) @ np.linalg.inv(cell)
            np.testing.assert_allclose(shift, np.round(shift), atol=1e-9)
        # the dump itself holds the positions as i-PI sent them, and the row's step label
        text = (tmp_path / traj_name(bead, steps[-1])).read_text()
        last = text.split("ITEM: TIMESTEP\n")[-1]
        assert last.split("\n", 1)[0] == str(steps[-1])
        xyz = np.array([[float(x) for x in line.split()[2:5]] for line in last.splitlines()[-len(symbols) :]])
        np.testing.assert_allclose(xyz, units.positions_from_wire(sent[steps[-1]][1]), atol=6e-11)
    if naming == "dpgen2":
        devi_rereads_the_task(tmp_path, model_paths[:3])


def devi_rereads_the_task(task, models):
    """`ensemble-driver devi` on the dumps (LAMMPS types named by model 0's type map) writes
    the live run's rows again (the dumps' 10 decimals against i-PI's full precision: 1e-5)
    and, with --traj-files, the same frames."""
    out = task / "again"
    out.mkdir()
    dumps = [str(task / f"traj.{b + 1}.dump") for b in range(NBEADS)]
    proc = subprocess.run(
        [tool("ensemble-driver"), "devi", *dumps, "--models", *map(str, models)]
        + ["--format", "lammps-dump-text", "--bead-files", "dpgen2", "--traj-files", "dpgen2"]
        + ["--out-file", str(out / "model_devi.out")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for bead in range(NBEADS):
        live = np.loadtxt(task / f"model_devi.{bead + 1}.out", ndmin=2)
        again = np.loadtxt(out / f"model_devi.{bead + 1}.out", ndmin=2)
        np.testing.assert_array_equal(again[:, 0], live[:, 0])  # the dumps' own steps
        np.testing.assert_allclose(again[:, 1:], live[:, 1:], rtol=1e-5, atol=1e-9)
        frames = [
            f.split("ITEM: ATOMS")[1] for f in (out / f"traj.{bead + 1}.dump").read_text().split("ITEM: TIMESTEP")[1:]
        ]
        originals = [
            f.split("ITEM: ATOMS")[1] for f in (task / f"traj.{bead + 1}.dump").read_text().split("ITEM: TIMESTEP")[1:]
        ]
        assert len(frames) == len(originals) == len(live)
        for mine, theirs in zip(frames, originals):
            a = np.array([[float(x) for x in line.split()[:5]] for line in mine.splitlines()[1:]])
            b = np.array([[float(x) for x in line.split()[:5]] for line in theirs.splitlines()[1:]])
            np.testing.assert_allclose(a, b, atol=2e-10)  # ids, types and positions


def test_general_cell_is_rotated_into_lammps_box():
    """A cell that is not lower-triangular: the dump's box has the same lengths and angles,
    and the positions keep their fractional coordinates."""
    rng = np.random.default_rng(1)
    cell = np.array([[4.0, 1.0, 0.5], [0.3, 5.0, 0.7], [0.2, 0.4, 6.0]])
    frac = rng.random((5, 3))
    positions = frac @ cell
    box = lammps_box(cell)
    assert np.allclose(box, np.tril(box))
    np.testing.assert_allclose(box @ box.T, cell @ cell.T, atol=1e-12)  # lengths and angles
    text = lammps_frame(7, positions, cell, np.zeros(5, int), np.zeros((5, 3)))
    xyz = np.array([[float(x) for x in line.split()[2:5]] for line in text.splitlines()[-5:]])
    np.testing.assert_allclose(xyz @ np.linalg.inv(box), frac, atol=1e-9)
    assert "ITEM: BOX BOUNDS xy xz yz pp pp pp" in text


@pytest.mark.parametrize(
    "models, extra, message",
    [
        (1, ["--traj-files", "dpgen"], "--traj-files writes the structure of every deviation row: it needs two"),
        (2, ["--traj-files", "dpgen", "--out-freq", "0"], "needs two or more --models and --out-freq > 0"),
        (2, ["--traj-files", "frames.dump", "--nbeads", "2"], "--traj-files pattern 'frames.dump' has no {bead}"),
        (2, ["--traj-files", "nodir/b{bead}.dump", "--nbeads", "2"], "directory nodir does not exist"),
    ],
    ids=["one-model", "no-deviation", "no-bead", "no-directory"],
)
def test_bad_traj_options_are_one_line(tmp_path, address, model_paths, models, extra, message):
    import subprocess

    from support.paths import IPI_INPUTS

    command = driver_command(model_paths[:models], IPI_INPUTS / "init.xyz", address, *extra)
    proc = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
    assert not list(tmp_path.iterdir())  # nothing written
