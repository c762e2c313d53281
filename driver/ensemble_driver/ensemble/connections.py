"""Several connections from one job (``--connections K``): ranks 0..K-1 each serve one
connection to the same server with model 0, and rank 0 writes every row and ends the job.

Each connection rank runs its own session and :class:`ensemble.leader.Leader` (its beads'
deviation jobs go to the ensemble ranks, which answer whichever connection rank sent
them); the steps of each bead are counted across connections by
:class:`ranks.StepCounter`. A connection rank other than 0 sends its rows to rank 0
(:class:`rows.RemoteRows`); rank 0's :class:`Hub` puts them, with its own, into the
bead files in step order.

How a run ends, whatever ends it:

1. When rank 0's session ends (the server's EXIT, an error, a signal), rank 0 sends STOP
   with the run's status to the other connection ranks.
2. Another connection rank's session ends on the server's EXIT or end of stream, on an
   error or a signal, or on rank 0's STOP, which it looks for while it waits for its
   server (never in the middle of a request). It finishes its deviation jobs, sends
   their rows, then DONE (how it ended, and its evaluations per request id), and waits
   for rank 0's STOP if it has not had it yet.
3. Rank 0 waits for every DONE, writing the rows that come meanwhile, then stops the
   ensemble ranks and closes the files.

i-PI says EXIT to a client it drops (an unresponsive one, ``<timeout>``) as at the end of
a run, so a connection ending by EXIT while the others go on is not an error: i-PI hands
its beads to the others. One that ends any other way (its server closed it, an error, a
signal) ends the whole job: rank 0 sees its DONE while waiting for its own server and
ends as it does on a lost server, with that connection's reason.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from .. import ranks
from ..errors import DriverError, ProtocolError
from . import messages
from .rows import BeadRows

log = logging.getLogger(__name__)

#: How long rank 0 waits for the other connections to finish after its own ended, and a
#: connection rank for rank 0's STOP after its DONE, before the job is aborted.
CONNECTIONS_DEADLINE_S = 60.0


@dataclass(frozen=True)
class Done:
    """How a connection rank's session ended."""

    how: str  # "exit" (the server's EXIT), "eof" (the server closed it), "error", "signal", "stopped" (rank 0's STOP)
    status: int = 0
    message: str = ""
    evaluations: dict[int, int] = field(default_factory=dict)


class ConnectionEnded(DriverError):
    """Another connection ended the run (rank 0 raises it while it waits for its server)."""

    def __init__(self, message: str, exit_status: int):
        super().__init__(message)
        self.exit_status = exit_status


class StoppedByRank0(DriverError):
    """Rank 0 ended the run (a connection rank raises it while it waits for its server)."""

    def __init__(self, status: int):
        super().__init__("stopped by rank 0")
        self.exit_status = status


def _ended(rank: int, done: Done) -> ConnectionEnded:
    if done.how == "signal":  # the job's signal, whichever rank saw it first: said as on one rank
        return ConnectionEnded(done.message, done.status)
    if done.how == "eof":
        return ConnectionEnded(
            f"connection {rank} (rank {rank}): the server closed it while the other connections went on",
            ProtocolError.exit_status,
        )
    return ConnectionEnded(f"connection {rank} (rank {rank}): {done.message}", done.status or 1)


class Hub:
    """Rank 0's side: the other connections' rows and ends."""

    def __init__(self, comm, ranks: list[int], rows: BeadRows):
        self.talk = messages.Conversation(comm)
        self.ranks = list(ranks)
        self.rows = rows
        self.done: dict[int, Done] = {}
        self._stops: list = []

    def poll(self) -> None:
        """Take in the rows and DONE messages that have arrived."""
        while (message := self.talk.poll_row()) is not None:
            self.rows.put(*message[1])
        while (message := self.talk.poll_done()) is not None:
            rank, done = message
            self.done[rank] = done
            log.info(
                "connection %d (rank %d) ended (%s) after %d evaluations",
                rank,
                rank,
                done.message or done.how,
                sum(done.evaluations.values()),
            )

    def idle(self) -> None:
        """Session hook while rank 0 waits for its server: end the run if another
        connection ended it."""
        self.poll()
        for rank, done in sorted(self.done.items()):
            if done.how != "exit":
                raise _ended(rank, done)

    def finish(self, error: DriverError | None) -> DriverError | None:
        """Stop the other connections and wait for their DONE (their rows written);
        return the error the run ends with."""
        status = error.exit_status if error is not None else 0
        self._stops = self.talk.send_stop(self.ranks, status)
        finished = ranks.wait_for(
            lambda: self.poll() or len(self.done) == len(self.ranks), deadline=time.monotonic() + CONNECTIONS_DEADLINE_S
        )
        if not finished:
            missing = sorted(set(self.ranks) - set(self.done))
            log.error(
                "connection rank(s) %s did not finish within %.0f s: aborting the MPI job",
                ", ".join(map(str, missing)),
                CONNECTIONS_DEADLINE_S,
            )
            self.talk.abort(status)
        ranks.wait_for(lambda: all(s.Test() for s in self._stops), deadline=time.monotonic() + CONNECTIONS_DEADLINE_S)
        self.poll()  # rows sent just before a DONE
        if error is None:
            # an end of stream is an error only while the run goes on (see idle): when the
            # server is gone, every connection ends so, as one connection does
            for rank, done in sorted(self.done.items()):
                if done.how in ("error", "signal"):
                    return _ended(rank, done)
        return error

    def evaluations(self, own: dict[int, int]) -> dict[int, int]:
        """Evaluations per request id over every connection."""
        total = Counter(own)
        for done in self.done.values():
            total.update(done.evaluations)
        return dict(total)


class Link:
    """The side of a connection rank other than 0."""

    def __init__(self, comm):
        self.talk = messages.Conversation(comm)
        self._stop = np.zeros(messages.STOP_SIZE)
        self._stop_request = self.talk.expect_stop(self._stop)
        self.stopped = False

    def idle(self) -> None:
        """Session hook while this rank waits for its server: end on rank 0's STOP."""
        if self._stop_request.Test():
            self.stopped = True
            raise StoppedByRank0(messages.stop_status(self._stop))

    def finish(self, done: Done) -> None:
        """Report how this connection ended, then wait for rank 0's STOP."""
        send = self.talk.send_done(done)
        if not ranks.wait_for(
            lambda: send.Test() and (self.stopped or self._stop_request.Test()),
            deadline=time.monotonic() + CONNECTIONS_DEADLINE_S,
        ):
            log.error("rank 0 did not stop this connection within %.0f s: aborting the MPI job", CONNECTIONS_DEADLINE_S)
            self.talk.abort(done.status)
