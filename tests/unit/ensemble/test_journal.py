"""The journal a replacement driver continues from (ensemble/journal.py), the per-bead
cut it needs (outputs/resume.py), and no header-only deviation file after a failed start."""

from __future__ import annotations

import numpy as np
import pytest

from ensemble_driver.deviation import Deviation
from ensemble_driver.ensemble.journal import Journal
from ensemble_driver.errors import ConfigError
from ensemble_driver.outputs.model_devi import BeadFiles
from ensemble_driver.outputs.resume import resume_outputs


def structure(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(3, 3)), rng.normal(size=(4, 3))


def test_a_replacement_numbers_a_resent_structure_as_the_one_it_is(tmp_path):
    path = tmp_path / "j"
    first = Journal.create(path, natoms=4, ids=2, ring=3, first_step=0)
    assert [first.number(rid, *structure(10 * k + rid)) for k in range(3) for rid in (0, 1)] == [0, 0, 1, 1, 2, 2]
    assert first.number(0, *structure(30)) == 3  # bead 0's step 3 was in hand when the driver died
    first.close()
    again = Journal.reopen(path, natoms=4, ids=2)
    assert again.received() == {0: 4, 1: 3}
    assert again.number(0, *structure(30)) == 3  # i-PI sends the lost request again: the same step
    assert again.number(1, *structure(31)) == 3  # bead 1 was answered: the next one
    assert again.number(0, *structure(40)) == 4
    assert again.number(0, *structure(40)) == 5  # only a process's first structure can be a resend
    again.close()


def test_request_ids_the_input_does_not_file_are_counted_but_not_kept(tmp_path):
    """An estimator's clone, bound as i-PI runs: beyond the journal's ids, no rows."""
    journal = Journal.create(tmp_path / "j", natoms=4, ids=2, ring=2, first_step=0)
    assert [journal.number(5, *structure(k)) for k in range(3)] == [0, 1, 2]
    assert journal.received() == {}
    journal.close()


def test_held_structures_are_pending_until_released(tmp_path):
    journal = Journal.create(tmp_path / "j", natoms=4, ids=2, ring=2, first_step=7)
    cell, positions = structure(1)
    a = journal.hold(1, 9, cell, positions)
    b = journal.hold(0, 9, None, positions + 1)
    assert journal.hold(0, 10, cell, positions) is None and not journal.exact  # the ring is full: said
    journal.release(a)
    journal.close()
    again = Journal.reopen(tmp_path / "j", natoms=4, ids=2)
    [left] = again.pending()
    assert (left.series, left.step, left.slot) == (0, 9, b)
    np.testing.assert_array_equal(left.positions, positions + 1)
    np.testing.assert_array_equal(left.cell, np.zeros((3, 3)))
    assert again.first_step == 7 and not again.exact
    again.close()


def test_one_driver_at_a_time_and_only_its_own_journal(tmp_path):
    path = tmp_path / "j"
    running = Journal.create(path, natoms=4, ids=2, ring=2, first_step=0)
    with pytest.raises(ConfigError, match="another driver is writing rows"):
        Journal.reopen(path, natoms=4, ids=2)
    running.set_peer(1234, 5678)
    assert running.peer == (1234, 5678)
    running.close()
    with pytest.raises(ConfigError, match="written for 4 atoms and 2 request ids"):
        Journal.reopen(path, natoms=5, ids=2)
    path.write_bytes(b"not a journal")
    with pytest.raises(ConfigError, match="no journal"):
        Journal.reopen(path, natoms=4, ids=2)


ROW = Deviation(0.1, 0.01, 0.05, 0.2, 0.02, 0.1)


def test_each_bead_is_cut_at_its_own_step(tmp_path):
    names = [str(tmp_path / f"model_devi{b}.out") for b in (1, 2)]
    files = BeadFiles(names, atomic=False, mode="new")
    for step in range(5):
        files.write(0, step, ROW)
        files.write(1, step, ROW)
    files.close()
    resume_outputs([3, None], names)
    steps = [[int(line.split()[0]) for line in open(n) if not line.startswith("#")] for n in names]
    assert steps == [[0, 1, 2], [0, 1, 2, 3, 4]]


@pytest.mark.parametrize("mode", ["new", "append", "overwrite"])
def test_a_start_that_wrote_no_row_leaves_no_header_only_file(tmp_path, mode):
    names = [str(tmp_path / f"model_devi{b}.out") for b in (1, 2)]
    if mode != "new":
        BeadFiles(names, atomic=False, mode="new").close()  # header only, as --resume may leave them
    files = BeadFiles(names, atomic=False, mode=mode)
    files.discard_unused()
    assert not any((tmp_path / f"model_devi{b}.out").exists() for b in (1, 2))
    kept = BeadFiles(names, atomic=False, mode="new")
    kept.write(1, 0, ROW)
    kept.discard_unused()  # one bead has a row: the whole set stays
    assert all((tmp_path / f"model_devi{b}.out").exists() for b in (1, 2))


def test_a_stale_unix_socket_file_is_named_in_the_connection_error(tmp_path):
    """A server killed outright leaves its socket file: the driver's one line says so."""
    import socket

    from ensemble_driver.errors import ConnectError
    from ensemble_driver.wire.transport import UnixAddress, connect

    path = tmp_path / "ipi_stale"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))  # bound, never listening, closed: as a killed i-PI leaves it
    with pytest.raises(ConnectError, match="stale socket file"):
        connect(UnixAddress(str(path)), 0.2)
    path.unlink()
    with pytest.raises(ConnectError, match="is the server running"):
        connect(UnixAddress(str(path)), 0.2)
