"""The model layer on the shipped models: the direct PyTorch path gives DeepPot.eval's
numbers (to rounding), for one structure and for batches, and can be turned off."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk


def alloy(seed: int):
    atoms = bulk("Cu", "fcc", a=3.87, cubic=True).repeat((2, 2, 2))
    rng = np.random.default_rng(seed)
    atoms.set_chemical_symbols(list(rng.permutation(["Cu", "Au"] * 16)))
    atoms.positions += rng.normal(scale=0.1, size=atoms.positions.shape)
    return atoms


@pytest.fixture(scope="module")
def structures():
    frames = [alloy(seed) for seed in range(5)]
    positions = np.stack([a.positions for a in frames])
    cells = np.stack([a.cell.array for a in frames])
    return frames, positions, cells


def plain(reference, path, positions, cells, atom_types):
    dp = reference.deeppot(path)
    e, f, v = dp.eval(positions.reshape(len(positions), -1), cells.reshape(len(cells), 9), atom_types)[:3]
    return np.ravel(e), np.reshape(f, positions.shape), np.reshape(v, (-1, 3, 3))


def test_direct_path_equals_deeppot_eval(model_paths, reference, structures):
    from ensemble_driver.models.deepmd import DeepPotModel

    frames, positions, cells = structures
    model = DeepPotModel(model_paths[1])
    types = model.atom_types(frames[0].get_chemical_symbols())
    assert model._direct is not None and not model._direct.checked
    model.evaluate(positions[0], cells[0], types)  # the first call checks the direct path
    assert model._direct is not None and model._direct.checked
    for k in range(1, len(frames)):  # the same atoms, new positions: one frame at a time
        got = model.evaluate(positions[k], cells[k], types)
        e, f, v = plain(reference, model_paths[1], positions[k : k + 1], cells[k : k + 1], types)
        # to rounding: TorchScript's first runs round the last bit differently
        np.testing.assert_allclose(got.energy, e[0], rtol=1e-13)
        np.testing.assert_allclose(got.forces, f[0], rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(got.virial, v[0], rtol=1e-12, atol=1e-13)
    batch = model.evaluate_batch(positions, cells, types)  # and a batch (a new shape)
    e, f, v = plain(reference, model_paths[1], positions, cells, types)
    np.testing.assert_allclose(batch.energy, e, rtol=1e-12)
    np.testing.assert_allclose(batch.forces, f, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(batch.virial, v, rtol=1e-10, atol=1e-12)
    assert not np.allclose(batch.forces[0], batch.forces[1])  # the frames really differ


def test_models_share_a_neighbour_list_and_give_the_same_numbers(model_paths, structures):
    """devi's models on the same frames: those of one neighbour list (same cut-off, sel
    and atom types: m0 and m1) build it once between them, m2 (Au first in its type map)
    its own; each model's numbers are those it gives alone, bit for bit."""
    from ensemble_driver.models.deepmd import DeepPotModel

    frames, positions, cells = structures
    models = [DeepPotModel(p) for p in model_paths[:3]]
    types = [m.atom_types(frames[0].get_chemical_symbols()) for m in models]
    alone = []
    for model, t in zip(models, types):
        model.evaluate(positions[0], cells[0], t)  # checks the direct path
        alone.append(model.evaluate_batch(positions[1:3], cells[1:3], t))
    shared: dict = {}
    for k, (model, t) in enumerate(zip(models, types)):
        got = model.evaluate_batch(positions[1:3], cells[1:3], t, shared=shared)
        assert len(shared) == (1 if k < 2 else 2)
        for name in ("energy", "forces", "virial"):
            np.testing.assert_array_equal(getattr(got, name), getattr(alone[k], name))
    assert not np.allclose(alone[0].forces, alone[1].forces)  # the models really differ


def test_direct_path_can_be_turned_off(model_paths, monkeypatch):
    from ensemble_driver.models.deepmd import DeepPotModel

    monkeypatch.setenv("ENSEMBLE_DRIVER_PLAIN_EVAL", "1")
    assert DeepPotModel(model_paths[0])._direct is None


