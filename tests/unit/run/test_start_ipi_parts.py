"""``--start-ipi``'s pure parts, without a process: which checkpoint is newest, the status
line, a socket file's staleness, i-PI's error line (the runs themselves, real i-PI started
by rank 0 of a real ``mpiexec``: tests/peers/test_start_ipi.py)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from ensemble_driver.run.checkpoint import Start, checkpoint_files, newest_checkpoint, plan_start, read_checkpoint
from ensemble_driver.run.ipi_process import clear_socket, ipi_error_line, probe_unix_socket
from ensemble_driver.run.progress import Progress, duration, status_line
from ensemble_driver.wire.ipi_input import Socket


def write_checkpoint(path: Path, step: int, total: int = 100, *, whole: bool = True) -> None:
    text = (
        f"<simulation verbosity='quiet'>\n  <step>{step}</step>\n  <total_steps>{total}</total_steps>\n</simulation>\n"
    )
    path.write_text(text if whole else text[: len(text) // 2])


def test_the_newest_valid_checkpoint_is_chosen(tmp_path, caplog):
    """RESTART and <prefix>.restart compared by <step>; RESTART wins a tie; a truncated
    file (a kill during its write) is skipped; numbered checkpoints with overwrite='false'."""
    (tmp_path / "input.xml").write_text(
        "<simulation><output prefix='sim'><checkpoint stride='2'/><checkpoint filename='chk' overwrite='false'/>"
        "</output><total_steps>100</total_steps></simulation>"
    )
    plan = plan_start(tmp_path / "input.xml")
    assert plan == Start(tmp_path / "input.xml") and not plan.complete
    write_checkpoint(tmp_path / "RESTART", 8)
    write_checkpoint(tmp_path / "sim.restart", 10)
    assert plan_start(tmp_path / "input.xml").checkpoint.path.name == "sim.restart"
    write_checkpoint(tmp_path / "sim.restart", 8)
    assert plan_start(tmp_path / "input.xml").checkpoint.path.name == "RESTART"  # a tie: RESTART
    write_checkpoint(tmp_path / "sim.chk_0", 4)
    write_checkpoint(tmp_path / "sim.chk_1", 12)
    write_checkpoint(tmp_path / "sim.chk_2", 14, whole=False)  # killed while writing it
    write_checkpoint(tmp_path / "sim.chk_x", 99)  # not i-PI's numbering
    names = [p.name for p in checkpoint_files(tmp_path / "input.xml")]
    assert names == ["RESTART", "sim.restart", "sim.chk_0", "sim.chk_1", "sim.chk_2"]
    plan = plan_start(tmp_path / "input.xml")
    assert plan.checkpoint.path.name == "sim.chk_1" and plan.checkpoint.step == 12
    assert len(plan.skipped) == 1 and plan.skipped[0].startswith("sim.chk_2: not whole XML")
    write_checkpoint(tmp_path / "RESTART", 100)
    assert plan_start(tmp_path / "input.xml").complete


def test_checkpoints_of_an_input_without_outputs(tmp_path):
    """i-PI's defaults: prefix 'i-pi', filename 'restart'; i-PI writes no <step> for step 0
    (nor <total_steps> for 1000); a file that is not i-PI's is refused."""
    (tmp_path / "input.xml").write_text("<simulation><output><checkpoint/></output></simulation>")
    write_checkpoint(tmp_path / "i-pi.restart", 3, 10)
    chk, skipped = newest_checkpoint(checkpoint_files(tmp_path / "input.xml"))
    assert (chk.step, chk.total_steps, skipped) == (3, 10, ())
    (tmp_path / "RESTART").write_text("<simulation><output/></simulation>")
    assert read_checkpoint(tmp_path / "RESTART").step == 0 and read_checkpoint(tmp_path / "RESTART").total_steps == 1000
    (tmp_path / "RESTART").write_text("<html/>")
    with pytest.raises(ValueError, match="no <simulation> element"):
        read_checkpoint(tmp_path / "RESTART")


def test_status_line_forms():
    assert status_line(1200, 5000, 12.3, [("", 0.123)], (12, 0)) == (
        "status: step 1200 of 5000 (24%), 12.3 steps/s, 5 min 9 s left; max_devi_f since the last line: 0.123 eV/A; "
        "rows: 12 candidate, 0 failed"
    )
    assert status_line(40, None, 2.0, None, None) == ("status: step 40 (total unknown without --ipi-input), 2 steps/s")
    assert status_line(None, 10, None, [("A", None), ("B", 0.5)], None) == (
        "status: no step yet; max_devi_f since the last line: A no row, B 0.5 eV/A"
    )
    assert [duration(s) for s in (4.4, 309, 3 * 3600 + 7 * 60, 2 * 86400 + 4 * 3600)] == [
        "4 s",
        "5 min 9 s",
        "3 h 07 min",
        "2 d 4 h",
    ]


def test_progress_lines_come_by_the_clock():
    """A line when the clock passes the next line's time, with the steps per second since
    the last line and the largest deviation since then, reset after each line."""
    now = [0.0]
    lines: list[str] = []
    progress = Progress(10.0, total=100, clock=lambda: now[0], emit=lines.append, counts=lambda: (1, 2))
    progress.request(0, 0)
    progress.row(0, 0, 0.2)
    assert lines == []
    now[0] = 10.0
    progress.request(0, 10)
    progress.row(0, 10, 0.1)
    now[0] = 20.0
    progress.request(0, 30)
    assert len(lines) == 2
    assert lines[0].startswith("status: step 10 of 100 (10%); max_devi_f since the last line: 0.2 eV/A")
    assert lines[1] == (
        "status: step 30 of 100 (30%), 2 steps/s, 35 s left; max_devi_f since the last line: 0.1 eV/A; "
        "rows: 1 candidate, 2 failed"
    )


def test_socket_file_staleness(tmp_path):
    """No file: absent; a socket file with no listener: stale, removed; with a listener:
    live, refused in one line."""
    path = str(tmp_path / "sock")
    sock = Socket("dp", "unix", "sock", 0, str(tmp_path) + "/")
    assert probe_unix_socket(path) == "absent"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)
    try:
        assert probe_unix_socket(path) == "live"
        from ensemble_driver.errors import ConfigError

        with pytest.raises(ConfigError, match="a server already listens on"):
            clear_socket(sock)
    finally:
        server.close()
    assert probe_unix_socket(path) == "stale"
    clear_socket(sock)
    assert not os.path.exists(path)
    Path(path).write_text("not a socket")
    assert probe_unix_socket(path) not in ("absent", "stale", "live")


def test_ipi_error_line():
    log = (
        "--- ensemble-driver: i-pi input.xml\n !W! something\nTraceback (most recent call last):\n"
        "  File \"x.py\", line 1, in <module>\n    open('nowhere/sim.out')\n"
        "FileNotFoundError: [Errno 2] No such file or directory: 'nowhere/sim.out'\n"
    )
    assert ipi_error_line(log) == "FileNotFoundError: [Errno 2] No such file or directory: 'nowhere/sim.out'"
    assert ipi_error_line(" @ SIMULATION: Exiting cleanly.\n") == "@ SIMULATION: Exiting cleanly."
    assert ipi_error_line("") == "(nothing in its log)"
