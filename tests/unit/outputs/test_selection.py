"""Candidate selection: DP-GEN's classification on golden rows, the candidate files read
back by ASE (a real i-PI PIMD run under mpiexec whose candidates are exactly the
structures i-PI sent at the candidate rows' steps: tests/peers/test_selection_runs.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from ase.io import read

from ensemble_driver.deviation import Deviation
from ensemble_driver.errors import ConfigError
from ensemble_driver.outputs.selection import (
    ACCURATE,
    CANDIDATE,
    FAILED,
    Selection,
    TrustLevels,
    candidate_file_names,
    summary_file_name,
)
from ensemble_driver.run.config import RunConfig

F_ONLY = TrustLevels(0.10, 0.30)
WITH_V = TrustLevels(0.10, 0.30, 0.02, 0.05)


@pytest.mark.parametrize(
    "levels, max_f, max_v, expected",
    [
        (F_ONLY, 0.05, 0.0, ACCURATE),
        (F_ONLY, 0.10, 0.0, CANDIDATE),  # the low level is in the band
        (F_ONLY, 0.2999, 0.0, CANDIDATE),
        (F_ONLY, 0.30, 0.0, FAILED),  # the high level is not
        (F_ONLY, 0.05, 1e9, ACCURATE),  # no virial levels: the virial plays no part
        (WITH_V, 0.05, 0.01, ACCURATE),
        (WITH_V, 0.05, 0.02, CANDIDATE),  # the virial alone makes a candidate
        (WITH_V, 0.05, 0.05, FAILED),  # ... or a failure
        (WITH_V, 0.20, 0.07, CANDIDATE),  # DP-GEN tests "candidate" first: a band wins over a failure
        (WITH_V, 0.40, 0.03, CANDIDATE),
        (WITH_V, 0.40, 0.01, FAILED),
    ],
)
def test_classification_follows_dpgen(levels, max_f, max_v, expected):
    assert levels.classify(max_f, max_v) == expected


@pytest.mark.parametrize(
    "args, message",
    [
        ((0.3, 0.1), "need 0 <= low <= high"),
        ((-0.1, 0.1), "need 0 <= low <= high"),
        ((0.1, float("nan")), "need 0 <= low <= high"),
        ((0.1, 0.3, 0.02, None), "give both levels or neither"),
    ],
)
def test_bad_levels(args, message):
    with pytest.raises(ConfigError, match=message):
        TrustLevels(*args)


def test_levels_need_the_deviation():
    with pytest.raises(ConfigError, match="need two or more --models"):
        RunConfig(models=("m0.pth",), template="t.xyz", trust_lo=0.1, trust_hi=0.3).validated()
    with pytest.raises(ConfigError, match="need --trust-lo and --trust-hi"):
        RunConfig(models=("a", "b"), template="t.xyz", trust_lo_v=0.1, trust_hi_v=0.3).validated()


def test_file_names_stay_out_of_dpgen_glob():
    assert candidate_file_names(["run/model_devi1.out", "run/model_devi2.out"]) == [
        "run/candidates1.xyz",
        "run/candidates2.xyz",
    ]
    assert candidate_file_names(["model_devi.01.out"]) == ["candidates.01.xyz"]
    assert candidate_file_names(["devi/bead0.out"]) == ["devi/bead0.candidates.xyz"]
    assert summary_file_name(["run/model_devi1.out"]) == "run/devi_summary.json"


def row(f, v=0.0):
    return Deviation(v, v / 2, v / 3, f, f / 2, f / 3)


def test_candidates_read_back_by_ase(tmp_path):
    rng = np.random.default_rng(0)
    names = [str(tmp_path / "candidates1.xyz"), str(tmp_path / "candidates2.xyz")]
    summary = str(tmp_path / "devi_summary.json")
    selection = Selection(F_ONLY, names, summary)
    selection.symbols = ["Cu", "Au", "Au"]
    cell = np.diag([7.1, 7.2, 7.3]) + rng.normal(scale=0.1, size=(3, 3))
    kept = []
    for step, f in enumerate([0.05, 0.2, 0.5, 0.15]):
        positions = rng.normal(scale=3.0, size=(3, 3)) / 3  # awkward digits
        kind = selection.add(1, step * 10, row(f, 0.01 * step), positions, cell)
        if kind == CANDIDATE:
            kept.append((step * 10, f, positions))
    selection.close()
    assert not (tmp_path / "candidates1.xyz").exists()  # bead 0 had none: no file
    frames = read(names[1], index=":")
    assert [a.info["step"] for a in frames] == [s for s, _, _ in kept] == [10, 30]
    for atoms, (_step, f_kept, positions) in zip(frames, kept):
        assert atoms.get_chemical_symbols() == ["Cu", "Au", "Au"]
        np.testing.assert_array_equal(atoms.positions, positions)  # bit for bit
        np.testing.assert_array_equal(atoms.cell.array, cell)
        assert atoms.pbc.all()
        assert atoms.info["bead"] == 1 and atoms.info["max_devi_f"] == f_kept
        assert atoms.info["devi_class"] == CANDIDATE
    counts = json.loads(open(summary).read())
    assert counts["beads"][1] == {"bead": 1, "accurate": 1, "candidate": 2, "failed": 1, "candidate_file": names[1]}
    assert counts["total"] == {"accurate": 1, "candidate": 2, "failed": 1}
    assert counts["trust_levels"] == {"f_lo": 0.1, "f_hi": 0.3, "v_lo": None, "v_hi": None}
    # a new run refuses to replace them; --overwrite removes them at once; --append keeps them
    with pytest.raises(ConfigError, match="candidates2.xyz exists"):
        Selection(F_ONLY, names, summary)
    Selection(F_ONLY, names, summary, mode="append")
    assert (tmp_path / "candidates2.xyz").exists()
    Selection(F_ONLY, names, summary, mode="overwrite")
    assert not (tmp_path / "candidates2.xyz").exists()


def test_not_periodic_candidates(tmp_path):
    name = str(tmp_path / "candidates.xyz")
    selection = Selection(F_ONLY, [name], str(tmp_path / "s.json"))
    selection.symbols = ["Cu", "Cu"]
    positions = np.array([[0.0, 0.0, 0.0], [1.0 / 3, 2.5, -1e-17]])
    selection.add(0, 0, row(0.2), positions, None)
    selection.close()
    atoms = read(name)
    assert not atoms.pbc.any()
    np.testing.assert_array_equal(atoms.positions, positions)
