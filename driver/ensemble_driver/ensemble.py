"""The ensemble: model 0 drives the dynamics; every ``out_freq`` steps all models evaluate.

Leader (rank 0), per structure from the server:

1. on a deviation step (``step % out_freq == 0`` for a bead below ``nbeads``) it sends
   the structure to the followers first, so that every model computes at the same time;
2. it evaluates model 0 and hands the answer back to the session, which sends it to the
   server at once: the answer never waits for the other models (unless ``--extras``
   asks for the deviation inside it);
3. after the reply it evaluates the extra models it holds itself (only when it runs
   alone, as LAMMPS does) and collects whatever results have arrived, without blocking;
   finished rows are written in step order.

Non-deviation steps involve no other rank. Followers wait for WORK, evaluate their models
in turn and send the results back (see :mod:`parallel` for the messages).

Failure is collective: a follower that fails reports to the leader, which finishes the
request in hand, writes the rows it has, stops every follower and exits with the
failure's status; the leader never leaves a follower waiting.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from . import parallel, units
from .client import BatchRequest, Reply, Request
from .deviation import Deviation, model_deviation
from .errors import DriverError, ModelError, ProtocolError, ReportedError, UnsupportedTransport
from .model import DeepPotModel, Evaluation
from .output import BeadFiles
from .selection import Selection
from .signals import NoSignals, Stopped, StopSignals

log = logging.getLogger(__name__)

#: Deviation jobs the leader lets run ahead of the followers before it waits for them.
MAX_PENDING_JOBS = 16
#: Keys of the FORCEREADY extras with --extras; -1 on steps without a deviation.
EXTRAS_KEYS = ("max_devi_v", "min_devi_v", "avg_devi_v", "max_devi_f", "min_devi_f", "avg_devi_f")
EXTRAS_SENTINEL = -1.0
#: How long the leader waits for followers when stopping before it aborts the MPI job,
#: and for the rows in flight after a clean end.
STOP_DEADLINE_S = 60.0
#: How long the leader waits for the rows in flight when the run ends on an error
#: (a signal, a lost server): at least ABORT_DRAIN_S, or twice the time the latest row
#: took from dispatch to written when that is longer (large systems, slow models), but
#: never more than ABORT_DRAIN_MAX_S: within a batch system's grace between SIGTERM and
#: SIGKILL (Slurm's KillWait is 30 s by default) and the followers' own grace below.
ABORT_DRAIN_S = 5.0
ABORT_DRAIN_MAX_S = 20.0
#: How long a follower that received SIGTERM/SIGINT waits for the leader's STOP.
FOLLOWER_SIGNAL_GRACE_S = 30.0


@dataclass(frozen=True)
class DeviationSettings:
    out_freq: int = 100
    nbeads: int = 1
    relative: float | None = None
    relative_v: float | None = None
    atomic: bool = False
    extras: bool = False
    committee: bool = False


@dataclass
class LocalModel:
    index: int
    model: DeepPotModel
    atom_types: np.ndarray

    def evaluate(self, positions: np.ndarray, cell: np.ndarray | None, rid: int, step: int) -> Evaluation:
        result = self.model.evaluate(positions, cell, self.atom_types)
        if not (np.isfinite(result.energy) and np.isfinite(result.forces).all() and np.isfinite(result.virial).all()):
            raise ModelError(
                f"model {self.index} ({self.model.path}) returned non-finite energy, forces or virial "
                f"at step {step} of bead {rid}"
            )
        return result


@dataclass
class _Job:
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
    dispatched: float = field(default_factory=time.monotonic)

    def complete(self) -> bool:
        if self.local_todo or self.receives:
            return False
        self.sends = [s for s in self.sends if not s.Test()]
        return not self.sends


def check_cell(cell: np.ndarray | None, where: str) -> None:
    if cell is not None and abs(np.linalg.det(cell)) < 1e-8:
        raise ProtocolError(
            f"the server sent a cell of zero volume ({where}) for a periodic system; if the "
            "system is not periodic, run with --no-pbc"
        )


class Leader:
    """The session handler of rank 0: answers with model 0, runs the ensemble beside it."""

    def __init__(
        self,
        comm,
        layout: parallel.Layout,
        local: Sequence[LocalModel],
        *,
        natoms: int,
        periodic: bool,
        settings: DeviationSettings,
        files: BeadFiles | None,
        selection: Selection | None = None,
    ):
        self.comm = comm
        self.selection = selection
        self.layout = layout
        self.model0 = local[0]
        self.local_extra = list(local[1:])
        self.natoms = natoms
        self.periodic = periodic
        self.settings = settings
        self.files = files
        self.n_models = layout.n_models
        self.followers = list(range(1, layout.n_ranks))
        self.deviation_on = settings.out_freq > 0 and self.n_models > 1
        self._jobs: deque[_Job] = deque()
        self._seq = 0
        self.latest_row_s = 0.0  # dispatch to written, of the latest deviation job
        self._fatal: DriverError | None = None
        self._warned_rids: set[int] = set()
        self.rows_by_bead: dict[int, int] = {}
        self._sentinel_extras = json.dumps(dict.fromkeys(EXTRAS_KEYS, EXTRAS_SENTINEL)).encode()
        # i-PI's batched transport (see batch()): the last batch, until the next one tells
        # how many of its structures were real, and the steps counted per request id
        self._pending_batch: tuple[BatchRequest, object] | None = None
        self.batch_steps: dict[int, int] = {}
        self._warned_batch_gap = False

    # -- the session's handler ---------------------------------------------------------
    def __call__(self, request: Request) -> Reply:
        cell = request.cell if self.periodic else None
        check_cell(cell, f"bead {request.rid}, step {request.step}")
        job = None
        if self.settings.committee:  # every model on every structure
            row = (
                self.deviation_on and request.step % self.settings.out_freq == 0 and request.rid < self.settings.nbeads
            )
            job = self._dispatch(request, cell)
            job.row = row
        elif self.deviation_on and request.step % self.settings.out_freq == 0:
            if request.rid < self.settings.nbeads:
                job = self._dispatch(request, cell)
            elif request.rid not in self._warned_rids:
                self._warned_rids.add(request.rid)
                log.warning(
                    "request id %d >= --nbeads %d: no deviation rows for it (an estimator's clone, or "
                    "pass --nbeads P for a path-integral run with P beads)",
                    request.rid,
                    self.settings.nbeads,
                )
        result = self.model0.evaluate(request.positions, cell, request.rid, request.step)
        extras = b""
        if job is not None:
            job.energies[0] = result.energy
            job.forces[0] = result.forces
            job.virials[0] = result.virial
        if self.settings.committee:
            self._write_until(job)  # the answer needs every model's result for this structure
            if self._fatal is None:
                extras = committee_extras(job)
            # after a failure the answer goes without the committee; after_reply raises it
        elif self.settings.extras:
            extras = self._sentinel_extras
            if job is not None:
                row = self._write_until(job)  # --extras needs this step's row now
                if row is not None:
                    extras = json.dumps(dict(zip(EXTRAS_KEYS, row.columns()))).encode()
        return Reply(result.energy, result.forces, result.virial, extras)

    def after_reply(self) -> None:
        """Called once the answer is on its way: local extra models, then collect."""
        self._run_local()
        self._collect()
        if self._fatal is not None:
            raise self._fatal

    # -- i-PI's batched transport -----------------------------------------------------
    def begin_batches(self, batch_size: int, init_every_step: bool) -> None:
        """Called at the INIT that announces batching: refuse what cannot work with it."""
        if self.settings.committee:
            raise UnsupportedTransport(
                "--committee-json cannot be used with i-PI's batched transport (<batch_size>) yet"
            )
        if self.settings.extras:
            raise UnsupportedTransport(
                "--extras cannot be used with i-PI's batched transport (<batch_size>): which bead each "
                "structure of a batch is becomes known only with the next batch"
            )
        if self.deviation_on and not init_every_step:
            raise UnsupportedTransport(
                "the deviation needs every batch's INIT (its first request id) with i-PI's batched "
                "transport: do not use --no-init-each"
            )

    def batch(self, request: BatchRequest) -> list[Reply]:
        """Model 0 on a batched POSDATA, in one model call.

        i-PI says only the request id of the first structure, and pads a batch by
        repeating its last structure, sometimes before all the beads of a step are queued
        (its poll thread may dispatch while the step is being queued). With one client,
        the batches of a step are consecutive runs of its beads, so the next batch's first
        id tells how many structures of this one were real beads (and the end of the run
        closes the last one). The deviation of a batch is therefore dispatched when the
        next batch arrives, before model 0 evaluates that one.
        """
        cells = request.cells if self.periodic else None
        if cells is not None:
            for cell in cells:
                check_cell(cell, f"batch starting at request id {request.rid}")
        self._resolve_batch(next_rid=request.rid)
        positions = request.positions
        # distinct consecutive structures only: padding, and step 0 where every bead is
        # the same, are copies of the structure before them
        same = np.array(
            [False]
            + [
                np.array_equal(positions[k], positions[k - 1])
                and (cells is None or np.array_equal(cells[k], cells[k - 1]))
                for k in range(1, len(positions))
            ]
        )
        distinct = np.flatnonzero(~same)
        source = np.cumsum(~same) - 1  # the distinct structure each slot copies
        result = self.model0.model.evaluate_batch(
            positions[distinct], None if cells is None else cells[distinct], self.model0.atom_types
        )
        energy, forces, virial = result.energy[source], result.forces[source], result.virial[source]
        if not (np.isfinite(energy).all() and np.isfinite(forces).all() and np.isfinite(virial).all()):
            raise ModelError(
                f"model 0 ({self.model0.model.path}) returned non-finite energy, forces or virial in the "
                f"batch starting at request id {request.rid}"
            )
        self._pending_batch = (request, (energy, forces, virial))
        return [Reply(float(energy[k]), forces[k], virial[k], b"") for k in range(len(energy))]

    def _resolve_batch(self, next_rid: int | None) -> None:
        """Count the real structures of the pending batch, give each its bead and step,
        and start the deviation of those at a deviation step."""
        if self._pending_batch is None:
            return
        request, (energy, forces, virial) = self._pending_batch
        self._pending_batch = None
        size, first, nbeads = len(energy), request.rid, self.settings.nbeads
        if first >= nbeads:
            real = 1  # an estimator's clone: no rows, and no way to tell more
        elif next_rid is not None and next_rid > first:
            real = next_rid - first
            if real > size:  # other beads went to another client
                if not self._warned_batch_gap:
                    self._warned_batch_gap = True
                    log.warning(
                        "request ids %d..%d were not sent here: with i-PI's batched transport the deviation "
                        "needs one client per <ffsocket> to tell the beads of a batch apart",
                        first + size,
                        next_rid - 1,
                    )
                real = size
        else:
            real = min(size, nbeads - first)  # the batch closed its step
        for k in range(real):
            rid = first + k
            step = self.batch_steps.get(rid, 0)
            self.batch_steps[rid] = step + 1
            if self.deviation_on and rid < nbeads and step % self.settings.out_freq == 0:
                cell = None if not self.periodic else request.cells[k]
                job = self._dispatch(Request(rid, step, request.cells[k], request.positions[k]), cell)
                job.energies[0] = energy[k]
                job.forces[0] = forces[k]
                job.virials[0] = virial[k]

    # -- deviation jobs ----------------------------------------------------------------
    def _dispatch(self, request: Request, cell: np.ndarray | None) -> _Job:
        while len(self._jobs) >= MAX_PENDING_JOBS and self._fatal is None:
            # the followers are behind: let them catch up before adding work
            self._run_local()
            parallel.wait_for(self._oldest_job_ready_or_failed)
            self._collect()
        seq = self._seq
        self._seq += 1
        n = self.n_models
        job = _Job(
            seq,
            request.rid,
            request.step,
            cell,
            request.positions,
            np.zeros(n),
            np.zeros((n, self.natoms, 3)),
            np.zeros((n, 3, 3)),
            local_todo=list(self.local_extra),
        )
        if self.followers:
            buf = np.empty(parallel.work_size(self.natoms))
            parallel.pack_work(buf, seq, request.rid, request.step, cell, request.positions)
            job.work_buffer = buf
            for rank in self.followers:
                job.sends.append(self.comm.Isend(buf, dest=rank, tag=parallel.TAG_CONTROL))
                rbuf = np.empty(parallel.result_size(self.natoms, len(self.layout.models_of[rank])))
                job.receives[rank] = (self.comm.Irecv(rbuf, source=rank, tag=parallel.TAG_RESULT), rbuf)
        self._jobs.append(job)
        return job

    def _run_local(self) -> None:
        for job in self._jobs:
            while job.local_todo:
                member = job.local_todo.pop(0)
                try:
                    r = member.evaluate(job.positions, job.cell, job.rid, job.step)
                except DriverError as exc:
                    self._fatal = self._fatal or exc
                    job.local_todo.clear()
                    return
                job.energies[member.index] = r.energy
                job.forces[member.index] = r.forces
                job.virials[member.index] = r.virial

    def _collect_receives(self) -> None:
        self._check_follower_errors()
        for job in self._jobs:
            for rank, (req, buf) in list(job.receives.items()):
                if req.Test():
                    models = self.layout.models_of[rank]
                    seq, energies, forces, virials = parallel.unpack_results(buf, self.natoms, len(models))
                    if seq != job.seq:
                        self._fatal = self._fatal or DriverError(
                            f"internal error: rank {rank} answered job {seq} for job {job.seq}"
                        )
                    for k, model in enumerate(models):
                        job.energies[model] = energies[k]
                        job.forces[model] = forces[k]
                        job.virials[model] = virials[k]
                    del job.receives[rank]

    def _check_follower_errors(self) -> None:
        for rank in self.followers:
            if self.comm.Iprobe(source=rank, tag=parallel.TAG_ERROR):
                message = self.comm.recv(source=rank, tag=parallel.TAG_ERROR)
                self._fatal = self._fatal or ModelError(f"rank {rank}: {message}")

    def _collect(self) -> None:
        """Take in what has arrived; write every finished row at the head of the queue."""
        self._collect_receives()
        while self._jobs and self._jobs[0].complete() and self._fatal is None:
            self._write(self._jobs.popleft())

    def _write(self, job: _Job) -> Deviation | None:
        self.latest_row_s = time.monotonic() - job.dispatched
        if not job.row:
            return None
        s = self.settings
        row = model_deviation(job.forces, job.virials, relative=s.relative, relative_v=s.relative_v, atomic=s.atomic)
        if self.files is not None and self.files.write(job.rid, job.step, row):
            self.rows_by_bead[job.rid] = self.rows_by_bead.get(job.rid, 0) + 1
            if self.selection is not None:
                self.selection.add(job.rid, job.step, row, job.positions, job.cell)
        return row

    def _write_until(self, target: _Job | None, deadline: float | None = None) -> Deviation | None:
        """Wait for the jobs at the head of the queue and write their rows, up to and
        including ``target`` (every job if None); return ``target``'s row. Stops early
        at a failure or when ``deadline`` (monotonic) passes."""
        self._run_local()
        while self._jobs and self._fatal is None:
            if not parallel.wait_for(self._oldest_job_ready_or_failed, deadline=deadline):
                return None
            if self._fatal is not None:
                break
            head = self._jobs.popleft()
            row = self._write(head)
            if head is target:
                return row
        return None

    def _oldest_job_ready_or_failed(self) -> bool:
        self._collect_receives()
        return not self._jobs or self._jobs[0].complete() or self._fatal is not None

    # -- the end -----------------------------------------------------------------------
    def finish(self, error: DriverError | None) -> DriverError | None:
        """Write what can be written, stop every follower, close the files; return the
        error the run ends with (``error``, or one found while finishing).

        The rows in flight are completed and written: within STOP_DEADLINE_S after a
        clean end, ABORT_DRAIN_S after an error (a signal, a lost server), not at all
        after a follower failed. What is left is abandoned.
        """
        try:
            if self._fatal is None:
                self._resolve_batch(next_rid=None)
                wait = STOP_DEADLINE_S if error is None else self.abort_drain_s()
                self._write_until(None, deadline=time.monotonic() + wait)
                if self._jobs and self._fatal is None:
                    log.warning("%d deviation row(s) in flight abandoned after %.0f s", len(self._jobs), wait)
            error = error or self._fatal
            for job in self._jobs:  # abandoned after a failure
                for req, _ in job.receives.values():
                    req.Cancel()
                    req.Wait()
                job.receives.clear()
        finally:
            self._stop_followers(error.exit_status if error is not None else 0)
            if self.files is not None:
                self.files.close()
        return error

    def abort_drain_s(self) -> float:
        """How long to wait for the rows in flight after an error (see ABORT_DRAIN_S)."""
        return min(ABORT_DRAIN_MAX_S, max(ABORT_DRAIN_S, 2.0 * self.latest_row_s))

    def _stop_followers(self, status: int) -> None:
        if not self.followers:
            return
        stop = np.array([parallel.KIND_STOP, float(status)])
        sends = [self.comm.Isend(stop, dest=rank, tag=parallel.TAG_CONTROL) for rank in self.followers]
        for job in self._jobs:
            sends.extend(job.sends)
        if not parallel.wait_for(lambda: all(s.Test() for s in sends), deadline=time.monotonic() + STOP_DEADLINE_S):
            log.error("followers did not take the stop message within %.0f s: aborting the MPI job", STOP_DEADLINE_S)
            self.comm.Abort(status or 1)


def committee_extras(job: _Job) -> bytes:
    """i-PI's committee JSON (``<ffcommittee>`` with ``<parse_json>``, ipi/engine/
    forcefields.py FFCommittee.gather): every model's energy, forces (3N, flat) and virial
    (9, flat, i-PI's orientation), in atomic units, which i-PI takes as they are."""
    n = len(job.energies)
    return json.dumps(
        {
            "committee_pot": units.energy_to_wire(job.energies).tolist(),
            "committee_force": units.forces_to_wire(job.forces).reshape(n, -1).tolist(),
            "committee_virial": units.virial_to_wire(job.virials).reshape(n, 9).tolist(),
        }
    ).encode()


def follower_loop(comm, members: Sequence[LocalModel], *, natoms: int, signals: StopSignals | None = None) -> int:
    """Serve the leader until it sends STOP. After a clean run return 0; after a failed
    one raise ReportedError (not printed here): the leader, which prints the reason, ends
    the job with the status (a follower exiting first with an error would make MPICH kill
    the leader before it reports).

    After SIGTERM/SIGINT a follower goes on serving, so that the leader can finish the
    request in hand, but gives up with the signal's status if no STOP comes within
    FOLLOWER_SIGNAL_GRACE_S."""
    signals = signals if signals is not None else NoSignals()
    work = np.empty(parallel.work_size(natoms))
    out = np.empty(parallel.result_size(natoms, len(members)))
    pending_send = None
    failed = False
    while True:
        req = comm.Irecv(work, source=0, tag=parallel.TAG_CONTROL)
        while not parallel.wait_for(req.Test, deadline=time.monotonic() + 1.0):
            if signals.received is not None and _grace_over(signals):
                req.Cancel()
                req.Wait()
                raise Stopped(signals.received)
        if work[0] == parallel.KIND_STOP:
            if pending_send is not None:
                parallel.wait_for(pending_send.Test)
            status = int(work[1])
            log.debug("stopped by the leader (run status %d)", status)
            if status:
                raise ReportedError("", status, print_here=False)
            return 0
        if failed:
            continue  # the leader knows; wait for its STOP
        item = parallel.unpack_work(work, natoms)
        try:
            results = [m.evaluate(item.positions, item.cell, item.rid, item.step) for m in members]
        except Exception as exc:  # a model failure, or a bug: report it, do not hang the leader
            failed = True
            message = (
                str(exc) if isinstance(exc, DriverError) else f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            )
            comm.send(message, dest=0, tag=parallel.TAG_ERROR)
            continue
        if pending_send is not None:
            parallel.wait_for(pending_send.Test)  # `out` is free again
        parallel.pack_results(
            out, item.seq, [r.energy for r in results], [r.forces for r in results], [r.virial for r in results]
        )
        pending_send = comm.Isend(out, dest=0, tag=parallel.TAG_RESULT)


def _grace_over(signals: StopSignals) -> bool:
    if signals.received_at is None:
        return False
    return time.monotonic() - signals.received_at > FOLLOWER_SIGNAL_GRACE_S
