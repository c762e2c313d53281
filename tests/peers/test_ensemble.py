"""The MPI ensemble under real mpiexec (MPICH from PyPI) and a real i-PI PIMD run.

i-PI writes every bead's positions every step in its binary format (float64 in Bohr, the
very numbers it sent over the socket); each deviation row is recomputed from them with
all four models in-process and deepmd-kit's calc_model_devi_f / calc_model_devi_v, and
must print identically. The energies and forces i-PI received are model 0's, to 1e-6.
"""

from __future__ import annotations

import os
import subprocess
import time

import numpy as np
import pytest
from support.ase_runs import Launcher, alloy, driver_args, structures
from support.harness import CHECK_OUTPUTS, check_run_against_model, driver_command, run_ipi
from support.ipi_runs import BIN_OUTPUT, OUT_FREQ, STEPS, bead_file, expected_rows
from support.mpi import mpiexec
from support.paths import IPI_INPUTS, tool

from ensemble_driver.outputs.model_devi import header_line

NBEADS = 4

_FILES_BY_RANKS: dict[int, list[str]] = {}  # what each -n wrote, compared across the runs


@pytest.mark.parametrize("nranks", [1, 2, 3])
def test_pimd_rows_match_deepmd_and_ranks_agree(tmp_path_factory, address, model_paths, reference, symbols, nranks):
    workdir = tmp_path_factory.mktemp(f"ranks{nranks}")
    command = mpiexec(
        nranks,
        driver_command(
            model_paths,
            workdir / "init.xyz",
            address,
            "--nbeads",
            str(NBEADS),
            "--out-freq",
            str(OUT_FREQ),
        ),
    )
    run = run_ipi(
        workdir,
        "pimd.xml",
        address=address,
        steps=STEPS,
        nbeads=NBEADS,
        drivers=[command],
        outputs=(*CHECK_OUTPUTS, BIN_OUTPUT),
    )
    # the dynamics are model 0's alone
    check_run_against_model(run, model_paths[0], reference, steps=STEPS)
    assert run.evaluations_per_rid() == {b: STEPS + 1 for b in range(NBEADS)}
    expected = expected_rows(run, model_paths, reference, symbols)
    contents = []
    for bead in range(NBEADS):
        text = bead_file(workdir, bead).read_text()
        lines = text.splitlines(keepends=True)
        assert lines[0] == header_line(atomic=False)
        assert lines[1:] == expected[bead], (nranks, bead)
        assert [int(line.split()[0]) for line in lines[1:]] == [0, 3, 6]
        contents.append(text)
    # nothing else matching DP-GEN's glob model_devi*.out
    assert sorted(p.name for p in workdir.glob("model_devi*.out")) == [f"model_devi{b}.out" for b in range(1, 5)]
    # -n 1, 2 and 3 write the same files
    _FILES_BY_RANKS[nranks] = contents
    for other, other_contents in _FILES_BY_RANKS.items():
        assert other_contents == contents, f"-n {other} and -n {nranks} wrote different files"


def test_relative_and_atomic(tmp_path, address, model_paths, reference, symbols):
    steps, out_freq = 4, 2
    command = mpiexec(
        2,
        driver_command(
            model_paths,
            tmp_path / "init.xyz",
            address,
            "--nbeads",
            "2",
            "--out-freq",
            str(out_freq),
            "--relative",
            "0.5",
            "--relative-v",
            "0.2",
            "--atomic",
            "--bead-files",
            "dpgen2",
        ),
    )
    run = run_ipi(
        tmp_path, "pimd.xml", address=address, steps=steps, nbeads=2, drivers=[command], outputs=(BIN_OUTPUT,)
    )
    expected = expected_rows(
        run, model_paths, reference, symbols, steps=steps, out_freq=out_freq, relative=0.5, relative_v=0.2, atomic=True
    )
    for bead in range(2):
        lines = (tmp_path / f"model_devi.{bead + 1}.out").read_text().splitlines(keepends=True)
        assert lines[0] == header_line(atomic=True)
        assert lines[1:] == expected[bead]
        assert len(lines[1].split()) == 7 + len(symbols)


def read_extras(path) -> dict[int, tuple[float, ...]]:
    """i-PI's extras trajectory: ' #EXTRAS(keys)# Step: N' then the values, per frame."""
    lines = path.read_text().splitlines()
    return {
        int(head.split("Step:")[1]): tuple(float(x) for x in values.split())
        for head, values in zip(lines[0::2], lines[1::2])
    }


def test_shipped_extras_input(tmp_path, address, model_paths):
    """ipi_inputs/pimd_devi.xml with --extras: i-PI's per-bead extras files hold the rows'
    values (max_devi_f, max_devi_v, avg_devi_f), and -1 on steps without a deviation
    (seen in an extra stride-1 output)."""
    steps, out_freq = 10, 5
    command = mpiexec(
        2,
        driver_command(
            model_paths[:3],
            tmp_path / "init.xyz",
            address,
            "--nbeads",
            "2",
            "--out-freq",
            str(out_freq),
            "--extras",
        ),
    )
    every_step = (
        "<trajectory filename='devi1' stride='1' extra_type='max_devi_f,max_devi_v,avg_devi_f'> extras </trajectory>"
    )
    run = run_ipi(
        tmp_path,
        "pimd_devi.xml",
        address=address,
        steps=steps,
        nbeads=2,
        drivers=[command],
        outputs=None,
        extra_outputs=(every_step,),
    )
    for bead in range(2):
        rows = [line.split() for line in bead_file(tmp_path, bead).read_text().splitlines()[1:]]
        by_step = {int(r[0]): (float(r[4]), float(r[1]), float(r[6])) for r in rows}
        assert sorted(by_step) == [0, 5, 10]
        shipped = read_extras(tmp_path / f"{run.prefix}.devi_{bead}")  # the input's own stride 10
        assert sorted(shipped) == [0, 10]
        for step, values in shipped.items():
            assert tuple(float("%.6e" % x) for x in values) == by_step[step], (bead, step)
        every = read_extras(tmp_path / f"{run.prefix}.devi1_{bead}")
        assert sorted(every) == list(range(steps + 1))
        for step, values in every.items():
            if step % out_freq == 0:
                assert tuple(float("%.6e" % x) for x in values) == by_step[step], (bead, step)
            else:
                assert values == (-1.0, -1.0, -1.0)


