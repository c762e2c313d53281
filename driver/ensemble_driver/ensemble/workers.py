"""The workers: ranks that answer a connection rank's messages until rank 0's STOP.

Two kinds share one loop (:func:`work_loop`):

- a follower holds one or more of the models 1..M-1 (see :func:`layout.deal_models`): it
  takes WORK from the connection ranks, evaluates each of its models on the structure
  (with the server's frame and atomic parameters for it, if any) and sends the results
  back to the rank that sent it (:func:`follower_loop`);
- a batch replica holds a copy of model 0 (``--model0-ranks``): it takes slices of i-PI's
  batches from rank 0 and answers each at once, as it is on the critical path of the
  step (:func:`replica_loop`; rank 0's side is :mod:`replicas`).

A worker that fails reports the one-line reason (to every connection rank, or to rank 0)
and waits for the STOP; it never exits first: a worker exiting with an error would make
MPICH kill the leader before it reports. After SIGTERM/SIGINT a worker goes on serving,
so that the leader can finish the request in hand, but gives up with the signal's status
if no STOP comes within its grace (:meth:`StopSignals.grace_over`). The messages: see
:mod:`messages`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import numpy as np

from .. import ranks
from ..errors import ModelError, ReportedError, failure_text
from ..models.local import LocalModel
from ..models.parameters import Parameters, merged
from ..signals import NoSignals, Stopped, StopSignals
from . import messages

log = logging.getLogger(__name__)

#: The longest a replica sleeps between looks for its next slice: a slice is on the
#: critical path of the step (rank 0 waits for it), so a replica looks often (a look is
#: an MPI_Iprobe of a few microseconds), where followers, off the critical path, sleep up
#: to 2 ms (ranks.wait_for).
REPLICA_MAX_SLEEP_S = 1e-4


def work_loop(
    receive: Callable[[], tuple[np.ndarray, int]],
    answer: Callable[[np.ndarray, int], None],
    report: Callable[[str], None],
    *,
    settle: Callable[[], None] = lambda: None,
    on_stop: Callable[[int], None] = lambda status: None,
) -> int:
    """Serve until STOP: ``receive()`` gives the next message and its sender, ``answer``
    answers a WORK or BATCH; a failure goes to ``report`` once, after which messages are
    taken but not answered. ``settle()`` completes the last answer in flight. Returns 0
    after a clean run; raises ReportedError (not printed here) after a failed one, whose
    status rank 0 gives with the STOP."""
    failed = False
    while True:
        buf, source = receive()
        status = messages.stop_status(buf)
        if status is not None:
            settle()
            on_stop(status)
            if status:
                raise ReportedError("", status, print_here=False)
            return 0
        if failed:
            continue  # the leader knows; wait for its STOP
        try:
            answer(buf, source)
        except Exception as exc:  # a model failure, or a bug: report it, do not hang the leader
            failed = True
            report(failure_text(exc))


def follower_loop(
    comm,
    members: Sequence[LocalModel],
    *,
    natoms: int,
    signals: StopSignals | None = None,
    dispatchers: Sequence[int] = (0,),
) -> int:
    """A follower: each WORK from a connection rank (``dispatchers``) answered to the rank
    that sent it, until rank 0's STOP (see :func:`work_loop`)."""
    talk = messages.Conversation(comm)
    signals = signals if signals is not None else NoSignals()
    slots = messages.parameter_slots(members[0].model if members else None)
    work = np.empty(messages.work_size(natoms, slots))
    out = np.empty(messages.result_size(natoms, len(members)))
    pending: list = []  # the answer in flight: `out` is free again once it has gone

    def receive() -> tuple[np.ndarray, int]:
        req, status = talk.next_work(work, dispatchers)
        while not ranks.wait_for(
            (lambda: req.Test()) if status is None else (lambda: req.Test(status)),
            deadline=time.monotonic() + 1.0,
        ):
            if signals.grace_over():
                req.Cancel()
                req.Wait()
                raise Stopped(signals.received)
        return work, dispatchers[0] if status is None else status.Get_source()

    def settle() -> None:
        if pending:
            ranks.wait_for(pending.pop().Test)

    def answer(buf: np.ndarray, source: int) -> None:
        item = messages.unpack_work(buf, natoms, slots)
        results = [
            m.evaluate(item.positions, item.cell, item.rid, item.step, _server_parameters(m, item)) for m in members
        ]
        settle()
        messages.pack_results(
            out, item.seq, [r.energy for r in results], [r.forces for r in results], [r.virial for r in results]
        )
        pending.append(talk.answer(source, out))

    def on_stop(status: int) -> None:
        log.debug("stopped by the leader (run status %d)", status)

    return work_loop(
        receive, answer, lambda message: talk.report_error(dispatchers, message), settle=settle, on_stop=on_stop
    )


def _server_parameters(member: LocalModel, item: messages.Work) -> Parameters | None:
    """A follower's model's parameters with the server's for this structure, if any."""
    if item.fparam is None and item.aparam is None and item.charge_spin is None:
        return None
    return merged(member.model.parameters, item.fparam, item.aparam, item.charge_spin)


def replica_loop(comm, model0: LocalModel, *, natoms: int, signals: StopSignals | None = None) -> int:
    """A batch replica: each slice of a batch from rank 0 answered at once, until rank
    0's STOP (see :func:`work_loop`)."""
    talk = messages.Conversation(comm)
    signals = signals if signals is not None else NoSignals()
    done = {"structures": 0, "slices": 0}

    def receive() -> tuple[np.ndarray, int]:
        pause = 1e-5
        while (count := talk.next_size(0)) is None:
            if signals.grace_over():
                raise Stopped(signals.received)
            time.sleep(pause)
            pause = min(2 * pause, REPLICA_MAX_SLEEP_S)
        buf = np.empty(count)
        talk.take_work(buf, 0)
        return buf, 0

    def answer(buf: np.ndarray, source: int) -> None:
        cells, positions = messages.unpack_batch(buf, natoms)
        result = model0.model.evaluate_batch(positions, cells, model0.atom_types)
        if not (np.isfinite(result.energy).all() and np.isfinite(result.forces).all()):
            raise ModelError(f"model 0 ({model0.model.path}) returned non-finite energy or forces in a batch slice")
        done["structures"] += len(positions)
        done["slices"] += 1
        reply = messages.pack_batch_result(result.energy, result.forces, result.virial)
        ranks.wait_for(talk.answer(0, reply).Test)

    def on_stop(status: int) -> None:
        log.info(
            "rank %d (batch replica of model 0): %d structures in %d slices",
            comm.rank,
            done["structures"],
            done["slices"],
        )

    return work_loop(receive, answer, lambda message: talk.report_error([0], message), on_stop=on_stop)
