"""Rank 0's deviation jobs: one structure that every model evaluates (the rank roles: see
:mod:`leader`).

A job is dispatched before model 0 evaluates its structure: the structure goes to every
follower at once (non-blocking Isend, with an Irecv posted for each follower's results;
see :mod:`messages` for the messages), and the leader's own extra models evaluate it after
the reply. Results are taken in without blocking. Finished jobs leave the pipeline in the
order they were dispatched, so each bead's rows come in step order: the pipeline hands
them to its ``sink`` (the row writer). A follower's failure, or one of the leader's own
models, is kept in ``fatal``; from then on nothing more is handed on.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .. import ranks
from ..errors import DriverError, ModelError, RankLost
from ..models.local import LocalModel
from ..models.parameters import Parameters
from ..wire.session import Request
from . import messages
from .layout import Layout

#: Deviation jobs the leader lets run ahead of the followers before it waits for them.
MAX_PENDING_JOBS = 16


@dataclass
class Job:
    seq: int
    rid: int
    step: int
    cell: np.ndarray | None
    positions: np.ndarray
    energies: np.ndarray
    forces: np.ndarray
    virials: np.ndarray
    local_todo: list[LocalModel] = field(default_factory=list)
    receives: dict = field(default_factory=dict)  # rank -> (request, buffer)
    sends: list = field(default_factory=list)
    work_buffer: np.ndarray | None = None  # kept alive until the sends complete
    row: bool = True  # a deviation row is written for it (committee mode: not every step)
    parameters: Parameters | None = None  # with the server's frame/atomic parameters, if it sent any
    server_parameters: tuple = (None, None, None)  # the server's (fparam, aparam, charge_spin), for the followers
    dispatched: float = field(default_factory=time.monotonic)
    slot: int | None = None  # its place in the journal until its row is written (ensemble.journal)

    def put(self, model: int, energy: float, forces: np.ndarray, virial: np.ndarray) -> None:
        """Model ``model``'s result for this structure."""
        self.energies[model] = energy
        self.forces[model] = forces
        self.virials[model] = virial

    def complete(self) -> bool:
        if self.local_todo or self.receives:
            return False
        self.sends = [s for s in self.sends if not s.Test()]
        return not self.sends


