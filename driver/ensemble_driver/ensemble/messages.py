"""The messages between ranks: their tags and the layout of their buffers.

Messages are NumPy float64 buffers moved with mpi4py's upper-case point-to-point calls
(no pickling on the hot path), all of a size fixed by the atom count; float64 holds the
integers in them (sequence numbers, request ids, steps) exactly. This module fills and
reads them, and :class:`Conversation` moves them: every send and receive between ranks is
one of its verbs (mpi4py itself is imported only in :mod:`ranks`).

- WORK, connection rank -> ensemble rank: ``[1, seq, rid, step, periodic, cell(9),
  positions(3N)]``, then, for models with frame or atomic parameters, a flag and the
  server's values of each (see :func:`work_size`); STOP, rank 0 -> any rank, has the same
  tag: ``[0, exit status]``;
- RESULT, ensemble rank -> the connection rank that sent the WORK: ``[seq, then per
  model: energy, forces(3N), virial(9)]``;
- ERROR, ensemble rank -> every connection rank: a pickled one-line message (rare);
- BATCH, rank 0 -> batch replica, on the WORK tag: ``[2, n, periodic, cells(9n),
  positions(3Nn)]``, answered on the RESULT tag with ``[n, energies(n), forces(3Nn),
  virials(9n)]`` (see :mod:`replicas`);
- ROW and DONE, connection rank -> rank 0: a finished deviation row, and the end of a
  connection (pickled, once per row or per connection; see :mod:`connections`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..ranks import irecv_any, poll_object, probe_count

TAG_CONTROL = 11
TAG_RESULT = 12
TAG_ERROR = 13
TAG_ROW = 14
TAG_DONE = 15
KIND_STOP = 0.0
KIND_WORK = 1.0
KIND_BATCH = 2.0
BATCH_HEADER = 3  # kind, n, periodic
WORK_HEADER = 5  # kind, seq, rid, step, periodic
STOP_SIZE = 2  # kind, exit status


# -- STOP: rank 0 ends the run -----------------------------------------------------------
def pack_stop(status: int) -> np.ndarray:
    """A STOP with the run's exit status (sent on the WORK tag, so it ends any wait)."""
    return np.array([KIND_STOP, float(status)])


def stop_status(buf: np.ndarray) -> int | None:
    """The exit status a STOP carries; None when ``buf`` holds a WORK or a BATCH."""
    return int(buf[1]) if buf[0] == KIND_STOP else None


# -- WORK and RESULT: a structure to the ensemble ranks, their models' results back --------
def parameter_slots(model) -> tuple[int, ...]:
    """(dim_fparam, dim_aparam, dim_charge_spin) of ``model`` (None: no model), the
    parameter slots of every WORK: sender and receiver size their buffers by it, so both
    take it from here."""
    return tuple(getattr(model, name, 0) for name in ("dim_fparam", "dim_aparam", "dim_charge_spin"))


def work_size(natoms: int, slots: tuple[int, ...] = ()) -> int:
    """A WORK buffer's length; ``slots`` (dim_fparam, dim_aparam, dim_charge_spin) of the
    models when they take parameters the server may set (a flag and the values of each,
    after the positions)."""
    return WORK_HEADER + 9 + 3 * natoms + (len(slots) + sum(slots) if any(slots) else 0)


def result_size(natoms: int, n_local_models: int) -> int:
    return 1 + n_local_models * (1 + 3 * natoms + 9)


def pack_work(
    buf: np.ndarray,
    seq: int,
    rid: int,
    step: int,
    cell: np.ndarray | None,
    positions: np.ndarray,
    slots: tuple[int, ...] = (),
    *server: np.ndarray | None,
) -> None:
    """Fill a WORK buffer in place (float64 holds the integers exactly); ``server``, the
    server's fparam, aparam and charge_spin for this structure (None where it sent none),
    go in the parameter slots."""
    buf[:WORK_HEADER] = (KIND_WORK, seq, rid, step, 0.0 if cell is None else 1.0)
    buf[WORK_HEADER : WORK_HEADER + 9] = 0.0 if cell is None else cell.ravel()
    end = WORK_HEADER + 9 + positions.size
    buf[WORK_HEADER + 9 : end] = positions.ravel()
    if any(slots):
        for dim, values in zip(slots, (*server, None, None, None)):
            buf[end] = 0.0 if values is None else 1.0
            buf[end + 1 : end + 1 + dim] = 0.0 if values is None else np.ravel(values)
            end += 1 + dim