def test_model_failing_on_rank_2_ends_every_rank(tmp_path, address, model_paths):
    """Layout for 4 models on 3 ranks: [[0], [1, 3], [2]]: model 2 lives on rank 2."""
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"this is not a model" * 100)
    command = mpiexec(
        3,
        driver_command(
            [model_paths[0], model_paths[1], bad, model_paths[3]],
            IPI_INPUTS / "init.xyz",
            address,
            "--out-file",
            str(tmp_path / "model_devi.out"),
        ),
    )
    start = time.monotonic()
    proc = subprocess.run(command, capture_output=True, text=True, timeout=240)
    elapsed = time.monotonic() - start
    assert proc.returncode == 5, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, proc.stderr[-3000:]
    assert errors[0].startswith(f"ensemble-driver: error: rank 2: cannot load model {bad}: ")
    assert not (tmp_path / "model_devi.out").exists()  # no half-made output left behind
    assert not os.path.exists(f"/tmp/ipi_{address}")
    print(f"all ranks ended {elapsed:.1f} s after the launch")  # shown with -s; not asserted


def test_more_ranks_than_models_is_an_error(address, model_paths):
    proc = subprocess.run(
        mpiexec(3, driver_command(model_paths[:2], IPI_INPUTS / "init.xyz", address)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert errors == [
        "ensemble-driver: error: 3 MPI ranks for 2 models: each rank holds at least one model; "
        "use at most 2 ranks (mpiexec -n 2)"
    ]


@pytest.mark.timeout(300)
def test_ase_server_one_series(tmp_path, address, model_paths, reference):
    """ASE's server never sends INIT: one file, every evaluation is a step."""
    from ase.calculators.socketio import SocketIOCalculator
    from deepmd.infer.model_devi import calc_model_devi_f, calc_model_devi_v

    base = alloy(7)
    base.write(tmp_path / "template.extxyz")
    out = tmp_path / "model_devi.out"

    def build(unixsocket, port):
        return mpiexec(
            2,
            [
                tool("ensemble-driver"),
                "run",
                "--models",
                *map(str, model_paths[:3]),
                "--template",
                str(tmp_path / "template.extxyz"),
                "--connect-timeout",
                "120",
                "--out-freq",
                "1",
                "--out-file",
                str(out),
                "--atomic",
                *driver_args(unixsocket, port),
            ],
        )

    launcher = Launcher(build, tmp_path / "driver.log")
    frames = structures(base, seed=8)
    with SocketIOCalculator(launch_client=launcher, unixsocket=address, timeout=120) as calc:
        for atoms in frames:
            atoms.calc = calc
            atoms.get_potential_energy()
    assert launcher.proc.wait(timeout=60) == 0, (tmp_path / "driver.log").read_text()[-3000:]
    lines = out.read_text().splitlines()
    assert lines[0] == header_line(atomic=True).rstrip("\n")
    assert [int(line.split()[0]) for line in lines[1:]] == list(range(len(frames)))
    for line, atoms in zip(lines[1:], frames):
        forces, virials = [], []
        for path in model_paths[:3]:
            _, f, v = reference.eval(path, atoms)
            forces.append(f)
            virials.append(v.reshape(9))
        fmax, fmin, favg, fatom = calc_model_devi_f(np.array(forces)[:, None], atomic=True)
        vmax, vmin, vavg = calc_model_devi_v(np.array(virials)[:, None] / len(atoms))
        expected = [vmax[0], vmin[0], vavg[0], fmax[0], fmin[0], favg[0], *fatom[0]]
        np.testing.assert_allclose([float(x) for x in line.split()[1:]], expected, rtol=2e-6)


@pytest.mark.parametrize("nbeads, batch", [(4, 4), (6, 4)], ids=["full", "padded"])
def test_batched_transport(tmp_path, address, model_paths, reference, symbols, nbeads, batch):
    """i-PI's <batch_size>: model 0 answers whole batches (the padded second batch of
    each step when 6 beads go in batches of 4), the dynamics stay model 0's, and every
    bead's deviation rows are those of its own structures."""
    steps, out_freq = 6, 3
    command = mpiexec(
        2,
        driver_command(
            model_paths[:3],
            tmp_path / "init.xyz",
            address,
            "--nbeads",
            str(nbeads),
            "--out-freq",
            str(out_freq),
        ),
    )
    run = run_ipi(
        tmp_path,
        "pimd.xml",
        address=address,
        steps=steps,
        nbeads=nbeads,
        drivers=[command],
        consolidate=True,
        batch_size=batch,
        outputs=(*CHECK_OUTPUTS, BIN_OUTPUT),
    )
    check_run_against_model(run, model_paths[0], reference, steps=steps)
    assert run.evaluations_per_rid() == {b: steps + 1 for b in range(nbeads)}
    expected = expected_rows(run, model_paths[:3], reference, symbols, steps=steps, out_freq=out_freq)
    for bead in range(nbeads):
        lines = bead_file(tmp_path, bead).read_text().splitlines(keepends=True)
        assert lines[1:] == expected[bead], bead
