"""Deviation maths against deepmd-kit's reference functions (deepmd.infer.model_devi; the
golden numbers worked by hand: tests/unit/foundation/test_deviation.py)."""

from __future__ import annotations

import numpy as np
import pytest

from ensemble_driver.deviation import model_deviation


@pytest.mark.parametrize("relative", [None, 0.5])
def test_matches_deepmd_reference(relative):
    """deepmd.infer.model_devi computes the same numbers (relative_v differs by design)."""
    from deepmd.infer.model_devi import calc_model_devi_f, calc_model_devi_v

    rng = np.random.default_rng(42)
    n_models, nat = 4, 7
    forces = rng.normal(size=(n_models, nat, 3))
    virials = rng.normal(size=(n_models, 3, 3)) * 10
    row = model_deviation(forces, virials, relative=relative, atomic=True)
    fmax, fmin, favg, fatom = calc_model_devi_f(forces[:, None], relative=relative, atomic=True)
    vmax, vmin, vavg = calc_model_devi_v(virials.reshape(n_models, 1, 9) / nat)
    assert row.columns() == pytest.approx((vmax[0], vmin[0], vavg[0], fmax[0], fmin[0], favg[0]), rel=1e-12)
    np.testing.assert_allclose(row.atomic, fatom[0], rtol=1e-12)
