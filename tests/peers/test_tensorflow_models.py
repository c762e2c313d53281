"""TensorFlow (``.pb``) versions of the shipped models m0, m1 and m2 drive i-PI and write the
rows of the ``.pth`` ensemble.

TensorFlow is kept out of the test environment (its deepmd-kit is built for PyTorch
alone), so the ``.pb`` side runs in a virtual environment of its own with
``deepmd-kit[cpu]`` from PyPI (TensorFlow, no torch), made once per machine
(tests/support/venvs.py), the driver taken from this checkout (``PYTHONPATH``, ``python -m
ensemble_driver``) and launched with that environment's own ``mpiexec``. The ``.pth``
side, the reference, is ``DeepPot.eval`` here.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from support.harness import check_run_against_model, driver_command, run_ipi
from support.paths import ROOT, tool
from support.venvs import CACHE, venv_with

TF_VENV = CACHE / "venv-tf"
# deepmd-kit[cpu] brings tensorflow-cpu; the rest is what the driver imports at run time
# (pyproject.toml), and pytest for test_model.py's TensorFlow test
TF_PACKAGES = ("deepmd-kit[cpu]==3.2.0", "ipi==3.3.1", "ase", "mpi4py", "mpich", "pytest", "pytest-timeout")
NBEADS, STEPS = 2, 4


@pytest.fixture(scope="session")
def tf_python() -> str:
    """The TensorFlow environment's Python (made on first use: ~1-3 min, ~2 GB)."""
    return venv_with(TF_VENV, TF_PACKAGES)