def test_torch_huge_pages_on_unless_the_user_chose(model_paths, monkeypatch):
    import os

    from ensemble_driver.models.deepmd import DeepPotModel

    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "placeholder")  # so that teardown restores the original
    monkeypatch.delenv("THP_MEM_ALLOC_ENABLE")
    DeepPotModel(model_paths[0])
    assert os.environ["THP_MEM_ALLOC_ENABLE"] == "1"
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "0")
    DeepPotModel(model_paths[0])
    assert os.environ["THP_MEM_ALLOC_ENABLE"] == "0"


def test_a_direct_path_that_disagrees_is_dropped(model_paths, structures, monkeypatch):
    """A deepmd-kit whose internals changed meaning must cost speed, never correctness."""
    from ensemble_driver.models import deepmd as model_module
    from ensemble_driver.models import direct as direct_module
    from ensemble_driver.models.results import BatchEvaluation

    frames, positions, cells = structures
    model = model_module.DeepPotModel(model_paths[0])
    real_call = direct_module.TorchDirect.__call__

    def off_by_a_little(self, *args):
        result = real_call(self, *args)
        return BatchEvaluation(result.energy + 1e-9, result.forces, result.virial)

    monkeypatch.setattr(direct_module.TorchDirect, "__call__", off_by_a_little)
    types = model.atom_types(frames[0].get_chemical_symbols())
    first = model.evaluate(positions[0], cells[0], types)
    assert model._direct is None
    assert model.evaluate(positions[0], cells[0], types).energy == first.energy


def test_warm_up_checks_the_direct_path_and_stops_when_warm(model_paths, structures):
    from ensemble_driver.models.deepmd import DeepPotModel

    frames, positions, cells = structures
    model = DeepPotModel(model_paths[2])
    types = model.atom_types(frames[0].get_chemical_symbols())
    times = model.warm_up(positions[0], cells[0], types)
    assert model._direct is not None and model._direct.checked
    # TorchScript's profiling calls are slow, so at least two calls; it stops at the
    # first call no faster than the one before, or after four
    assert 2 <= len(times) <= 4
    assert len(times) == 4 or times[-1] > 0.7 * times[-2]
    assert all(later < 0.7 * earlier for earlier, later in zip(times[:-2], times[1:-1]))


def test_a_non_finite_first_result_defers_the_check(model_paths, structures):
    """Two atoms on one site give NaN: nothing to compare, so neither path is chosen
    yet; the next (sound) structure decides."""
    from ensemble_driver.models.deepmd import DeepPotModel

    frames, positions, cells = structures
    model = DeepPotModel(model_paths[0])
    types = model.atom_types(frames[0].get_chemical_symbols())
    broken = positions[0].copy()
    broken[1] = broken[0]
    assert not np.isfinite(model.evaluate(broken, cells[0], types).forces).all()
    assert model._direct is not None and not model._direct.checked
    model.evaluate(positions[0], cells[0], types)
    assert model._direct is not None and model._direct.checked


