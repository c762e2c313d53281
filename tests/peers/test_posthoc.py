"""``ensemble-driver devi`` and ``ensemble-driver plot``: the deviation of i-PI's own xyz
trajectories equals the live run's rows; frames read by ASE give what ``dp model-devi``
gives; the plot is a PNG."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
from ase.build import bulk
from ase.io import write
from support.harness import CHECK_OUTPUTS, driver_command, run_ipi
from support.ipi_files import expected_rows, reference_frames
from support.ipi_runs import bead_file
from support.mpi import mpiexec
from support.paths import tool

from ensemble_driver.devi.frames import read_frames
from ensemble_driver.outputs.dumps import lammps_frame

STEPS, OUT_FREQ, NBEADS = 6, 2, 3
XYZ_OUTPUT = f"<trajectory filename='xyzpos' stride='{OUT_FREQ}' format='xyz'> positions </trajectory>"
EXTXYZ_OUTPUT = f"<trajectory filename='extxyzpos' stride='{OUT_FREQ}' format='ase'> positions{{ase}} </trajectory>"
# the report's i-PI pdb: positions in atomic units (3 decimals of a Bohr), the cell in
# pdb's default Angstrom; ASE read the positions as Angstrom
PDB_OUTPUT = f"<trajectory filename='pdbpos' stride='{OUT_FREQ}' format='pdb'> positions{{atomic_unit}} </trajectory>"


def rows(path):
    return np.loadtxt(path, ndmin=2)


def devi(*args, cwd, mpi: int = 1, timeout=300):
    command = [tool("ensemble-driver"), "devi", *map(str, args)]
    if mpi > 1:
        command = mpiexec(mpi, command)
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def test_devi_of_ipi_trajectories_reproduces_the_live_rows(tmp_path, address, model_paths, reference):
    """One live PIMD run (3 beads, 4 models on 2 ranks) whose i-PI writes every bead three
    times: as i-PI xyz (CELL comment, atomic units, 6 significant digits), as extxyz
    (format='ase', Angstrom, 8 decimals) and as pdb in atomic units (3 decimals).
    ``devi`` of the extxyz under 2 ranks gives the live rows up to the printed digits and
    the same classes; ``devi`` of the xyz, alone, gives them to the precision of its 6
    digits; of the pdb, the rows of deepmd-kit on the pdb's frames in Angstrom (1e-6), and
    the live ones to 3e-2 (its 3 decimals of a Bohr)."""
    live = tmp_path / "live"
    live.mkdir()
    trust = ("--trust-lo", "0.05", "--trust-hi", "0.12")
    command = mpiexec(
        2,
        driver_command(
            model_paths, live / "init.xyz", address, "--nbeads", str(NBEADS), "--out-freq", str(OUT_FREQ), *trust
        ),
    )
    run = run_ipi(
        live,
        "pimd.xml",
        address=address,
        steps=STEPS,
        nbeads=NBEADS,
        drivers=[command],
        outputs=(*CHECK_OUTPUTS, XYZ_OUTPUT, EXTXYZ_OUTPUT, PDB_OUTPUT),
    )
    for fmt, suffix, ranks, rtol in (("xyz", "xyz", 1, 2e-3), ("extxyz", "extxyz", 2, 1e-6), ("pdb", "pdb", 1, 3e-2)):
        trajectories = [live / f"{run.prefix}.{fmt}pos_{b}.{suffix}" for b in range(NBEADS)]
        assert [f.step for f in read_frames(trajectories[1])] == list(range(0, STEPS + 1, OUT_FREQ))
        post = tmp_path / f"post-{fmt}"
        post.mkdir()
        proc = devi(*trajectories, "--models", *model_paths, *trust, cwd=post, mpi=ranks)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert "deviation rows by class" in proc.stdout
        for bead in range(NBEADS):
            mine, theirs = rows(bead_file(post, bead)), rows(bead_file(live, bead))
            assert mine.shape == theirs.shape == (STEPS // OUT_FREQ + 1, 7)
            np.testing.assert_array_equal(mine[:, 0], theirs[:, 0])
            np.testing.assert_allclose(mine[:, 1:], theirs[:, 1:], rtol=rtol, atol=1e-7, err_msg=f"{fmt} bead {bead}")
            if fmt == "pdb":
                exact = expected_rows(reference_frames(trajectories[bead], "pdb"), model_paths, reference)
                np.testing.assert_allclose(mine, exact, rtol=1e-6, atol=1e-9, err_msg=f"pdb bead {bead}")
        if fmt == "extxyz":
            assert (
                json.loads((post / "devi_summary.json").read_text())["beads"]
                == json.loads((live / "devi_summary.json").read_text())["beads"]
            )


def write_npy_system(directory, frames, type_map):
    """A deepmd/npy system (what dp model-devi reads) of ASE frames."""
    directory.mkdir()
    (directory / "type_map.raw").write_text("\n".join(type_map) + "\n")
    (directory / "type.raw").write_text(
        "\n".join(str(type_map.index(s)) for s in frames[0].get_chemical_symbols()) + "\n"
    )
    (directory / "set.000").mkdir()
    np.save(directory / "set.000" / "coord.npy", np.array([a.positions.ravel() for a in frames]))
    np.save(directory / "set.000" / "box.npy", np.array([a.cell.array.ravel() for a in frames]))


def test_devi_matches_dp_model_devi(tmp_path, model_paths):
    rng = np.random.default_rng(7)
    frames = []
    for k in range(5):
        atoms = bulk("Cu", "fcc", a=3.87, cubic=True).repeat((2, 2, 2))
        atoms.set_chemical_symbols(list(rng.permutation(["Cu", "Au"] * 16)))
        atoms.set_chemical_symbols(frames[0].get_chemical_symbols() if frames else atoms.get_chemical_symbols())
        atoms.positions += rng.normal(scale=0.05 * (k + 1), size=atoms.positions.shape)
        atoms.info["step"] = 10 * k
        frames.append(atoms)
    # dp model-devi refuses models whose type maps differ; the shipped m2, m3 list Au first
    same_map = [p for p in model_paths if p.stem in ("m0", "m1")]
    write(tmp_path / "frames.extxyz", frames)
    write_npy_system(tmp_path / "system", frames, ["Cu", "Au"])
    dp = subprocess.run(
        [tool("dp"), "--pt", "model-devi", "-m", *map(str, same_map), "-s", "system", "-o", "dp_devi.out", "-f", "10"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert dp.returncode == 0, dp.stderr[-3000:]
    proc = devi("frames.extxyz", "--models", *same_map, "--out-file", "ours.out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours, theirs = rows(tmp_path / "ours.out"), rows(tmp_path / "dp_devi.out")
    np.testing.assert_array_equal(ours[:, 0], [0, 10, 20, 30, 40])  # from the extxyz step=
    np.testing.assert_array_equal(theirs[:, 0], ours[:, 0])
    # dp model-devi writes devi_e as an 8th column; the first seven are LAMMPS's
    np.testing.assert_allclose(ours[:, 1:7], theirs[:, 1:7], rtol=1e-5)
    assert np.ptp(ours[:, 4]) > 0  # the frames differ in deviation
    # 4 ranks, 2 models: two groups of two ranks, the frames and the models split
    proc = devi("frames.extxyz", "--models", *same_map, "--out-file", "split.out", "--batch", "2", cwd=tmp_path, mpi=4)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "split.out").read_bytes() == (tmp_path / "ours.out").read_bytes()


def test_devi_names_the_rank_whose_model_fails(tmp_path, model_paths):
    atoms = bulk("Cu", "fcc", a=3.87, cubic=True)
    write(tmp_path / "one.extxyz", atoms)
    (tmp_path / "broken.pth").write_bytes(b"not a model")
    proc = devi("one.extxyz", "--models", model_paths[0], "broken.pth", cwd=tmp_path, mpi=2)
    assert proc.returncode == 5, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "rank 1: " in errors[0] and "broken.pth" in errors[0], proc.stderr[-2000:]


def test_devi_errors_name_the_file(tmp_path, model_paths):
    (tmp_path / "bad.xyz").write_text("2\n# CELL(abcABC): 5 5 5 90 90 90 positions{furlong}\nCu 0 0 0\nCu 1 1 1\n")
    proc = devi("bad.xyz", "--models", *model_paths[:2], cwd=tmp_path)
    assert proc.returncode == 2
    assert "bad.xyz, line 2: unit positions{furlong} not supported" in proc.stderr
    proc = devi("missing.xyz", "--models", *model_paths[:2], cwd=tmp_path)
    assert proc.returncode == 2 and "trajectory missing.xyz: no such file" in proc.stderr
    proc = devi("bad.xyz", "--models", model_paths[0], cwd=tmp_path)
    assert proc.returncode == 2 and "two or more --models" in proc.stderr


def test_plot_writes_a_png(tmp_path):
    from ensemble_driver.deviation import Deviation
    from ensemble_driver.outputs.model_devi import format_row, header_line

    rng = np.random.default_rng(1)
    for bead in range(1, 5):
        lines = [header_line(False)]
        for step in range(0, 200, 10):
            f = abs(rng.normal(0.08, 0.04)) + step * 2e-4
            lines.append(format_row(step, Deviation(0.01, 0.0, 0.005, f, f / 4, f / 2)))
        (tmp_path / f"model_devi{bead}.out").write_text("".join(lines))
    files = sorted(str(p) for p in tmp_path.glob("model_devi*.out"))
    out = subprocess.run(
        [tool("ensemble-driver"), "plot", *files, "--trust-lo", "0.05", "--trust-hi", "0.15", "-o", "devi.png"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    data = (tmp_path / "devi.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20000
    everything = np.concatenate([rows(f)[:, 4] for f in files])
    expected = sum(1 for x in everything if 0.05 <= x < 0.15)
    assert f"candidate {expected} (" in out.stdout
    bad = subprocess.run(
        [tool("ensemble-driver"), "plot", "nothing.out"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2 and "deviation file nothing.out" in bad.stderr


@pytest.mark.timeout(300)
def test_devi_reads_lammps_dumps_by_element_by_type_and_triclinic(tmp_path, model_paths, reference):
    """The same frames, in a triclinic box, as extended XYZ and as LAMMPS dumps with an
    element column and with types only (named by model 0's type map): the same rows (the
    dumps' 10 decimals: 1e-5 of the extended XYZ's), and the two dumps' rows identical."""
    rng = np.random.default_rng(7)
    base = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    base.symbols[::2] = "Au"
    cell = base.cell.array @ np.array([[1.02, 0, 0], [0.15, 0.98, 0], [0.1, -0.12, 1.01]])  # lower-triangular
    frames = []
    for _ in range(3):
        atoms = base.copy()
        atoms.set_cell(cell, scale_atoms=True)
        atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
        frames.append(atoms)
    write(tmp_path / "frames.extxyz", frames)
    type_map = reference.deeppot(model_paths[0]).get_type_map()
    typed, named = [], []
    for step, atoms in enumerate(frames):
        types = np.array([type_map.index(s) for s in atoms.get_chemical_symbols()])
        text = lammps_frame(10 * step, atoms.positions, atoms.cell.array, types, np.zeros((len(atoms), 3)))
        typed.append(text)
        head, body = text.split("ITEM: ATOMS id type x y z fx fy fz\n")
        lines = [f"{line} {s}" for line, s in zip(body.splitlines(), atoms.get_chemical_symbols())]
        named.append(head + "ITEM: ATOMS id type x y z fx fy fz element\n" + "\n".join(lines) + "\n")
    (tmp_path / "typed.dump").write_text("".join(typed))
    (tmp_path / "named.dump").write_text("".join(named))
    out = {}
    for name in ("frames.extxyz", "typed.dump", "named.dump"):
        proc = devi(tmp_path / name, "--models", *model_paths[:2], "--out-file", f"{name}.out", cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
        out[name] = rows(tmp_path / f"{name}.out")
    np.testing.assert_array_equal(out["typed.dump"], out["named.dump"])
    np.testing.assert_array_equal(out["typed.dump"][:, 0], [0, 10, 20])
    np.testing.assert_allclose(out["typed.dump"][:, 1:], out["frames.extxyz"][:, 1:], rtol=1e-5, atol=1e-9)