def tf_environment(tf_python: str) -> dict[str, str]:
    """The environment of a process in the TensorFlow venv: its commands first, and the
    driver from this checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    env["PATH"] = f"{Path(tf_python).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT / "driver")
    return env


@pytest.fixture(scope="session")
def pb_models(tmp_path_factory, model_paths, tf_python) -> list[Path]:
    """m0, m1 and m2 converted to ``.pb`` as `dp convert-backend` does, through the
    backend-neutral ``.dp`` (written here, with the PyTorch backend; read there, with
    TensorFlow), ~10 s.

    With one change: deepmd-kit 3.2.0's TensorFlow model multiplies each atom's energy by
    the fitting's ``out_std`` before adding ``out_bias`` (``deepmd/tf/model/model.py``,
    ``apply_out_stat``), where the PyTorch and NumPy models add the bias alone
    (``deepmd/dpmodel/atomic_model/base_atomic_model.py``); the shipped models' out_std
    is 1.115, so a plain conversion gives forces 11.5 % too large. Its out_std set to 1
    in the ``.dp``, the ``.pb`` gives the ``.pth``'s forces to ~1e-14."""
    from deepmd.backend.backend import Backend
    from deepmd.dpmodel.utils.serialization import save_dp_model

    out = tmp_path_factory.mktemp("pb")
    pytorch = Backend.get_backend("pytorch")()
    dps, pbs = [], []
    for path in model_paths[:3]:
        data = pytorch.serialize_hook(str(path))
        variables = data["model"]["@variables"]
        variables["out_std"] = np.ones_like(variables["out_std"])
        dps.append(out / f"{path.stem}.dp")
        pbs.append(out / f"{path.stem}.pb")
        save_dp_model(str(dps[-1]), data)
    script = (
        "import sys\n"
        "from deepmd.entrypoints.convert_backend import convert_backend\n"
        "for dp, pb in zip(sys.argv[1::2], sys.argv[2::2]):\n"
        "    convert_backend(INPUT=dp, OUTPUT=pb)\n"
    )
    pairs = [str(p) for pair in zip(dps, pbs) for p in pair]
    proc = subprocess.run(
        [tf_python, "-c", script, *pairs],
        cwd=out,
        env=tf_environment(tf_python),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0 and all(p.is_file() for p in pbs), proc.stdout[-2000:] + proc.stderr[-3000:]
    return pbs


def expected_rows(run, bead: int, model_paths, reference) -> np.ndarray:
    """The bead's rows made from the ``.pth`` models' DeepPot.eval on the positions i-PI
    wrote, with deepmd-kit's calc_model_devi_v (virials per atom) and calc_model_devi_f."""
    from deepmd.infer.model_devi import calc_model_devi_f, calc_model_devi_v

    rows = []
    for step, frame in enumerate(run.trajectory("pos", bead)):
        results = [reference.eval(m, frame) for m in model_paths[:3]]
        forces = np.array([f for _, f, _ in results])
        virials = np.array([v.reshape(1, 9) for _, _, v in results]) / len(frame)
        deviations = (*calc_model_devi_v(virials), *calc_model_devi_f(forces[:, None]))
        rows.append([step, *(float(x[0]) for x in deviations)])
    return np.array(rows)


@pytest.mark.timeout(1800)  # the first run on a machine makes the TensorFlow environment
def test_pb_ensemble_writes_the_rows_of_the_pth_ensemble(
    tmp_path, address, model_paths, pb_models, tf_python, reference
):
    """Three ``.pb`` models under ``mpiexec -n 3`` in the TensorFlow environment, a 2-bead
    i-PI run: i-PI receives m0.pth's energies, forces and virials (1e-6), every row equals
    the row of the three ``.pth`` models on the positions i-PI wrote (1e-5), and ``devi``
    there with the ``.pb`` models gives the rows of ``devi`` here with the ``.pth`` ones."""
    env = tf_environment(tf_python)
    program = [tf_python, "-m", "ensemble_driver"]
    run_args = ("--nbeads", str(NBEADS), "--out-freq", "1")
    command = [
        str(Path(tf_python).parent / "mpiexec"),
        "-n",
        "3",
        *driver_command(pb_models, tmp_path / "init.xyz", address, *run_args, program=program),
    ]
    run = run_ipi(tmp_path, "pimd.xml", address=address, steps=STEPS, nbeads=NBEADS, drivers=[command], driver_env=env)
    assert "the server sent EXIT" in run.driver_logs[0]
    check_run_against_model(run, model_paths[0], reference)
    live = {}
    for bead in range(NBEADS):
        live[bead] = np.loadtxt(tmp_path / f"model_devi{bead + 1}.out", ndmin=2)
        expected = expected_rows(run, bead, model_paths, reference)
        assert live[bead].shape == expected.shape == (STEPS + 1, 7)
        np.testing.assert_array_equal(live[bead][:, 0], expected[:, 0])
        np.testing.assert_allclose(live[bead][:, 1:], expected[:, 1:], rtol=1e-5)

    trajectories = [str(p) for p in sorted(tmp_path.glob(f"{run.prefix}.pos_*.extxyz"))]
    assert len(trajectories) == NBEADS
    for name, command, models, environment in (
        ("pb", program, pb_models, env),
        ("pth", [tool("ensemble-driver")], model_paths[:3], None),
    ):
        (tmp_path / name).mkdir()
        argv = [*command, "devi", *trajectories, "--models", *map(str, models)]
        argv += ["--out-file", str(tmp_path / name / "model_devi.out")]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=environment)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    for bead in range(NBEADS):
        pb = np.loadtxt(tmp_path / "pb" / f"model_devi{bead + 1}.out", ndmin=2)
        pth = np.loadtxt(tmp_path / "pth" / f"model_devi{bead + 1}.out", ndmin=2)
        assert pb.shape == pth.shape == (STEPS + 1, 7)
        np.testing.assert_allclose(pb, pth, rtol=1e-5)
        np.testing.assert_allclose(pb, live[bead], rtol=1e-5)


@pytest.mark.timeout(1800)
def test_direct_tensorflow_path_in_the_tensorflow_environment(pb_models, tf_python):
    """test_model.py's TensorFlow test (skipped in the test environment), run there on
    m0.pb: the driver's direct TensorFlow call gives DeepPot.eval's numbers."""
    test = "tests/peers/test_model.py::test_direct_tensorflow_path_equals_deeppot_eval"
    proc = subprocess.run(
        [tf_python, "-m", "pytest", "-p", "no:cacheprovider", "-q", test],
        cwd=ROOT,
        env={**tf_environment(tf_python), "ENSEMBLE_DRIVER_TEST_PB": str(pb_models[0])},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-2000:]
