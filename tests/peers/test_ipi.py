"""The driver under a real i-PI 3.3: the shipped NVT, PIMD (4 beads) and NPT inputs, with
i-PI's default consolidated messages and with consolidate_messages=false.

i-PI writes every bead's positions and forces and the per-bead potentials and virial
every step; each is recomputed here with DeepPot.eval on the positions i-PI wrote, and
must agree to a relative 1e-6 (relative: max |difference| / max |reference| per array;
the codes' unit constants differ by ~1e-7).
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from support.harness import STEPS, check_run_against_model, driver_command, run_ipi
from support.paths import IPI_INPUTS, tool

from ensemble_driver.demo.launch import GroupFailed


@pytest.mark.parametrize("consolidate", [True, False], ids=["consolidated", "legacy"])
@pytest.mark.parametrize("xml, nbeads", [("nvt.xml", 1), ("pimd.xml", 4), ("npt.xml", 1)])
def test_shipped_inputs_agree_with_model(tmp_path, address, model_paths, reference, xml, nbeads, consolidate):
    # one model: no INIT after every evaluation by default; with beads, ask for it, to count per bead
    run = run_ipi(
        tmp_path,
        xml,
        address=address,
        steps=STEPS,
        models=model_paths[:1],
        consolidate=consolidate,
        driver_args=("--init-each",) if nbeads > 1 else (),
    )
    assert run.nbeads == nbeads
    check_run_against_model(run, model_paths[0], reference)
    # every bead was asked for exactly once per step, initial structure included
    assert run.evaluations_per_rid() == {bead: STEPS + 1 for bead in range(nbeads)}
    assert "the server sent EXIT" in run.driver_logs[0]


def test_npt_cell_changes(tmp_path, address, model_paths, reference):
    """The barostat moves the cell (so the virial the driver returns is used)."""
    run = run_ipi(tmp_path, "npt.xml", address=address, steps=10, models=model_paths[:1])
    volumes = [frame.get_volume() for frame in run.trajectory("pos", 0)]
    assert np.ptp(volumes) > 1e-6 * volumes[0]
    check_run_against_model(run, model_paths[0], reference, steps=10)


def test_compressed_model(tmp_path, address, compressed_model, reference):
    """A model compressed with `dp --pt compress` (custom ops) runs through the driver."""
    run = run_ipi(tmp_path, "pimd.xml", address=address, steps=STEPS, nbeads=2, models=[compressed_model])
    check_run_against_model(run, compressed_model, reference)


def test_backend_neutral_models_drive_the_dynamics_and_write_the_same_rows(
    tmp_path, address, dp_format_model, yaml_format_model, model_paths, reference, symbols
):
    """deepmd-kit's backend-neutral format (`dp convert-backend m.pth m.dp`, or `.yaml`) is
    evaluated by deepmd.dpmodel in NumPy without derivatives (NaN forces and virial from
    DeepPot.eval), so the driver has deepmd-kit convert it to PyTorch as it loads: an
    ensemble of m0.dp, m1.yaml and m2.pth gives i-PI m0's own answers (1e-6) and writes the
    rows of m0, m1 and m2 as .pth (1e-5), and so does devi on i-PI's trajectories."""
    from deepmd.infer.model_devi import calc_model_devi_f

    from ensemble_driver.wire.template import read_template

    template = read_template(IPI_INPUTS / "init.xyz")
    dp = reference.deeppot(dp_format_model)
    types = [dp.get_type_map().index(s) for s in template.labels]
    f = dp.eval(template.positions.reshape(1, -1), template.cell.reshape(1, 9), types)[1]
    assert np.isnan(f).all()  # what DeepPot itself makes of the file
    mixed = [dp_format_model, yaml_format_model, model_paths[2]]
    run = run_ipi(
        tmp_path,
        "pimd.xml",
        address=address,
        steps=STEPS,
        nbeads=2,
        models=mixed,
        driver_args=("--nbeads", "2", "--out-freq", "1"),
    )
    check_run_against_model(run, model_paths[0], reference)
    for bead in range(2):
        rows = np.loadtxt(tmp_path / f"model_devi{bead + 1}.out", ndmin=2)
        for row, frame in zip(rows, run.trajectory("pos", bead)):
            forces = np.array([reference.eval(m, frame)[1] for m in model_paths[:3]])
            np.testing.assert_allclose(row[4:7], np.ravel(calc_model_devi_f(forces[:, None])), rtol=1e-5)
    trajectories = [str(p) for p in sorted(tmp_path.glob(f"{run.prefix}.pos_*.extxyz"))]
    for name, models in (("mixed", mixed), ("pth", model_paths[:3])):
        (tmp_path / name).mkdir()
        command = [tool("ensemble-driver"), "devi", *trajectories, "--models", *map(str, models)]
        command += ["--out-file", str(tmp_path / name / "model_devi.out")]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
    for bead in (1, 2):
        np.testing.assert_allclose(
            np.loadtxt(tmp_path / "mixed" / f"model_devi{bead}.out"),
            np.loadtxt(tmp_path / "pth" / f"model_devi{bead}.out"),
            rtol=1e-5,
        )