@dataclass(frozen=True)
class Work:
    seq: int
    rid: int
    step: int
    cell: np.ndarray | None
    positions: np.ndarray
    fparam: np.ndarray | None = None  # the server's, for this structure
    aparam: np.ndarray | None = None
    charge_spin: np.ndarray | None = None


def unpack_work(buf: np.ndarray, natoms: int, slots: tuple[int, ...] = ()) -> Work:
    kind, seq, rid, step, periodic = buf[:WORK_HEADER]
    assert kind == KIND_WORK
    cell = buf[WORK_HEADER : WORK_HEADER + 9].reshape(3, 3).copy() if periodic else None
    end = WORK_HEADER + 9 + 3 * natoms
    positions = buf[WORK_HEADER + 9 : end].reshape(natoms, 3).copy()
    params: list[np.ndarray | None] = [None, None, None]
    if any(slots):
        for k, dim in enumerate(slots):
            if buf[end]:
                params[k] = buf[end + 1 : end + 1 + dim].copy()
            end += 1 + dim
    return Work(int(seq), int(rid), int(step), cell, positions, *params)


def pack_results(
    buf: np.ndarray, seq: int, energies: Sequence[float], forces: Sequence[np.ndarray], virials: Sequence[np.ndarray]
) -> None:
    buf[0] = seq
    offset = 1
    for e, f, v in zip(energies, forces, virials):
        buf[offset] = e
        buf[offset + 1 : offset + 1 + f.size] = f.ravel()
        offset += 1 + f.size
        buf[offset : offset + 9] = v.ravel()
        offset += 9


def unpack_results(buf: np.ndarray, natoms: int, n_local_models: int):
    """(seq, energies (n,), forces (n, nat, 3), virials (n, 3, 3)) from a RESULT buffer."""
    body = buf[1:].reshape(n_local_models, 1 + 3 * natoms + 9)
    return (
        int(buf[0]),
        body[:, 0].copy(),
        body[:, 1 : 1 + 3 * natoms].reshape(n_local_models, natoms, 3).copy(),
        body[:, 1 + 3 * natoms :].reshape(n_local_models, 3, 3).copy(),
    )


# -- model 0's batches split over replicas (see :mod:`replicas`) -----------------------------
def pack_batch(cells: np.ndarray | None, positions: np.ndarray) -> np.ndarray:
    n = len(positions)
    head = np.array([KIND_BATCH, n, 0.0 if cells is None else 1.0])
    return np.concatenate([head, np.zeros(9 * n) if cells is None else cells.ravel(), positions.ravel()])


def unpack_batch(buf: np.ndarray, natoms: int) -> tuple[np.ndarray | None, np.ndarray]:
    """(cells (n, 3, 3) or None, positions (n, natoms, 3)) from a BATCH buffer."""
    _, n, periodic = buf[:BATCH_HEADER]
    n = int(n)
    cells = buf[BATCH_HEADER : BATCH_HEADER + 9 * n].reshape(n, 3, 3).copy() if periodic else None
    positions = buf[BATCH_HEADER + 9 * n : BATCH_HEADER + 9 * n + 3 * natoms * n].reshape(n, natoms, 3).copy()
    return cells, positions


def batch_result_size(natoms: int, n: int) -> int:
    return 1 + n * (1 + 3 * natoms + 9)


def pack_batch_result(energy: np.ndarray, forces: np.ndarray, virial: np.ndarray) -> np.ndarray:
    return np.concatenate([[float(len(energy))], np.ravel(energy), forces.ravel(), virial.ravel()])


