"""``ensemble-driver calibrate``: the deviation against labelled data.

Labels from ASE's EMT on the shipped models' 32-atom Cu-Au alloy, inside their training
domain and beyond it (hotter, compressed: ``examples/calibrate/make_data.py``), written as
deepmd/npy, deepmd/hdf5, deepmd/npy/mixed and extended XYZ. Every frame's number of the
real command's JSON equals an independent NumPy computation from ``DeepPot.eval``
(1e-6 relative); alpha equals Musil's formula; the proposed trust_lo is the brute-force
optimum of its definition; precision and recall are recounted with DP-GEN's
classification; the figure is written; under ``mpiexec -n 2`` the numbers are those of
one process. Bad input: one line each, with its status. The statistics alone are tested
in pure NumPy (the fast tier)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write
from support.paths import ROOT, tool
from test_ensemble import mpiexec

from ensemble_driver.calibrate.command import CalibrateSettings
from ensemble_driver.calibrate.data import read_labelled
from ensemble_driver.calibrate.report import make_report, text_report
from ensemble_driver.calibrate.statistics import (
    FRACTION_SLACK,
    frame_numbers,
    musil_alpha,
    propose_trust_hi,
    propose_trust_lo,
    rank_average,
    reliability,
    spearman,
    window,
)
from ensemble_driver.errors import ConfigError
from ensemble_driver.outputs.selection import TrustLevels

sys.path.insert(0, str(ROOT / "examples" / "calibrate"))
import make_data  # noqa: E402

TARGET, MISS = 0.3, 0.05
COLUMNS = ("max_force_error", "force_rmse", "energy_error_per_atom", "max_devi_f", "avg_devi_f", "devi_e")


# -- the statistics, pure NumPy (fast tier) ----------------------------------------------


def brute_trust_lo(d, err, target, miss):
    """The definition, literally: the largest of the frames' deviations t such that of the
    frames below t at most the fraction ``miss`` has an error above the target."""
    best = None
    for t in sorted(set(d.tolist())):
        below = d < t
        if np.sum(below & (err > target)) <= miss * np.sum(below) + FRACTION_SLACK:
            best = t
    return best


def brute_trust_hi(d, err, target, miss, lo):
    bad = d[err > target]
    if not len(bad):
        return lo
    fits = [t for t in sorted(set(bad.tolist())) if np.sum(bad > t) <= miss * len(bad) + FRACTION_SLACK]
    return max(min(fits), lo)


@pytest.mark.parametrize("seed", range(12))
def test_trust_levels_are_the_brute_force_optimum(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 200))
    d = np.round(rng.lognormal(-2, 1, n), 2 if seed % 3 == 0 else 8)  # ties on every third
    err = d * rng.lognormal(1, 0.5, n)
    target, miss = float(np.quantile(err, rng.uniform(0.2, 0.9))), float(rng.choice([0.0, 0.05, 0.1, 0.3]))
    lo = propose_trust_lo(d, err, target, miss)
    assert lo == brute_trust_lo(d, err, target, miss)
    # no threshold between the data's values above it qualifies (the set below changes only at them)
    distinct = np.unique(d)
    for t in (distinct[1:] + distinct[:-1]) / 2:
        if t > lo:
            below = d < t
            assert np.sum(below & (err > target)) > miss * np.sum(below) + FRACTION_SLACK
    hi = propose_trust_hi(d, err, target, miss, lo)
    assert hi == brute_trust_hi(d, err, target, miss, lo)
    assert lo <= hi


def test_trust_levels_without_any_frame_above_the_target():
    d = np.linspace(0.01, 0.2, 30)
    lo = propose_trust_lo(d, d / 10, 1.0, 0.05)
    assert lo == d.max() and propose_trust_hi(d, d / 10, 1.0, 0.05, lo) == lo


def recount(d, err, target, lo, hi):
    """Precision and recall by hand, each frame classified by DP-GEN's rule (selection.TrustLevels)."""
    levels = TrustLevels(lo, hi)
    cls = [levels.classify(x, 0.0) for x in d]
    bad = [e > target for e in err]
    candidates = [b for c, b in zip(cls, bad) if c == "candidate"]
    return {
        "frames": {c: cls.count(c) for c in ("accurate", "candidate", "failed")},
        "above": {c: sum(b for k, b in zip(cls, bad) if k == c) for c in ("accurate", "candidate", "failed")},
        "precision": sum(candidates) / len(candidates) if candidates else None,
        "recall": sum(candidates) / sum(bad) if sum(bad) else None,
    }


@pytest.mark.parametrize("seed", range(5))
def test_window_counts_as_dpgen_classifies(seed):
    rng = np.random.default_rng(seed)
    d = np.round(rng.lognormal(-2, 1, 100), 3)
    err = d * rng.lognormal(1, 0.6, 100)
    lo, hi = sorted(rng.choice(d, 2, replace=False))
    got, want = window(d, err, 0.3, lo, hi), recount(d, err, 0.3, lo, hi)
    assert got["frames"] == want["frames"] and got["above_target"] == want["above"]
    assert got["precision"] == want["precision"] and got["recall"] == want["recall"]


