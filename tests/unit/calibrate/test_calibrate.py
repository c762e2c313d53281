"""``ensemble-driver calibrate``'s statistics, in pure NumPy (the fast tier): the proposed
trust levels are the brute-force optimum of their definition, precision and recall are
recounted with DP-GEN's classification, alpha is Musil's formula, the report and the
settings; ``--alpha`` applied as i-PI applies it. The real command on the shipped models
and labelled data: tests/peers/test_calibrate_command.py."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from support.calibration import brute_trust_hi, brute_trust_lo, recount

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

# -- the statistics, pure NumPy (fast tier) ----------------------------------------------


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