def unpack_batch_result(buf: np.ndarray, natoms: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = int(buf[0])
    forces_end = 1 + n + 3 * natoms * n
    return (
        buf[1 : 1 + n].copy(),
        buf[1 + n : forces_end].reshape(n, natoms, 3).copy(),
        buf[forces_end : forces_end + 9 * n].reshape(n, 3, 3).copy(),
    )


# -- the conversation ------------------------------------------------------------------
class Conversation:
    """Every message between the ranks of ``run``, a verb each, over a communicator
    (mpi4py's COMM_WORLD, :class:`ranks.SerialComm`, or a test's fake): the one place that
    calls its point-to-point methods, so a deadlock review reads this class. Sends are
    non-blocking and return a request to ``Test``; so are the receives that a rank
    polls while it works (nobody waits in a blocking MPI call: see :func:`ranks.wait_for`).

    Who says what: a connection rank sends WORK to the followers and BATCH slices to the
    batch replicas (``send_work``), and expects their RESULTs (``expect_result``) or an
    ERROR (``error_from``); a worker takes WORK (``next_work``, ``next_size`` and
    ``take_work``), answers (``answer``) or reports its failure (``report_error``); rank 0
    ends every rank (``send_stop``) or the job (``abort``); with several connections, a
    connection rank sends its rows and its end to rank 0 (``send_row``, ``send_done``),
    which takes them in (``poll_row``, ``poll_done``), and waits for rank 0's STOP
    (``expect_stop``)."""

    def __init__(self, comm):
        self.comm = comm

    # a connection rank and its workers
    def send_work(self, rank: int, buf: np.ndarray):
        """WORK, a BATCH slice or a STOP (all on the one tag a worker listens on)."""
        return self.comm.Isend(buf, dest=rank, tag=TAG_CONTROL)

    def expect_result(self, rank: int, buf: np.ndarray):
        return self.comm.Irecv(buf, source=rank, tag=TAG_RESULT)

    def error_from(self, rank: int) -> str | None:
        """A worker's one-line failure, if it sent one."""
        if self.comm.Iprobe(source=rank, tag=TAG_ERROR):
            return self.comm.recv(source=rank, tag=TAG_ERROR)
        return None

    def send_stop(self, ranks: Sequence[int], status: int) -> list:
        stop = pack_stop(status)
        return [self.send_work(rank, stop) for rank in ranks]

    def abort(self, status: int) -> None:
        """End the whole MPI job (a rank that will not take its STOP)."""
        self.comm.Abort(status or 1)

    # a worker
    def next_work(self, buf: np.ndarray, sources: Sequence[int]):
        """(request, status) of a receive of the next WORK or STOP from ``sources``
        (status None: from ``sources[0]``, the only one; else MPI's, which names it)."""
        if len(sources) == 1:
            return self.comm.Irecv(buf, source=sources[0], tag=TAG_CONTROL), None
        return irecv_any(self.comm, buf, TAG_CONTROL)

    def next_size(self, source: int) -> int | None:
        """The size of the message ``source`` has sent on the work tag, None if none yet."""
        return probe_count(self.comm, source, TAG_CONTROL)

    def take_work(self, buf: np.ndarray, source: int) -> None:
        """Receive a message ``next_size`` found (it is there: this does not wait)."""
        self.comm.Recv(buf, source=source, tag=TAG_CONTROL)

    def answer(self, rank: int, buf: np.ndarray):
        return self.comm.Isend(buf, dest=rank, tag=TAG_RESULT)

    def report_error(self, ranks: Sequence[int], message: str) -> None:
        for rank in ranks:
            self.comm.send(message, dest=rank, tag=TAG_ERROR)

    # several connections: a connection rank and rank 0
    def send_row(self, message):
        return self.comm.isend(message, dest=0, tag=TAG_ROW)

    def send_done(self, done):
        return self.comm.isend(done, dest=0, tag=TAG_DONE)

    def expect_stop(self, buf: np.ndarray):
        return self.comm.Irecv(buf, source=0, tag=TAG_CONTROL)

    def poll_row(self):
        """(rank, row message) of a ROW that has arrived, None if none."""
        return poll_object(self.comm, TAG_ROW)

    def poll_done(self):
        return poll_object(self.comm, TAG_DONE)
