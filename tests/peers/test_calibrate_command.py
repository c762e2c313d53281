"""``ensemble-driver calibrate`` on the shipped models: the deviation against labelled data.

Labels from ASE's EMT on the shipped models' 32-atom Cu-Au alloy, inside their training
domain and beyond it (hotter, compressed: ``examples/calibrate/make_data.py``), written as
deepmd/npy, deepmd/hdf5, deepmd/npy/mixed and extended XYZ. Every frame's number of the
real command's JSON equals an independent NumPy computation from ``DeepPot.eval``
(1e-6 relative); alpha equals Musil's formula; the proposed trust_lo is the brute-force
optimum of its definition; precision and recall are recounted with DP-GEN's
classification; the figure is written; under ``mpiexec -n 2`` the numbers are those of
one process. Bad input: one line each, with its status. The statistics alone are tested
in pure NumPy in the fast tier (tests/unit/calibrate/test_calibrate.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write
from support.calibration import brute_trust_hi, brute_trust_lo, recount
from support.mpi import mpiexec
from support.paths import ROOT, tool

sys.path.insert(0, str(ROOT / "examples" / "calibrate"))
import make_data  # noqa: E402

TARGET, MISS = 0.3, 0.05
COLUMNS = ("max_force_error", "force_rmse", "energy_error_per_atom", "max_devi_f", "avg_devi_f", "devi_e")


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """26 labelled frames, 2 per system, 13 systems (9 inside the domain, 4 beyond), in
    every format; and the frames themselves (ASE, with their EMT labels)."""
    out = tmp_path_factory.mktemp("labelled")
    systems = make_data.make_systems(2)
    paths = make_data.write_all(systems, out)
    import dpdata

    mixed = out / "mixed"
    dpdata.MultiSystems(*[dpdata.LabeledSystem(str(p), fmt="deepmd/npy") for p in sorted(paths["npy"].iterdir())]).to(
        "deepmd/npy/mixed", str(mixed)
    )
    return {**paths, "mixed": mixed, "frames": [a for s in systems for a in s]}


def calibrate(*args, cwd, mpi: int = 1, timeout=300):
    command = [tool("ensemble-driver"), "calibrate", *map(str, args)]
    if mpi > 1:
        command = mpiexec(mpi, command)
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def expected(frames, reference, model_paths):
    """Every frame's numbers, from DeepPot.eval of each model (the frames of a system in
    one call), written out here again; and the samples of alpha (energies per atom, force
    components). TorchScript without its profiling passes, as the driver runs it on the
    CPU: the same numbers, without a re-profiling for every new count of ghost atoms."""
    import torch

    rows, e_samples, f_samples = [], [], []
    systems: dict[tuple, list] = {}
    for atoms in frames:
        systems.setdefault(tuple(atoms.get_chemical_symbols()), []).append(atoms)
    evaluated = {}
    with torch.jit.optimized_execution(False):
        for symbols, group in systems.items():
            coords = np.array([a.positions.ravel() for a in group])
            cells = np.array([a.cell.array.ravel() for a in group])
            for k, path in enumerate(model_paths):
                dp = reference.deeppot(path)
                types = [dp.get_type_map().index(x) for x in symbols]
                e, f = dp.eval(coords, cells, types)[:2]
                for j, a in enumerate(group):
                    evaluated[(id(a), k)] = (float(np.ravel(e)[j]), np.asarray(f).reshape(len(group), -1, 3)[j])
    for atoms in frames:
        nat = len(atoms)
        ref_e, ref_f = atoms.get_potential_energy(), atoms.get_forces()
        e = np.array([evaluated[(id(atoms), k)][0] for k in range(len(model_paths))])
        f = np.array([evaluated[(id(atoms), k)][1] for k in range(len(model_paths))])
        err = np.linalg.norm(f[0] - ref_f, axis=1)
        spread = np.sqrt(np.mean(np.sum((f - f.mean(axis=0)) ** 2, axis=2), axis=0))
        rows.append(
            {
                "max_force_error": err.max(),
                "force_rmse": np.sqrt(np.mean((f[0] - ref_f) ** 2)),
                "energy_error_per_atom": (e[0] - ref_e) / nat,
                "max_devi_f": spread.max(),
                "avg_devi_f": spread.mean(),
                "devi_e": np.std(e / nat),
            }
        )
        e_samples.append((ref_e / nat - np.mean(e / nat), np.var(e / nat, ddof=1)))
        f_samples += list(zip((ref_f - f.mean(axis=0)).ravel(), f.var(axis=0, ddof=1).ravel()))
    return rows, np.array(e_samples), np.array(f_samples)


@pytest.fixture(scope="module")
def want(labelled, reference, model_paths):
    """The numbers of the generated frames with the four models."""
    return expected(labelled["frames"], reference, model_paths)


@pytest.fixture(scope="module")
def hdf5_run(labelled, model_paths, tmp_path_factory):
    """One process on the deepmd/hdf5 file: its report."""
    cwd = tmp_path_factory.mktemp("hdf5")
    proc = calibrate(labelled["hdf5"], "--models", *model_paths, "--error-target", TARGET, cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((cwd / "calibration.json").read_text())


def musil(samples, m):
    r, v = samples[:, 0], samples[:, 1]
    return -1 / m + (m - 3) / (m - 1) * np.mean(r**2 / v)


def check_numbers(report, want, columns=COLUMNS):
    assert len(report["per_frame"]) == len(want)
    for k, (got, row) in enumerate(zip(report["per_frame"], want)):
        for name in columns:
            assert got[name] == pytest.approx(row[name], rel=1e-6, abs=1e-9), (k, name)


@pytest.mark.timeout(600)
def test_every_number_of_the_report_from_deeppot_eval(tmp_path, labelled, want, model_paths):
    proc = calibrate(
        labelled["npy"], "--models", *model_paths, "--error-target", TARGET, "-o", "calib.png", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "calibration.json").read_text())
    rows, e_samples, f_samples = want
    check_numbers(report, rows)
    assert [f["system"].split("/")[-1] for f in report["per_frame"][:3]] == ["sys.000", "sys.000", "sys.001"]
    d = np.array([r["max_devi_f"] for r in rows])
    err = np.array([r["max_force_error"] for r in rows])
    from scipy.stats import spearmanr

    assert report["spearman"] == pytest.approx(spearmanr(d, err).statistic, rel=1e-6)
    assert report["alpha"]["energy"]["alpha2"] == pytest.approx(musil(e_samples, 4), rel=1e-6)
    assert report["alpha"]["force"]["alpha2"] == pytest.approx(musil(f_samples, 4), rel=1e-6)
    assert report["alpha"]["force"]["alpha"] == pytest.approx(np.sqrt(musil(f_samples, 4)), rel=1e-6)
    proposal = report["proposal"]
    lo, hi = proposal["trust_lo"], proposal["trust_hi"]
    assert lo == pytest.approx(brute_trust_lo(d, err, TARGET, MISS), rel=1e-6)
    assert hi == pytest.approx(brute_trust_hi(d, err, TARGET, MISS, lo), rel=1e-6)
    counted = recount(np.array([f["max_devi_f"] for f in report["per_frame"]]), err, TARGET, lo, hi)
    w = proposal["window"]
    assert w["frames"] == counted["frames"] and w["above_target"] == counted["above"]
    assert w["precision"] == counted["precision"] and w["recall"] == counted["recall"]
    assert 0 < counted["frames"]["candidate"] < len(rows)  # the window means something on these data
    assert (tmp_path / "calib.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"--trust-lo {lo:.6g} --trust-hi {hi:.6g}" in proc.stdout
    assert "Spearman" in proc.stdout and "alpha (Musil et al. 2019, 4 members)" in proc.stdout


@pytest.mark.timeout(600)
def test_hdf5_mixed_and_extxyz_give_the_numbers_of_what_they_hold(
    tmp_path, labelled, want, hdf5_run, reference, model_paths
):
    """deepmd/hdf5 holds the frames bit for bit; extended XYZ as ASE wrote it (8 decimals):
    each run's numbers are those of DeepPot.eval on what the file holds. Mixed-type data
    (dpgen2's) regroups the frames: model 0's numbers, in another order; with 3 models,
    alpha needs 4 and the rest of the report is given."""
    check_numbers(hdf5_run, want[0])
    assert hdf5_run["per_frame"][0]["system"].endswith("data.hdf5#/sys.000")
    proc = calibrate(labelled["mixed"], "--models", *model_paths[:3], "--error-target", TARGET, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "calibration.json").read_text())
    key = lambda r: r["max_force_error"]  # noqa: E731
    model0 = ("max_force_error", "force_rmse", "energy_error_per_atom")
    check_numbers({"per_frame": sorted(report["per_frame"], key=key)}, sorted(want[0], key=key), model0)
    assert "alpha: alpha needs 4 or more models, got 3" in proc.stdout
    assert report["alpha"]["energy"]["alpha"] is None and report["proposal"]["window"]["recall"] is not None
    assert report["spearman"] is not None
    proc = calibrate(labelled["extxyz"], "--models", *model_paths, "--json", "xyz.json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "xyz.json").read_text())
    check_numbers(report, expected(read(labelled["extxyz"], ":"), reference, model_paths)[0])


@pytest.mark.timeout(600)
def test_two_ranks_give_the_numbers_of_one_process(tmp_path, labelled, hdf5_run, model_paths):
    proc = calibrate(labelled["hdf5"], "--models", *model_paths, "--error-target", TARGET, cwd=tmp_path, mpi=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("calibrate:") == 1  # rank 0 alone reports
    report = json.loads((tmp_path / "calibration.json").read_text())
    assert report["per_frame"] == hdf5_run["per_frame"] and report["proposal"] == hdf5_run["proposal"]


def error_line(proc):
    lines = [line for line in proc.stderr.splitlines() if line.startswith("ensemble-driver: error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


@pytest.mark.timeout(600)
def test_bad_input_one_line_each(tmp_path, labelled, model_paths):
    frames = labelled["frames"]
    write(tmp_path / "few.extxyz", frames[:5])
    no_forces = tmp_path / "no_forces"
    make_data.write_npy(frames[:2], no_forces)
    (no_forces / "set.000" / "force.npy").unlink()
    alien = [a.copy() for a in frames[:2] * 10]
    for a, b in zip(alien, frames[:2] * 10):
        a.symbols[0] = "Ag"
        a.calc = SinglePointCalculator(a, energy=b.get_potential_energy(), forces=b.get_forces())
    write(tmp_path / "alien.extxyz", alien)
    models = ["--models", *map(str, model_paths)]
    cases = [
        ((labelled["npy"], "--models", model_paths[0]), 2, "calibrate needs two or more --models"),
        (("missing", *models), 2, "data missing: no such file or directory"),
        (("few.extxyz", *models), 2, "needs at least 20 labelled frames for a proposal, got 5"),
        ((no_forces, *models), 2, "forces"),
        ((labelled["npy"], *models, "--miss-rate", "1.5"), 2, "--miss-rate must be a fraction"),
        # as run and devi: a model that does not know an element is a model error (status 5)
        (("alien.extxyz", *models), 5, "does not know element(s) Ag of data alien.extxyz"),
    ]
    for args, status, text in cases:
        proc = calibrate(*args, cwd=tmp_path)
        assert proc.returncode == status, (args, proc.stderr[-2000:])
        assert text in error_line(proc), (args, proc.stderr[-2000:])
