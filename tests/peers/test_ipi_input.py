"""``--ipi-input``: the driver reads i-PI's own input and files every row under the
(system, bead) and the i-PI step it belongs to, for the inputs users write: ring-polymer
contraction (with and without i-PI's batches), our forcefield second after an
``<ffdirect>`` force, multiple time stepping with our force inside, two systems. Each run
is real i-PI 3.3 with the driver under mpiexec, and every row is recomputed with
deepmd-kit's ``calc_model_devi`` on the positions i-PI wrote for that bead (contracted
beads: through i-PI's own contraction, ``nm_rescale``), at the printed precision."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time

import ase.io
import numpy as np
import pytest
from support.ipi_inputs import OUT_FREQ, STEPS, bead_frames, expected_rows, ipi_input, run, system, written_rows
from support.mpi import mpiexec
from support.paths import IPI_INPUTS, tool

from ensemble_driver.demo.launch import ProcessGroup


def contracted(frames: list[list[tuple]], nbeads: int) -> list[list[tuple]]:
    """The beads a component with ``nbeads`` beads sees: i-PI's own contraction."""
    from ipi.utils.nmtransform import nm_rescale

    rescale = nm_rescale(len(frames), nbeads)
    out = [[] for _ in range(nbeads)]
    for k in range(len(frames[0])):
        q = rescale.b1tob2(np.array([frames[b][k][2] for b in range(len(frames))]))
        for b in range(nbeads):
            out[b].append((frames[0][k][0], frames[0][k][1], q[b]))
    return out


def check_rows(directory, beads: list[list[tuple]], model_paths, reference, symbols) -> None:
    assert sorted(p.name for p in directory.glob("model_devi*.out")) == [
        f"model_devi{b + 1}.out" for b in range(len(beads))
    ]
    for b, frames in enumerate(beads):
        want = expected_rows(frames, model_paths, reference, symbols)
        assert written_rows(directory / f"model_devi{b + 1}.out") == want, f"bead {b}"


@pytest.mark.timeout(600)
@pytest.mark.parametrize("batch", [1, 8])
def test_contracted_forcefield(tmp_path, address, model_paths, reference, symbols, batch):
    """8 beads, our force contracted to 2 (with i-PI's batches of 8: 2 real, 6 padding):
    two files, each bead's rows on its contracted positions."""
    xml = ipi_input(address, system(8, "<force forcefield='dp' nbeads='2'/>"), batch=batch)
    run(tmp_path, xml, model_paths[:3], nranks=3)
    check_rows(tmp_path, contracted(bead_frames(tmp_path, 8), 2), model_paths[:3], reference, symbols)


@pytest.mark.timeout(600)
def test_second_force_after_ffdirect(tmp_path, address, model_paths, reference, symbols):
    """Our force after a restraint-like <ffdirect> force: its request ids start at P."""
    bias = "\n  <ffdirect name='bias'><pes> harmonic </pes><parameters>{k1: 1e-4}</parameters></ffdirect>"
    xml = ipi_input(address, system(2, "<force forcefield='bias'/><force forcefield='dp'/>"), extra_ff=bias)
    logs = run(tmp_path, xml, model_paths[:2])
    check_rows(tmp_path, bead_frames(tmp_path, 2), model_paths[:2], reference, symbols)
    assert "evaluations per request id: {2: 7, 3: 7" in logs[0]  # i-PI's ids for our force: 2 and 3


@pytest.mark.timeout(600)
def test_mts_inner_force(tmp_path, address, model_paths, reference, symbols):
    """MTS with our force on the inner level (3 evaluations per step): rows at i-PI's steps,
    on the positions i-PI wrote at the end of each step."""
    bias = "\n  <ffdirect name='bias'><pes> harmonic </pes><parameters>{k1: 1e-4}</parameters></ffdirect>"
    forces = (
        "<force forcefield='bias'><mts_weights>[1, 0]</mts_weights></force>"
        "<force forcefield='dp'><mts_weights>[0, 1]</mts_weights></force>"
    )
    xml = ipi_input(address, system(2, forces, nmts="\n        <nmts> [1, 3] </nmts>"), extra_ff=bias)
    logs = run(tmp_path, xml, model_paths[:2])
    check_rows(tmp_path, bead_frames(tmp_path, 2), model_paths[:2], reference, symbols)
    assert f"evaluations per request id: {{2: {3 * STEPS + 1}, 3: {3 * STEPS + 1}" in logs[0]


