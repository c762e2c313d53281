"""The end of a run on a connection rank: the rows in flight written within a deadline,
the rest abandoned; on rank 0 also the other connections ended, every other rank
stopped and the files closed (the rank roles: see :mod:`layout`).

Rank 0 never leaves a rank waiting: whatever happens while finishing, every other rank
gets STOP with the run's status, or the MPI job is aborted.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from .. import ranks
from ..errors import DriverError, RankLost
from .jobs import JobPipeline
from .rows import RowWriter

log = logging.getLogger(__name__)

#: How long the leader waits for followers when stopping before it aborts the MPI job,
#: and for the rows in flight after a clean end.
STOP_DEADLINE_S = 60.0
#: How long the leader waits for the rows in flight when the run ends on an error
#: (a signal, a lost server): at least ABORT_DRAIN_S, or twice the time the latest row
#: took from dispatch to written when that is longer (large systems, slow models), but
#: never more than ABORT_DRAIN_MAX_S: within a batch system's grace between SIGTERM and
#: SIGKILL (Slurm's KillWait is 30 s by default) and the followers' own grace
#: (signals.FOLLOWER_SIGNAL_GRACE_S).
ABORT_DRAIN_S = 5.0
ABORT_DRAIN_MAX_S = 20.0
#: How long the live ranks have to take their STOP after a rank was lost (errors.RankLost).
LOST_RANK_STOP_S = 2.0


def abort_drain_s(latest_row_s: float) -> float:
    """How long to wait for the rows in flight after an error (see ABORT_DRAIN_S)."""
    return min(ABORT_DRAIN_MAX_S, max(ABORT_DRAIN_S, 2.0 * latest_row_s))


def finish(
    jobs: JobPipeline,
    rows: RowWriter,
    error: DriverError | None,
    *,
    drain: Callable[[float], None],
    others: Callable[[DriverError | None], DriverError | None] | None = None,
    stop: Sequence[int] = (),
) -> DriverError | None:
    """Write what can be written, stop ``stop`` (the ranks this one ends), close the
    rows; return the error the run ends with (``error``, or one found while finishing).

    The rows in flight are completed and written: within STOP_DEADLINE_S after a
    clean end, ABORT_DRAIN_S after an error (a signal, a lost server), not at all
    after a follower failed, by ``drain(deadline)`` (the leader's: the last batch's
    deviation dispatched, every job completed and its row written until the monotonic
    ``deadline``). What is left is abandoned. ``others`` (rank 0 with
    several connections: :meth:`connections.Hub.finish`) then ends the other
    connections and collects their rows, before anything is stopped.
    """
    try:
        if jobs.fatal is None:
            wait = STOP_DEADLINE_S if error is None else abort_drain_s(rows.latest_row_s)
            drain(time.monotonic() + wait)
            if jobs.queue and jobs.fatal is None:
                log.warning("%d deviation row(s) in flight abandoned after %.0f s", len(jobs.queue), wait)
        error = error or jobs.fatal
        jobs.cancel_receives()  # abandoned after a failure
        if others is not None:
            error = others(error)
    finally:
        rows.close()  # first: a lost rank below ends the job at once
        status = error.exit_status if error is not None else 0
        if isinstance(error, RankLost):
            # a lost rank never takes its STOP: the others take theirs, and rank 0, once it
            # has printed why, ends the job with MPI_Abort (cli.exit_now)
            stop_followers(jobs, list(stop), status, LOST_RANK_STOP_S, abort=False)
        else:
            stop_followers(jobs, list(stop), status)
    return error


def stop_followers(
    jobs: JobPipeline, followers: list[int], status: int, deadline_s: float = STOP_DEADLINE_S, *, abort: bool = True
) -> None:
    """STOP with ``status`` to ``followers``; abort the MPI job (if ``abort``) when they do
    not take it (with the jobs' own sends) within ``deadline_s``."""
    if not followers:
        return
    sends = jobs.talk.send_stop(followers, status)
    sends.extend(jobs.sends_in_flight())
    if not ranks.wait_for(lambda: all(s.Test() for s in sends), deadline=time.monotonic() + deadline_s) and abort:
        log.error("followers did not take the stop message within %.0f s: aborting the MPI job", deadline_s)
        jobs.talk.abort(status)