def test_spearman_matches_scipy_with_ties():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(3)
    x = np.round(rng.normal(size=300), 1)
    y = x + np.round(rng.normal(size=300), 1)
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, rel=1e-12)
    np.testing.assert_array_equal(rank_average([3.0, 1.0, 3.0, 2.0]), [3.5, 1.0, 3.5, 2.0])
    assert spearman(np.ones(5), np.arange(5)) is None


def test_alpha_is_musils_formula_and_recovers_a_known_miscalibration():
    """The formula with ddof=1, and on its own model (members N(mu, s^2), the truth N(mu,
    (alpha s)^2): E[(y - ybar)^2 / sigma^2] = (alpha^2 + 1/M)(M-1)/(M-3)) it gives alpha back."""
    rng = np.random.default_rng(11)
    members, n, alpha = 8, 200_000, 2.5
    scale = rng.lognormal(0, 1, n)
    committee = rng.normal(0, 1, (members, n)) * scale
    truth = rng.normal(0, alpha, n) * scale
    r, v = truth - committee.mean(axis=0), committee.var(axis=0, ddof=1)
    got = musil_alpha(r, v, members)
    assert got.alpha2 == pytest.approx(-1 / members + (members - 3) / (members - 1) * np.mean(r**2 / v), rel=1e-12)
    assert got.alpha == pytest.approx(alpha, rel=0.03)
    assert got.samples == n
    few = musil_alpha(r, v, 3)
    assert few.alpha is None and few.alpha2 is None and few.mean_z2 == pytest.approx(np.mean(r**2 / v))


def test_frame_numbers_by_hand():
    rng = np.random.default_rng(5)
    forces = rng.normal(size=(4, 7, 3))
    energies = rng.normal(size=4) - 20
    ref_f, ref_e = rng.normal(size=(7, 3)), -20.3
    got = frame_numbers(energies, forces, ref_e, ref_f)
    assert got.max_force_error == pytest.approx(max(np.linalg.norm(forces[0][i] - ref_f[i]) for i in range(7)))
    assert got.force_rmse == pytest.approx(np.sqrt(np.sum((forces[0] - ref_f) ** 2) / 21))
    assert got.energy_error == pytest.approx((energies[0] - ref_e) / 7)
    per_atom = [
        np.sqrt(sum(np.sum((forces[k][i] - forces[:, i].mean(0)) ** 2) for k in range(4)) / 4) for i in range(7)
    ]
    assert got.max_devi_f == pytest.approx(max(per_atom)) and got.avg_devi_f == pytest.approx(np.mean(per_atom))
    assert got.devi_e == pytest.approx(np.sqrt(np.mean((energies / 7 - np.mean(energies / 7)) ** 2)))
    assert got.energy_variance == pytest.approx(np.var(energies / 7, ddof=1))


def test_reliability_bins():
    bins = reliability(np.arange(1, 101) / 100, 2 * np.arange(1, 101) / 100, bins=4)
    assert [b["samples"] for b in bins] == [25] * 4
    assert all(b["observed"] == pytest.approx(2 * b["predicted"]) for b in bins)


def fake_numbers(n, members, rng):
    out = []
    for _ in range(n):
        forces = rng.normal(size=(members, 4, 3)) * rng.lognormal(-2, 1)
        out.append(frame_numbers(rng.normal(size=members), forces, 0.1, rng.normal(size=(4, 3)) * 0.3))
    return out


@pytest.mark.parametrize("members", [2, 3, 4])
def test_report_says_alpha_needs_four_models_and_gives_the_rest(members):
    rng = np.random.default_rng(members)
    settings = CalibrateSettings(data=("x",), models=tuple(f"m{k}.pth" for k in range(members)), error_target=0.3)
    numbers = fake_numbers(30, members, rng)
    system = make_data_system(30)
    report = make_report(settings, [system], numbers)
    text = text_report(report)
    assert ("alpha needs 4 or more models" in text) == (members < 4)
    if members < 4:
        assert report["alpha"]["force"]["alpha"] is None and report["alpha"]["energy"]["alpha2"] is None
    else:
        assert report["alpha"]["force"]["alpha2"] is not None
    assert "Spearman" in text and "--trust-lo" in text and "precision" in text
    assert report["spearman"] is not None and len(report["per_frame"]) == 30


def make_data_system(n):
    from ensemble_driver.calibrate.data import Labelled
    from ensemble_driver.devi.frames import Frame

    frames = [Frame(["Cu"] * 4, np.zeros((4, 3)), np.eye(3) * 4, None) for _ in range(n)]
    return Labelled("x", frames, np.zeros(n), np.zeros((n, 4, 3)), list(range(n)))


