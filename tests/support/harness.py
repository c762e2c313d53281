"""Run a real i-PI with real ensemble-driver processes and read back what i-PI wrote."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from ensemble_driver.demo.inputs import SocketSettings, prepare_input
from ensemble_driver.demo.launch import ProcessGroup
from support.paths import IPI_INPUTS, tool
from support.waiting import poll_until

# What the tests need from i-PI, at full precision: per-bead positions and forces in
# extxyz ('ase' units: Angstrom, eV/Angstrom, with ASE's constants) and, as properties,
# the per-bead potentials and the virial, every step.
CHECK_OUTPUTS = (
    "<properties stride='1' filename='out'> [ step, bead_potentials{ase}, virial_md{ase} ] </properties>",
    "<trajectory filename='pos' stride='1' format='ase'> positions{ase} </trajectory>",
    "<trajectory filename='for' stride='1' format='ase'> forces{ase} </trajectory>",
)
#: check_run_against_model's bound on each array's relative error (max |difference| / max
#: |reference|; the codes' unit constants differ by ~1e-7)
TOL = 1e-6
#: the steps of a run check_run_against_model checks unless told (tests/peers/test_ipi.py's runs)
STEPS = 4


@dataclass
class IpiRun:
    workdir: Path
    prefix: str
    nbeads: int
    driver_logs: list[str]

    def trajectory(self, what: str, bead: int) -> list:
        import ase.io

        return ase.io.read(self.workdir / f"{self.prefix}.{what}_{bead}.extxyz", index=":")

    def properties(self) -> np.ndarray:
        return np.atleast_2d(np.loadtxt(self.workdir / f"{self.prefix}.out"))

    def evaluations_per_rid(self, driver: int = 0) -> dict[int, int]:
        """The driver's own count, from its last log line."""
        match = re.search(r"evaluations per request id: (\{[^}]*\})", self.driver_logs[driver])
        assert match, self.driver_logs[driver][-2000:]
        return {int(k): int(v) for k, v in re.findall(r"(\d+): (\d+)", match.group(1))}


def driver_command(
    models: Sequence[Path], template: Path, address: str, *extra: str, program: Sequence[str] | None = None
) -> list[str]:
    """``ensemble-driver run`` on ``models``; ``program``: the command that stands for
    ``ensemble-driver`` (another environment's ``python -m ensemble_driver``)."""
    return [
        *(program or [tool("ensemble-driver")]),
        "run",
        "--models",
        *map(str, models),
        "--template",
        str(template),
        "--unix",
        "--address",
        address,
        "--connect-timeout",
        "120",
        *extra,
    ]


def run_ipi(
    workdir: Path,
    xml: str,
    *,
    address: str,
    steps: int,
    drivers: Sequence[Sequence[str]] | None = None,
    models: Sequence[Path] = (),
    driver_args: Sequence[str] = (),
    nbeads: int | None = None,
    consolidate: bool | None = None,
    batch_size: int | None = None,
    matching: str | None = None,
    parameters: str | None = None,
    outputs: Sequence[str] | None = CHECK_OUTPUTS,
    extra_outputs: Sequence[str] = (),
    timeout: float = 300,
    driver_env: Mapping[str, str] | None = None,
) -> IpiRun:
    """Run the shipped input ``ipi_inputs/<xml>`` with its socket renamed, for ``steps``
    steps, writing ``outputs`` (None: the file's own) and ``extra_outputs``; with one driver on ``models`` unless ``drivers`` gives the
    commands, run with the environment ``driver_env`` (None: this one). Every process is
    watched: if one fails or the deadline passes, all stop and the test fails with their
    last log lines."""
    prefix = "sim"
    prepare_input(
        IPI_INPUTS / xml,
        workdir / "input.xml",
        socket=SocketSettings(
            address=address,
            consolidate_messages=consolidate,
            batch_size=batch_size,
            matching=matching,
            parameters=parameters,
        ),
        steps=steps,
        nbeads=nbeads,
        prefix=prefix,
        outputs=outputs,
        extra_outputs=extra_outputs,
        floatformat="%.16e",
    )
    template = workdir / "init.xyz"
    if drivers is None:
        drivers = [driver_command(models, template, address, *driver_args)]
    with ProcessGroup(workdir / "logs") as group:
        group.start("i-pi", [tool("i-pi"), "input.xml"], cwd=workdir)
        members = [group.start(f"driver{k}", cmd, cwd=workdir, env=driver_env) for k, cmd in enumerate(drivers)]
        group.wait(timeout)
    logs = [m.log_path.read_text() for m in members]
    beads = int(ET.parse(workdir / "input.xml").getroot().find("system/initialize").get("nbeads"))
    return IpiRun(workdir, prefix, beads, logs)


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """max |actual - expected| / max |expected|: one number per array, robust to zeros."""
    actual, expected = np.asarray(actual, float), np.asarray(expected, float)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = np.abs(expected).max()
    return float(np.abs(actual - expected).max() / scale) if scale else float(np.abs(actual).max())


