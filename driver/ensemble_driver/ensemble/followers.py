"""The followers: the ensemble ranks' side of the deviation steps.

A follower holds one or more of the models 1..M-1 (see :func:`layout.deal_models`). It
waits for WORK from the connection ranks, evaluates each of its models on the structure
(with the server's frame and atomic parameters for it, if any) and sends the results back
to the rank that sent it, until rank 0 sends STOP (see :mod:`messages` for the buffers).
A follower that fails reports the one-line reason to every connection rank and waits for
the STOP; it never exits first (see :func:`follower_loop`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np

from .. import ranks
from ..errors import ReportedError, failure_text
from ..models.parameters import Parameters, merged
from ..signals import NoSignals, Stopped, StopSignals
from . import messages
from .jobs import LocalModel

log = logging.getLogger(__name__)


def follower_loop(
    comm,
    members: Sequence[LocalModel],
    *,
    natoms: int,
    signals: StopSignals | None = None,
    dispatchers: Sequence[int] = (0,),
) -> int:
    """Serve the connection ranks (``dispatchers``) until rank 0 sends STOP: each WORK is
    answered to the rank that sent it. After a clean run return 0; after a failed one
    raise ReportedError (not printed here): the failure goes to every connection rank,
    and rank 0, which prints the reason, ends the job with the status (a follower exiting
    first with an error would make MPICH kill the leader before it reports).

    After SIGTERM/SIGINT a follower goes on serving, so that the leader can finish the
    request in hand, but gives up with the signal's status if no STOP comes within
    its grace (:meth:`StopSignals.grace_over`)."""
    signals = signals if signals is not None else NoSignals()
    slots = messages.parameter_slots(members[0].model if members else None)
    work = np.empty(messages.work_size(natoms, slots))
    out = np.empty(messages.result_size(natoms, len(members)))
    pending_send = None
    failed = False
    while True:
        source = _next_work(comm, work, dispatchers, signals)
        status = messages.stop_status(work)
        if status is not None:
            if pending_send is not None:
                ranks.wait_for(pending_send.Test)
            log.debug("stopped by the leader (run status %d)", status)
            if status:
                raise ReportedError("", status, print_here=False)
            return 0
        if failed:
            continue  # the leader knows; wait for its STOP
        item = messages.unpack_work(work, natoms, slots)
        try:
            results = [
                m.evaluate(item.positions, item.cell, item.rid, item.step, _server_parameters(m, item)) for m in members
            ]
        except Exception as exc:  # a model failure, or a bug: report it, do not hang the leader
            failed = True
            message = failure_text(exc)
            for rank in dispatchers:
                comm.send(message, dest=rank, tag=messages.TAG_ERROR)
            continue
        if pending_send is not None:
            ranks.wait_for(pending_send.Test)  # `out` is free again
        messages.pack_results(
            out, item.seq, [r.energy for r in results], [r.forces for r in results], [r.virial for r in results]
        )
        pending_send = comm.Isend(out, dest=source, tag=messages.TAG_RESULT)


def _next_work(comm, work: np.ndarray, dispatchers: Sequence[int], signals: StopSignals) -> int:
    """Receive the next WORK or STOP into ``work``; return the rank that sent it. Stop on a
    signal once its grace is over."""
    if len(dispatchers) == 1:
        req, status = comm.Irecv(work, source=dispatchers[0], tag=messages.TAG_CONTROL), None
    else:
        req, status = ranks.irecv_any(comm, work, messages.TAG_CONTROL)
    while not ranks.wait_for(
        (lambda: req.Test()) if status is None else (lambda: req.Test(status)),
        deadline=time.monotonic() + 1.0,
    ):
        if signals.grace_over():
            req.Cancel()
            req.Wait()
            raise Stopped(signals.received)
    return dispatchers[0] if status is None else status.Get_source()


def _server_parameters(member: LocalModel, item: messages.Work) -> Parameters | None:
    """A follower's model's parameters with the server's for this structure, if any."""
    if item.fparam is None and item.aparam is None:
        return None
    return merged(member.model.parameters, item.fparam, item.aparam)