@pytest.mark.timeout(600)
@pytest.mark.parametrize("smotion", ["", "remd"])
def test_two_systems(tmp_path, address, model_paths, reference, symbols, smotion):
    """Two systems on one forcefield, also as replica exchange (i-PI swaps them every
    other step): each in a directory named by its prefix, on that system's positions."""
    systems = system(2, "<force forcefield='dp'/>", prefix="A") + system(
        2, "<force forcefield='dp'/>", prefix="B", temperature=900
    )
    remd = "\n  <smotion mode='remd'><remd><stride> 2 </stride></remd></smotion>" if smotion else ""
    run(tmp_path, ipi_input(address, systems, smotion=remd), model_paths[:2])
    for prefix in ("A", "B"):
        check_rows(tmp_path / prefix, bead_frames(tmp_path, 2, prefix), model_paths[:2], reference, symbols)
    assert not list(tmp_path.glob("model_devi*.out"))


@pytest.mark.timeout(120)
def test_contradictions_are_refused_before_connecting(tmp_path, address, model_paths):
    """--nbeads against the contracted beads, a template in another order, two socket
    forcefields without --forcefield: one line each, status 2, nothing written."""
    shutil.copy(IPI_INPUTS / "init.xyz", tmp_path / "init.xyz")
    xml = ipi_input(address, system(8, "<force forcefield='dp' nbeads='2'/>"))
    (tmp_path / "input.xml").write_text(xml)
    lines = (tmp_path / "init.xyz").read_text().splitlines()
    (tmp_path / "reversed.xyz").write_text("\n".join(lines[:2] + lines[2:][::-1]) + "\n")
    other = "\n  <ffsocket name='other' mode='unix'><address> elsewhere </address></ffsocket>"
    (tmp_path / "two.xml").write_text(ipi_input(address, system(2, "<force forcefield='dp'/>"), extra_ff=other))
    base = [tool("ensemble-driver"), "run", "--models", *map(str, model_paths[:2]), "--connect-timeout", "1"]
    cases = {
        ("--ipi-input", "input.xml", "--nbeads", "8"): "--nbeads 8, but in --ipi-input input.xml forcefield 'dp' "
        "sees 2 bead(s)",
        ("--ipi-input", "input.xml", "--template", "reversed.xyz"): "the same atoms in another order",
        ("--ipi-input", "two.xml"): "name the one this driver serves with --forcefield NAME",
        ("--ipi-input", "two.xml", "--forcefield", "nope"): "no socket forcefield named 'nope'",
    }
    for args, message in cases.items():
        proc = subprocess.run(base + list(args), cwd=tmp_path, capture_output=True, text=True, timeout=100)
        assert proc.returncode == 2, (args, proc.stderr[-2000:])
        errors = [line for line in proc.stderr.splitlines() if line.startswith("ensemble-driver: error:")]
        assert len(errors) == 1 and message in errors[0], (args, proc.stderr[-2000:])
    assert not list(tmp_path.glob("model_devi*"))


def restart_input(address: str, steps: int) -> str:
    """2 beads, a checkpoint kept every 4 steps (safe_stride): SIGTERM rolls back to it."""
    xml = ipi_input(address, system(2, "<force forcefield='dp'/>"))
    xml = xml.replace("safe_stride='2'", "safe_stride='4'").replace("<checkpoint stride='2'/>", "")
    xml = xml.replace(f"<total_steps> {STEPS} </total_steps>", f"<total_steps> {steps} </total_steps>")
    return xml.replace(
        "<output prefix='sim'>", "<output prefix='sim'>\n    <properties stride='1' flush='1'> [ step ] </properties>"
    )