def check_run_against_model(run, model, reference, steps: int = STEPS) -> None:
    """Every value i-PI received equals the model's own, for every bead and step."""
    props = run.properties()
    nbeads = run.nbeads
    assert props.shape == (steps + 1, 1 + nbeads + 6), props.shape
    np.testing.assert_array_equal(props[:, 0], np.arange(steps + 1))
    virial_sum = np.zeros((steps + 1, 3, 3))
    volumes = np.zeros(steps + 1)
    for bead in range(nbeads):
        positions = run.trajectory("pos", bead)
        forces = run.trajectory("for", bead)
        assert len(positions) == len(forces) == steps + 1
        for k, (frame, fframe) in enumerate(zip(positions, forces)):
            energy, f_ref, v_ref = reference.eval(model, frame)
            assert relative_error(props[k, 1 + bead], energy) <= TOL, (bead, k)
            assert relative_error(fframe.get_forces(), f_ref) <= TOL, (bead, k)
            # i-PI stores the transpose of DeePMD's virial (indexed like its column cell)
            virial_sum[k] += v_ref.T
            volumes[k] = frame.get_volume()
    # virial_md = sum over beads of the upper triangle / V, as [xx, yy, zz, xy, xz, yz]
    expected = np.array([[v[0, 0], v[1, 1], v[2, 2], v[0, 1], v[0, 2], v[1, 2]] for v in virial_sum]) / volumes[:, None]
    assert relative_error(props[:, 1 + nbeads :], expected) <= TOL


def deepmd_deviation(reference, model_paths, labels, positions, cell) -> tuple[float, ...]:
    """(max_devi_v, min_devi_v, avg_devi_v, max_devi_f, min_devi_f, avg_devi_f) of one
    structure (Angstrom, lattice vectors as rows) by deepmd-kit's own calc_model_devi_v
    and calc_model_devi_f on DeepPot.eval of every model (the virial per atom, as the
    rows)."""
    from deepmd.infer.model_devi import calc_model_devi_f, calc_model_devi_v

    forces, virials = [], []
    for path in model_paths:
        dp = reference.deeppot(path)
        atype = [dp.get_type_map().index(s) for s in labels]
        _, f, v = dp.eval(positions.reshape(1, -1), cell.reshape(1, 9), atype)[:3]
        forces.append(np.asarray(f).reshape(-1, 3))
        virials.append(np.asarray(v).reshape(9))
    fmax, fmin, favg = (x[0] for x in calc_model_devi_f(np.array(forces)[:, None]))
    vmax, vmin, vavg = (x[0] for x in calc_model_devi_v(np.array(virials)[:, None] / len(labels)))
    return vmax, vmin, vavg, fmax, fmin, favg


def wait_until(condition, timeout: float, what: str, interval: float = 0.02) -> None:
    """Wait for ``condition`` with a deadline: a test fails, naming ``what``, past it."""
    if not poll_until(condition, timeout, interval):
        pytest.fail(f"timed out after {timeout} s waiting for {what}")