def test_settings_refuse_bad_options(tmp_path):
    with pytest.raises(ConfigError, match="two or more --models"):
        CalibrateSettings(data=("x",), models=("m0.pth",)).validated()
    with pytest.raises(ConfigError, match="--miss-rate"):
        CalibrateSettings(data=("x",), models=("a", "b"), miss_rate=1.0).validated()
    with pytest.raises(ConfigError, match="--error-target"):
        CalibrateSettings(data=("x",), models=("a", "b"), error_target=-1).validated()
    with pytest.raises(ConfigError, match="no directory"):
        CalibrateSettings(data=("x",), models=("a", "b"), json=str(tmp_path / "no" / "c.json")).validated()
    assert ConfigError.exit_status == 2


def test_ase_data_without_labels_or_path_is_refused(tmp_path):
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [1.8, 0, 0]], cell=np.eye(3) * 5, pbc=True)
    write(tmp_path / "bare.extxyz", [atoms])
    with pytest.raises(ConfigError, match=r"bare.extxyz, frame 0: no energy and forces"):
        read_labelled(tmp_path / "bare.extxyz")
    atoms.calc = SinglePointCalculator(atoms, energy=-1.0)
    write(tmp_path / "energy.extxyz", [atoms])
    with pytest.raises(ConfigError, match=r"frame 0: no forces"):
        read_labelled(tmp_path / "energy.extxyz")
    with pytest.raises(ConfigError, match=r"data .*missing: no such file or directory"):
        read_labelled(tmp_path / "missing")


# -- the real command on the shipped models -------------------------------------------------


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


# -- --alpha: the calibration applied as i-PI applies it (fast tier) -------------------------


def ipi_rescaled(values, alpha):
    """i-PI's own expression (ipi/engine/forcefields.py, FFCommittee.gather)."""
    mean = np.mean(values, axis=0)
    return np.asarray([mean + alpha * (v - mean) for v in values])


def test_alpha_moves_the_committee_members_as_ipi_does():
    from types import SimpleNamespace

    from ensemble_driver.ensemble.extras import committee_extras
    from ensemble_driver.wire import units

    rng = np.random.default_rng(2)
    job = SimpleNamespace(
        energies=rng.normal(size=4) - 100, forces=rng.normal(size=(4, 5, 3)), virials=rng.normal(size=(4, 3, 3))
    )
    plain, scaled = (json.loads(committee_extras(job, a)) for a in (1.0, 2.5))
    np.testing.assert_allclose(scaled["committee_pot"], ipi_rescaled(plain["committee_pot"], 2.5), rtol=1e-12)
    np.testing.assert_allclose(scaled["committee_force"], ipi_rescaled(plain["committee_force"], 2.5), atol=1e-12)
    np.testing.assert_allclose(scaled["committee_virial"], ipi_rescaled(plain["committee_virial"], 2.5), atol=1e-12)
    # i-PI's committee_uncertainty: std(ddof=1) of the members it is sent (and moves again by its own <alpha>)
    assert np.std(ipi_rescaled(scaled["committee_pot"], 1.0), ddof=1) == pytest.approx(
        2.5 * np.std(job.energies, ddof=1) / units.HARTREE_EV, rel=1e-9
    )
    np.testing.assert_allclose(np.mean(scaled["committee_force"], axis=0), np.mean(plain["committee_force"], axis=0))


def test_alpha_scales_the_spread_of_the_bias():
    """E_0 - TAU sigma of the members moved by alpha (population form), its exact gradient:
    the bias of TAU * alpha; model 0's own energy stays E_0."""
    from ensemble_driver.deviation import uncertainty_bias

    rng = np.random.default_rng(4)
    e, f, v = rng.normal(size=4), rng.normal(size=(4, 6, 3)), rng.normal(size=(4, 3, 3))
    energy, forces, virial, sigma = uncertainty_bias(e, f, v, 0.3, alpha=1.7)
    assert sigma == pytest.approx(np.std(ipi_rescaled(e, 1.7)), rel=1e-12)
    assert energy == pytest.approx(e[0] - 0.3 * sigma, rel=1e-12)
    same = uncertainty_bias(e, f, v, 0.3 * 1.7)
    np.testing.assert_allclose(forces, same[1], rtol=1e-12)
    np.testing.assert_allclose(virial, same[2], rtol=1e-12)
    assert uncertainty_bias(e, f, v, 0.3)[3] == pytest.approx(sigma / 1.7)


def test_alpha_needs_the_committee_or_the_bias():
    from ensemble_driver.run.config import RunConfig

    base = {"models": ("a.pth", "b.pth"), "template": "t.xyz"}
    with pytest.raises(ConfigError, match="--alpha scales the committee's spread"):
        RunConfig(**base, alpha=2.0).validated()
    with pytest.raises(ConfigError, match="--alpha must be a positive number"):
        RunConfig(**base, committee_json=True, alpha=0.0).validated()
    assert RunConfig(**base, committee_json=True, alpha=2.0).validated().alpha == 2.0
    assert RunConfig(**base, bias_uncertainty=0.1, alpha=0.5).validated().alpha == 0.5
