"""Deviation maths: golden numbers worked by hand (deepmd-kit's reference functions:
tests/peers/test_deviation_deepmd.py)."""

from __future__ import annotations

import numpy as np
import pytest

from ensemble_driver.deviation import force_deviation, model_deviation, virial_deviation

# Two models, two atoms. Atom 0: forces +-1 along x around a zero mean -> e_0 = 1.
# Atom 1: (0,0,0) and (0,4,0), mean (0,2,0), +-2 along y -> e_1 = 2.
FORCES = np.array(
    [
        [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
        [[-1.0, 0.0, 0.0], [0.0, 4.0, 0.0]],
    ]
)
# Virials diag(2,0,0) and diag(-2,0,0): per atom (N=2) +-1 in xx -> d_xx = 1, others 0.
VIRIALS = np.array([np.diag([2.0, 0.0, 0.0]), np.diag([-2.0, 0.0, 0.0])])


def test_golden_row():
    row = model_deviation(FORCES, VIRIALS, atomic=True)
    assert row.columns() == pytest.approx((1.0, 0.0, 1.0 / 3.0, 2.0, 1.0, 1.5), rel=1e-15)
    np.testing.assert_allclose(row.atomic, [1.0, 2.0])


def test_golden_relative():
    # e_i / (|<F_i>| + nu): atom 0 mean 0 -> 1/(0+1); atom 1 mean norm 2 -> 2/(2+1)
    np.testing.assert_allclose(force_deviation(FORCES, relative=1.0), [1.0, 2.0 / 3.0])


def test_golden_relative_v_is_per_component():
    # d_ab / (|<W_ab>|/N + nu): xx has mean 0 -> 1/0.5 = 2; the other components are 0/0.5
    d = virial_deviation(VIRIALS, natoms=2, relative_v=0.5)
    np.testing.assert_allclose(d, [2.0] + [0.0] * 8)
    # a component with a non-zero mean: W_yy = 6 and 2 -> per atom 3 and 1: std 1, mean 2
    v = np.array([np.diag([0.0, 6.0, 0.0]), np.diag([0.0, 2.0, 0.0])])
    np.testing.assert_allclose(virial_deviation(v, natoms=2, relative_v=1.0)[4], 1.0 / (2.0 + 1.0))


def test_population_std_over_all_models():
    """Divide by n_m (not n_m - 1), model 0 included: three models at -1, 0, 1."""
    forces = np.array([[[-1.0, 0, 0]], [[0.0, 0, 0]], [[1.0, 0, 0]]])
    assert force_deviation(forces)[0] == pytest.approx(np.sqrt(2.0 / 3.0), rel=1e-15)


def test_identical_models_give_zero():
    rng = np.random.default_rng(0)
    f = np.repeat(rng.normal(size=(1, 5, 3)), 4, axis=0)
    v = np.repeat(rng.normal(size=(1, 3, 3)), 4, axis=0)
    assert model_deviation(f, v).columns() == (0.0,) * 6


def test_bad_shape():
    with pytest.raises(ValueError, match="n_models, nat, 3"):
        model_deviation(np.zeros((2, 3)), np.zeros((2, 3, 3)))