def last_step(path) -> int:
    rows = [line.split() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return int(float(rows[-1][0])) if rows else -1


@pytest.mark.timeout(900)
def test_resume_after_sigterm_writes_every_step_once(tmp_path, address, model_paths):
    """i-PI stopped by SIGTERM mid-run (its RESTART rolled back to the last safe
    checkpoint), then restarted from the RESTART with the driver on --ipi-input RESTART
    --resume: every output file (rows, dumps, candidates, summary) equals, byte for byte,
    the one of the same run done without interruption."""
    # the uninterrupted run's length: the SIGTERM sent on seeing step 9 has reached i-PI as
    # late as step 49 on a busy machine, and the RESTART must come before the end
    steps = 120
    options = ["--bead-files", "dpgen2", "--traj-files", "dpgen2", "--trust-lo", "0", "--trust-hi", "10"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    whole.mkdir(), cut.mkdir()
    xml = restart_input(address, steps)
    run(whole, xml, model_paths[:2], *options)
    shutil.copy(IPI_INPUTS / "init.xyz", cut / "init.xyz")
    # the first job is given far more steps than it can make before the SIGTERM, and its
    # RESTART then the uninterrupted run's length
    endless = xml.replace(f"<total_steps> {steps} </total_steps>", "<total_steps> 100000 </total_steps>")
    assert endless != xml
    (cut / "input.xml").write_text(endless)
    driver = [tool("ensemble-driver"), "run", "--models", *map(str, model_paths[:2])]
    driver += ["--out-freq", str(OUT_FREQ), "--connect-timeout", "120", *options]
    with ProcessGroup(cut / "logs") as group:
        ipi = group.start("i-pi", [tool("i-pi"), "input.xml"], cwd=cut, ok_status=frozenset({0, 1, -15, 143}))
        group.start("driver", mpiexec(2, driver + ["--ipi-input", "input.xml"]), cwd=cut)
        deadline = time.monotonic() + 300
        while not ((cut / "sim.out").exists() and last_step(cut / "sim.out") >= 9):
            assert time.monotonic() < deadline and ipi.popen.poll() is None, group._report("no step 9")
            time.sleep(0.05)
        ipi.popen.send_signal(signal.SIGTERM)
        group.wait(300)
    restart = (cut / "RESTART").read_text()
    resumed_at = int(restart.split("<step>")[1].split("</step>")[0])
    restart, n = re.subn(r"<total_steps>\s*100000\s*</total_steps>", f"<total_steps>{steps}</total_steps>", restart)
    assert n == 1, restart[:2000]
    (cut / "RESTART").write_text(restart)
    assert 4 <= resumed_at <= last_step(cut / "model_devi.1.out") < steps, resumed_at  # rows to cut exist
    with ProcessGroup(cut / "logs2") as group:
        group.start("i-pi", [tool("i-pi"), "RESTART"], cwd=cut)
        group.start("driver", mpiexec(2, driver + ["--ipi-input", "RESTART", "--resume"]), cwd=cut)
        group.wait(300)
    # i-PI's RESTART keeps 9 digits of the positions, so the steps from K on are the
    # uninterrupted run's to that precision, grown by the dynamics over the steps after K
    # (relative 1e-4; absolute 1e-8 for values near zero, such as a min_devi_v of 7e-7,
    # against deviations of ~1e-2); those before K are the first job's, unchanged
    for bead in (1, 2):
        mine, theirs = written_rows(cut / f"model_devi.{bead}.out"), written_rows(whole / f"model_devi.{bead}.out")
        assert [int(r.split()[0]) for r in mine] == list(range(0, steps + 1, OUT_FREQ))  # every step once
        before = [r for r in theirs if int(r.split()[0]) < resumed_at]
        assert mine[: len(before)] == before
        np.testing.assert_allclose(
            np.array([r.split() for r in mine], float),
            np.array([r.split() for r in theirs], float),
            rtol=1e-4,
            atol=1e-8,
        )
        dumps = [(d / f"traj.{bead}.dump").read_text().split("ITEM: TIMESTEP\n")[1:] for d in (cut, whole)]
        assert [f.split()[0] for f in dumps[0]] == [f.split()[0] for f in dumps[1]]  # the same frames, once
        assert dumps[0][: len(before)] == dumps[1][: len(before)]
        frames = [[a.info["step"] for a in ase.io.read(d / f"candidates.{bead}.xyz", ":")] for d in (cut, whole)]
        assert frames[0] == frames[1] == list(range(0, steps + 1, OUT_FREQ))
    summary = [json.loads((d / "devi_summary.json").read_text()) for d in (cut, whole)]
    assert summary[0]["total"] == summary[1]["total"]
    assert summary[0]["total"]["candidate"] == 2 * (steps // OUT_FREQ + 1)  # the kept rows counted too


def run_without_input(tmp_path, xml: str, model_paths, *args: str, expect_failure: bool = False):
    """i-PI on ``xml`` and the driver told --template/--unix/--address/--nbeads by hand."""
    shutil.copy(IPI_INPUTS / "init.xyz", tmp_path / "init.xyz")
    (tmp_path / "input.xml").write_text(xml)
    address = xml.split("<address>")[1].split("</address>")[0].strip()
    driver = mpiexec(
        2,
        [tool("ensemble-driver"), "run", "--models", *map(str, model_paths), "--unix", "--address", address]
        + ["--out-freq", str(OUT_FREQ), "--connect-timeout", "120", *args],
    )
    with ProcessGroup(tmp_path / "logs") as group:
        ipi = group.start("i-pi", [tool("i-pi"), "input.xml"], cwd=tmp_path)
        member = group.start("driver", driver, cwd=tmp_path, ok_status=frozenset({2} if expect_failure else {0}))
        if expect_failure:  # i-PI waits for the lost request: end it once the driver has
            deadline = time.monotonic() + 300
            while member.popen.poll() is None:
                assert time.monotonic() < deadline and ipi.popen.poll() is None, group._report("driver still up")
                time.sleep(0.05)
        else:
            group.wait(300)
    return member.popen.returncode, member.log_path.read_text()


@pytest.mark.timeout(600)
def test_without_input_padding_gets_no_rows_and_a_warning(tmp_path, address, model_paths, reference, symbols):
    """The contracted force in batches of 8 with --nbeads 8 and no --ipi-input: the 6
    copies i-PI pads each batch with never get rows (step 0, where every bead is the same,
    included); beads 3..8 never come, and one warning says so and names the fix."""
    xml = ipi_input(address, system(8, "<force forcefield='dp' nbeads='2'/>"), batch=8)
    _, log = run_without_input(tmp_path, xml, model_paths[:2], "--template", "init.xyz", "--nbeads", "8")
    beads = contracted(bead_frames(tmp_path, 8), 2)
    for b in range(2):
        assert written_rows(tmp_path / f"model_devi{b + 1}.out") == expected_rows(
            beads[b], model_paths[:2], reference, symbols
        )
    for b in range(2, 8):
        assert written_rows(tmp_path / f"model_devi{b + 1}.out") == []
    warnings = [line for line in log.splitlines() if "never came" in line]
    assert len(warnings) == 1 and "beads 2..7 of --nbeads 8" in warnings[0] and "--ipi-input" in warnings[0]
    assert "or --nbeads 2" in warnings[0]


@pytest.mark.timeout(600)
def test_without_input_a_reordered_template_is_refused(tmp_path, address, model_paths):
    """A template with i-PI's atoms in another order: the first structure (i-PI's init
    file) shows it; one line, status 2, before any row or answer."""
    lines = (IPI_INPUTS / "init.xyz").read_text().splitlines()
    (tmp_path / "reversed.xyz").write_text("\n".join(lines[:2] + lines[2:][::-1]) + "\n")
    xml = ipi_input(address, system(2, "<force forcefield='dp'/>"))
    status, log = run_without_input(
        tmp_path, xml, model_paths[:2], "--template", "reversed.xyz", "--nbeads", "2", expect_failure=True
    )
    errors = [line for line in log.splitlines() if line.startswith("ensemble-driver: error:")]
    assert status == 2 and len(errors) == 1, log[-3000:]
    assert "lists the atoms of the server's first structure in another order" in errors[0]
    assert all(written_rows(p) == [] for p in tmp_path.glob("model_devi*.out"))
