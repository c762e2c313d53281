"""Deviation rows: a finished job's model deviation, computed where the job finished and
written by rank 0 alone, to its bead's file in step order, and offered to the selection
(the rank roles: see :mod:`layout`).

:class:`RowWriter` takes the finished jobs as the leader hands them on from
:class:`jobs.JobPipeline`, in dispatch order, computes each row and puts it into a sink: :class:`BeadRows` on rank 0 (the files
and the selection), :class:`RemoteRows` on the other connection ranks (a message to rank
0, whose :mod:`connections` hub puts it into its BeadRows). With one connection the rows
arrive in step order; with several, one bead's rows may come from different connections
out of order, so BeadRows holds a row until the bead's rows before it are written.
"""

from __future__ import annotations

import logging
import time
from typing import Protocol

import numpy as np

from .. import ranks
from ..deviation import Deviation, DeviationKind
from . import messages
from .jobs import Job

log = logging.getLogger(__name__)


class Sink(Protocol):
    """Where rank 0's rows go (``outputs.sink.RowSink``): each row with its frame."""

    rows_by_bead: dict[int, int]

    def write(self, bead: int, step: int, row: Deviation, positions: np.ndarray, cell, forces) -> bool: ...

    def close(self) -> str | None: ...


class BeadRows:
    """Rank 0's rows: each bead's in step order into the sink (files, frames, selection).

    ``out_freq`` (with several connections) is the step between a bead's rows: a row is
    held until the one ``out_freq`` steps before it is written. None: rows are written as
    they come (one connection, whose rows come in step order)."""

    def __init__(self, sink: Sink | None, *, out_freq: int | None = None):
        self.sink = sink
        self.out_freq = out_freq
        self._held: dict[int, dict[int, tuple]] = {}
        self._next: dict[int, int] = {}
        # a driver replacing one that stopped: each bead's last row already in its file; a
        # row for a step not after it is of a structure i-PI sent again (its request was
        # in the lost driver's hands), dropped until the bead's first new row
        self.written_until: dict[int, int] = {}

    @property
    def rows_by_bead(self) -> dict[int, int]:
        return self.sink.rows_by_bead if self.sink is not None else {}

    def put(self, rid: int, step: int, row: Deviation, positions: np.ndarray, cell, forces: np.ndarray) -> None:
        """A row, with its structure and model 0's forces on it (for its frame)."""
        if rid in self.written_until:
            if step <= self.written_until[rid]:
                log.debug("bead %d: the row of step %d is in its file already", rid, step)
                return
            del self.written_until[rid]
        if self.out_freq is None:
            self._write(rid, step, row, positions, cell, forces)
            return
        held = self._held.setdefault(rid, {})
        held[step] = (row, positions, cell, forces)
        expected = self._next.get(rid, 0)
        while expected in held:
            self._write(rid, expected, *held.pop(expected))
            expected += self.out_freq
        self._next[rid] = expected

    def _write(self, rid: int, step: int, row: Deviation, positions: np.ndarray, cell, forces: np.ndarray) -> None:
        if self.sink is not None:
            self.sink.write(rid, step, row, positions, cell, forces)

    def flush(self) -> None:
        """Write the rows still held (a row before them never came: the run failed)."""
        for rid, held in sorted(self._held.items()):
            if held:
                log.warning(
                    "bead %d: the row of step %d never came; rows of steps %s written after it",
                    rid,
                    self._next.get(rid, 0),
                    ", ".join(map(str, sorted(held))),
                )
            for step in sorted(held):
                self._write(rid, step, *held[step])
            held.clear()

    def close(self) -> None:
        self.flush()
        if self.sink is not None:
            self.sink.close()  # the candidates and devi_summary.json, whole


class RemoteRows:
    """A connection rank's rows, sent to rank 0 (ROW messages, see :mod:`messages`)."""

    def __init__(self, comm):
        self.talk = messages.Conversation(comm)
        self._sends: list = []

    def put(self, rid: int, step: int, row: Deviation, positions: np.ndarray, cell, forces: np.ndarray) -> None:
        self._sends = [s for s in self._sends if not s.Test()]
        message = (rid, step, row, positions, cell, forces)
        self._sends.append(self.talk.send_row(message))

    def close(self) -> None:
        ranks.wait_for(lambda: all(s.Test() for s in self._sends), deadline=time.monotonic() + 60.0)


class RowWriter:
    """Computes the rows of finished deviation jobs and puts them into ``sink``."""

    def __init__(self, sink: BeadRows | RemoteRows, kind: DeviationKind):
        self.sink = sink
        self.kind = kind
        self.latest_row_s = 0.0  # dispatch to written, of the latest deviation job

    def write(self, job: Job) -> Deviation | None:
        """The job's row (None for a job without one), put into the sink."""
        self.latest_row_s = time.monotonic() - job.dispatched
        if not job.row:
            return None
        row = self.kind.row(job.forces, job.virials)
        self.sink.put(job.rid, job.step, row, job.positions, job.cell, job.forces[0])
        return row

    def close(self) -> None:
        self.sink.close()