def test_atom_count_mismatch_is_one_clear_line(tmp_path, address, model_paths):
    lines = (IPI_INPUTS / "init.xyz").read_text().splitlines()
    short = tmp_path / "short.xyz"
    short.write_text("\n".join(["31", lines[1], *lines[2:-1]]) + "\n")
    command = driver_command(model_paths[:1], short, address)
    with pytest.raises(GroupFailed) as failed:
        run_ipi(tmp_path, "nvt.xml", address=address, steps=STEPS, drivers=[command], timeout=120)
    assert failed.value.returncodes["driver0"] == 4
    log = (tmp_path / "logs" / "driver0.log").read_text()
    errors = [line for line in log.splitlines() if "error:" in line]
    assert errors == [
        "ensemble-driver: error: the server sent 32 atoms in POSDATA but the template has 31; "
        "check --template (and that the server uses neither an <activelist> nor the 'shm' or "
        "batched transports)"
    ]
    assert "Traceback" not in log


def test_unknown_element_fails_before_connecting(tmp_path, address, model_paths):
    text = (IPI_INPUTS / "init.xyz").read_text().replace(" Au ", " Ni ", 1)
    bad = tmp_path / "ni.xyz"
    bad.write_text(text)
    proc = subprocess.run(driver_command(model_paths[:1], bad, address), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 5
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("ensemble-driver: error: model ")
    assert "does not know element(s) Ni of template" in errors[0]
    assert "its type map is Cu, Au" in errors[0]
    assert "Traceback" not in proc.stderr


def test_batched_transport_with_extras_is_refused_clearly(tmp_path, address, model_paths):
    """--extras needs each structure's bead at once, which i-PI's batches do not say."""
    from ensemble_driver.demo.inputs import SocketSettings, prepare_input
    from ensemble_driver.demo.launch import ProcessGroup

    prepare_input(
        IPI_INPUTS / "pimd.xml",
        tmp_path / "input.xml",
        socket=SocketSettings(address=address, consolidate_messages=True, batch_size=2),
        steps=2,
    )
    command = driver_command(model_paths[:2], tmp_path / "init.xyz", address, "--nbeads", "4", "--extras")
    with ProcessGroup(tmp_path / "logs") as group:
        group.start("i-pi", [tool("i-pi"), "input.xml"], cwd=tmp_path)
        driver = group.start("driver", command, cwd=tmp_path)
        with pytest.raises(GroupFailed):
            group.wait(120)
    assert driver.popen.returncode == 4
    assert "--extras cannot be used with i-PI's batched transport" in driver.log_path.read_text()


def test_dp_ipi_config_file(tmp_path, address, model_paths, reference):
    """A dp_ipi JSON file, as deepmd-kit documents it, drives ensemble-driver unchanged.
    Model 2 lists its types as [Au, Cu]: atom_type's indices refer to that order."""
    import json

    (tmp_path / "dp_ipi.json").write_text(
        json.dumps(
            {
                "verbose": False,
                "use_unix": True,
                "port": 31415,
                "host": address,
                "graph_file": str(model_paths[2]),
                "coord_file": "init.xyz",
                "atom_type": {"Au": 0, "Cu": 1},
            }
        )
    )
    command = [tool("ensemble-driver"), "run", "--config", "dp_ipi.json"]
    run = run_ipi(tmp_path, "nvt.xml", address=address, steps=STEPS, drivers=[command])
    check_run_against_model(run, model_paths[2], reference)