def test_direct_tensorflow_path_equals_deeppot_eval(structures, monkeypatch):
    """The same for a TensorFlow (.pb) model. TensorFlow is not in the test environment:
    tests/peers/test_tensorflow_models.py runs this test in its own TensorFlow environment with
    ENSEMBLE_DRIVER_TEST_PB=m0.pb; by hand, in .venv-tf (docs/development.md), with
    ENSEMBLE_DRIVER_TEST_PB=path/to/model.pb (a Cu/Au model, e.g. the one
    examples/compare_dp_ipi/compare_dp_ipi.py trains)."""
    import os

    pb = os.environ.get("ENSEMBLE_DRIVER_TEST_PB")
    if not pb:
        pytest.skip(
            "ENSEMBLE_DRIVER_TEST_PB is not set (test_tensorflow_models.py runs this in a TensorFlow environment)"
        )
    pytest.importorskip("deepmd.tf")
    from ensemble_driver.models.deepmd import DeepPotModel
    from ensemble_driver.models.direct import TFDirect as _TFDirect

    frames, positions, cells = structures
    model = DeepPotModel(pb)
    assert isinstance(model._direct, _TFDirect) and not model._direct.checked
    types = model.atom_types(frames[0].get_chemical_symbols())
    model.evaluate(positions[0], cells[0], types)
    assert model._direct is not None and model._direct.checked
    dp = model._dp
    for cell_or_none in (cells, None):  # periodic, then not (deepmd-kit's stand-in box)
        got = model.evaluate_batch(positions, cell_or_none, types)
        boxes = None if cell_or_none is None else cell_or_none.reshape(len(cells), 9)
        e, f, v = dp.eval(positions.reshape(len(positions), -1), boxes, types)[:3]
        np.testing.assert_allclose(got.energy, np.ravel(e), rtol=1e-12)
        np.testing.assert_allclose(got.forces, np.reshape(f, positions.shape), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(got.virial, np.reshape(v, (-1, 3, 3)), rtol=1e-10, atol=1e-11)
        assert not np.allclose(got.forces[0], got.forces[1])
    monkeypatch.setenv("ENSEMBLE_DRIVER_PLAIN_EVAL", "1")
    assert DeepPotModel(pb)._direct is None


@pytest.mark.parametrize("kind", ["fparam", "aparam", "aparam per atom"])
def test_direct_path_with_parameters_equals_deeppot_eval(reference, structures, kind):
    """Models trained with numb_fparam/numb_aparam (examples/models/make_param_models.py):
    the driver's calls, direct path included, give DeepPot.eval's numbers with the same
    parameters, for one structure and for a batch, and a per-call aparam replaces the
    model's own (devi's per-frame values)."""
    from support.paths import MODELS

    from ensemble_driver.models.deepmd import DeepPotModel, Parameters

    frames, positions, cells = structures
    nat = positions.shape[1]
    per_atom = np.random.default_rng(2).uniform(size=(nat, 1))
    path, params, kw = {
        "fparam": (MODELS / "fparam1.pth", Parameters(fparam=np.array([0.45])), {"fparam": [0.45]}),
        "aparam": (MODELS / "aparam1.pth", Parameters(aparam=np.array([0.2])), {"aparam": [0.2]}),
        "aparam per atom": (MODELS / "aparam1.pth", Parameters(aparam=per_atom), {"aparam": per_atom.ravel()}),
    }[kind]
    model = DeepPotModel(path, parameters=params)
    types = model.atom_types(frames[0].get_chemical_symbols())
    model.evaluate(positions[0], cells[0], types)
    assert model._direct is not None and model._direct.checked  # the direct path is used
    dp = reference.deeppot(path)
    got = model.evaluate_batch(positions, cells, types)
    e, f, v = dp.eval(positions.reshape(len(positions), -1), cells.reshape(len(cells), 9), types, **kw)[:3]
    np.testing.assert_allclose(got.energy, np.ravel(e), rtol=1e-12)
    np.testing.assert_allclose(got.forces, np.reshape(f, positions.shape), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(got.virial, np.reshape(v, (-1, 3, 3)), rtol=1e-10, atol=1e-11)
    if kind != "fparam":
        frame_values = np.random.default_rng(3).uniform(size=(len(positions), nat, 1))
        got = model.evaluate_batch(positions, cells, types, aparam=frame_values)
        e, f, _ = dp.eval(
            positions.reshape(len(positions), -1), cells.reshape(len(cells), 9), types, aparam=frame_values
        )[:3]
        np.testing.assert_allclose(got.forces, np.reshape(f, positions.shape), rtol=1e-10, atol=1e-12)


def test_parameters_in_a_config_file(tmp_path):
    import json

    from ensemble_driver.errors import ConfigError
    from ensemble_driver.run.settings import build_config, load_config_file

    (tmp_path / "c.json").write_text(
        json.dumps({"models": "a.pth", "template": "t.xyz", "fparam": 0.5, "aparam": [1, 2]})
    )
    config = build_config(load_config_file(tmp_path / "c.json"), {})
    assert config.parameters.fparam == (0.5,) and config.parameters.aparam == (1.0, 2.0)
    (tmp_path / "bad.json").write_text(json.dumps({"fparam": ["x"]}))
    with pytest.raises(ConfigError, match="'fparam' must be a number or a non-empty list of numbers"):
        load_config_file(tmp_path / "bad.json")