class JobPipeline:
    """Deviation jobs from dispatch to finished, returned in dispatch order."""

    def __init__(
        self,
        comm,
        layout: Layout,
        local_extra: Sequence[LocalModel],
        *,
        natoms: int,
        rank_timeout: float | None = None,
        hosts: Sequence[str] = (),
        slots: tuple[int, ...] = (),
    ):
        self.talk = messages.Conversation(comm)
        self.rank_timeout = rank_timeout  # a follower silent this long on the oldest job is lost
        self.slots = slots  # (dim_fparam, dim_aparam) in every WORK, for the server's parameters
        self.hosts = list(hosts)
        self.layout = layout
        self.local_extra = list(local_extra)
        self.natoms = natoms
        self.n_models = layout.n_models
        self.followers = layout.ensemble_ranks
        self.queue: deque[Job] = deque()
        self._finished: list[Job] = []  # finished, not yet returned (dispatch's wait finishes jobs too)
        self._seq = 0
        self.fatal: DriverError | None = None

    def _fail(self, error: DriverError) -> None:
        self.fatal = self.fatal or error

    def dispatch(
        self,
        request: Request,
        cell: np.ndarray | None,
        *,
        row: bool = True,
        parameters: Parameters | None = None,
        server_parameters: tuple = (None, None, None),
    ) -> Job:
        """A new job for ``request``'s structure, sent to every follower at once."""
        while len(self.queue) >= MAX_PENDING_JOBS and self.fatal is None:
            # the followers are behind: let them catch up before adding work
            self.run_local()
            ranks.wait_for(self._oldest_job_ready_or_failed)
            self._finish_head()
        seq = self._seq
        self._seq += 1
        n = self.n_models
        job = Job(
            seq,
            request.rid,
            request.step,
            cell,
            request.positions,
            np.zeros(n),
            np.zeros((n, self.natoms, 3)),
            np.zeros((n, 3, 3)),
            local_todo=list(self.local_extra),
            row=row,
            parameters=parameters,
            server_parameters=server_parameters,
        )
        if self.followers:
            self._send_work(job)
        self.queue.append(job)
        return job

    def _send_work(self, job: Job) -> None:
        buf = np.empty(messages.work_size(self.natoms, self.slots))
        messages.pack_work(buf, job.seq, job.rid, job.step, job.cell, job.positions, self.slots, *job.server_parameters)
        job.work_buffer = buf
        for rank in self.followers:
            job.sends.append(self.talk.send_work(rank, buf))
            rbuf = np.empty(messages.result_size(self.natoms, len(self.layout.models_of[rank])))
            job.receives[rank] = (self.talk.expect_result(rank, rbuf), rbuf)

    def run_local(self) -> None:
        """Evaluate the leader's own extra models on every job that still needs them."""
        for job in self.queue:
            while job.local_todo:
                member = job.local_todo.pop(0)
                try:
                    r = member.evaluate(job.positions, job.cell, job.rid, job.step, job.parameters)
                except DriverError as exc:
                    self._fail(exc)
                    job.local_todo.clear()
                    return
                job.put(member.index, r.energy, r.forces, r.virial)

    def _collect_receives(self) -> None:
        self._check_follower_errors()
        self._check_silence()
        for job in self.queue:
            for rank, (req, buf) in list(job.receives.items()):
                if req.Test():
                    models = self.layout.models_of[rank]
                    seq, energies, forces, virials = messages.unpack_results(buf, self.natoms, len(models))
                    if seq != job.seq:
                        self._fail(DriverError(f"internal error: rank {rank} answered job {seq} for job {job.seq}"))
                    for k, model in enumerate(models):
                        job.put(model, energies[k], forces[k], virials[k])
                    del job.receives[rank]

    def _check_silence(self) -> None:
        """Fail if the oldest job has waited longer than ``rank_timeout`` for a follower:
        its host or the network is gone (a live follower answers in its model time)."""
        if not self.rank_timeout or not self.queue or not self.queue[0].receives or self.fatal is not None:
            return
        waited = time.monotonic() - self.queue[0].dispatched
        if waited > self.rank_timeout:
            silent = sorted(self.queue[0].receives)
            where = ", ".join(f"rank {r}" + (f" on {self.hosts[r]}" if r < len(self.hosts) else "") for r in silent)
            self._fail(
                RankLost(
                    f"{where} has not answered for {waited:.0f} s (--server-timeout {self.rank_timeout:g}): "
                    "its host or the network is gone"
                )
            )

    def _check_follower_errors(self) -> None:
        for rank in self.followers:
            if (message := self.talk.error_from(rank)) is not None:
                self._fail(ModelError(f"rank {rank}: {message}"))

    def _finish_head(self) -> None:
        """Take in what has arrived; move the finished jobs at the head of the queue to
        the finished ones."""
        self._collect_receives()
        while self.queue and self.queue[0].complete() and self.fatal is None:
            self._finished.append(self.queue.popleft())

    def _take_finished(self) -> list[Job]:
        finished, self._finished = self._finished, []
        return finished

    def collect(self) -> list[Job]:
        """Take in what has arrived; return the jobs finished since the last return, in
        dispatch order."""
        self._finish_head()
        return self._take_finished()

    def complete_until(self, target: Job | None, deadline: float | None = None) -> list[Job]:
        """Wait for the jobs at the head of the queue, up to and including ``target``
        (every job if None), and return the jobs finished since the last return, in
        dispatch order: ``target`` is the last when it finished now. Stops early at a
        failure or when ``deadline`` (monotonic) passes; waits for nothing if ``target``
        has finished already."""
        if target is not None and target not in self.queue:
            return self._take_finished()
        self.run_local()
        while self.queue and self.fatal is None:
            if not ranks.wait_for(self._oldest_job_ready_or_failed, deadline=deadline):
                break
            if self.fatal is not None:
                break
            self._finished.append(self.queue.popleft())
            if self._finished[-1] is target:
                break
        return self._take_finished()

    def _oldest_job_ready_or_failed(self) -> bool:
        self._collect_receives()
        return not self.queue or self.queue[0].complete() or self.fatal is not None

    def cancel_receives(self) -> None:
        """Cancel the receives of the jobs abandoned (after a failure, or a deadline)."""
        for job in self.queue:
            for req, _ in job.receives.values():
                req.Cancel()
                req.Wait()
            job.receives.clear()

    def sends_in_flight(self) -> list:
        return [s for job in self.queue for s in job.sends]
