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
in turn and send the results back (see :mod:`workers`, and :mod:`messages` for the
messages).

Failure is collective: a follower that fails reports to the leader, which finishes the
request in hand, writes the rows it has, stops every follower and exits with the
failure's status; the leader never leaves a follower waiting.

The leader (:class:`Leader`, the session's handler) answers with model 0 and composes
pieces with one job each, the data going one way: :mod:`steps` says which request is
which bead and step and whether it gets a deviation; :mod:`jobs` dispatches the
deviation jobs to the followers, runs the leader's own extra models, collects the
results and returns the finished jobs; the leader hands each to :mod:`rows`, which
writes its row (in step order), then tells the bead steps the row and releases its
structure from the journal (:meth:`Leader._hand_on`); :mod:`extras` makes the answers'
committee or deviation JSON; :mod:`ending` drains, stops the followers and closes the
files. The followers' side is :func:`workers.follower_loop`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from ..deviation import Deviation, DeviationKind, uncertainty_bias
from ..errors import ConfigError, DriverError
from ..models.local import LocalModel
from ..models.parameters import SERVER_KEYS, Parameters, from_server
from ..wire.ipi_input import RequestIds
from ..wire.session import Reply, Request
from ..wire.template import Template, order_mismatch
from . import ending
from .batches import BatchedTransport, check_cell
from .connections import Hub
from .extras import bias_extras, committee_extras, deviation_extras, deviation_values
from .jobs import Job, JobPipeline
from .journal import Journal, Pending
from .replicas import Model0Replicas
from .rows import BeadRows, RemoteRows, RowWriter
from .steps import BeadSteps, OneClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviationSettings:
    out_freq: int = 100
    nbeads: int = 1
    kind: DeviationKind = field(default_factory=DeviationKind)  # what a row holds
    extras: bool = False
    committee_json: bool = False  # --committee-json
    out_freq_near: int = 0  # --out-freq-near (0: off)
    trust_lo: float | None = None
    ids: RequestIds | None = None  # --ipi-input: which request id is which bead, at which i-PI step
    bias_uncertainty: float | None = None  # --bias-uncertainty TAU (eV)
    alpha: float = 1.0  # --alpha: the committee's calibration, for --committee-json and --bias-uncertainty


@dataclass(frozen=True)
class RankZero:
    """What only rank 0's leader has: the batch replicas of model 0 (--model0-ranks with
    i-PI's batched transport), the hub of the other connections (--connections), and the
    journal a driver replacing this one continues from (run/continuation)."""

    replicas: Model0Replicas | None = None
    hub: Hub | None = None
    journal: Journal | None = None


class Leader(BatchedTransport):
    """The session handler of a connection rank: answers with model 0, runs the ensemble
    beside it through ``jobs`` and writes the finished jobs' rows into ``sink``."""

    def __init__(
        self,
        jobs: JobPipeline,
        model0: LocalModel,
        settings: DeviationSettings,
        sink: BeadRows | RemoteRows,
        *,
        periodic: bool,
        template: Template | None = None,
        watch: Callable[[], None] | None = None,
        rank0: RankZero | None = None,
    ):
        self.jobs = jobs
        self.model0 = model0
        self.settings = settings
        self.sink = sink
        self.rows = RowWriter(sink, settings.kind)
        self.periodic = periodic
        self._unchecked_template = template  # its atom order, checked on the first structure
        self.watch = watch  # after each reply: has another connection ended the run? (may raise)
        self.layout = jobs.layout
        rank0 = rank0 or RankZero()
        self.replicas, self.hub, self.journal = rank0.replicas, rank0.hub, rank0.journal
        self._warned_idle_replicas = False
        self.steps = BeadSteps(
            out_freq=settings.out_freq,
            nbeads=settings.nbeads,
            deviation_on=settings.out_freq > 0 and self.layout.n_models > 1,
            near_freq=settings.out_freq_near,
            trust_lo=settings.trust_lo,
            ids=settings.ids,
        )
        # --ipi-input, one connection: a second job on the same socket is told (steps.OneClient)
        one = settings.ids is not None and self.layout.connections == 1
        self.one_client = OneClient(settings.ids) if one else None
        self.bias_log: list[tuple[float, float]] = []  # --bias-uncertainty: (sigma_E, bias energy) per answer
        self._last_job: dict[int, Job] = {}  # per bead, its latest deviation job (--out-freq-near)
        self._server_parameters: dict = {}  # i-PI's <parameters> texts -> (Parameters, arrays)

    def _hand_on(self, finished: Sequence[Job], target: Job | None = None) -> Deviation | None:
        """The finished jobs' rows, written in order; each row told to the bead steps
        (--out-freq-near) and its structure released from the journal. Returns
        ``target``'s row, if it is among them and has one."""
        wanted = None
        for job in finished:
            row = self.rows.write(job)
            if row is not None:
                self.steps.observe(job.rid, row.max_devi_f)
            if self.journal is not None:
                self.journal.release(job.slot)
            if job is target:
                wanted = row
        return wanted

    def _complete(self, target: Job | None) -> Deviation | None:
        """Wait for ``target`` (and the jobs before it) and write their rows; its row."""
        return self._hand_on(self.jobs.complete_until(target), target)

    def replay(self, pending: Sequence[Pending]) -> None:
        """The rows a stopped driver left unwritten, recomputed by every model from the
        structures its journal kept, before this driver serves (see run/continuation)."""
        for p in pending:
            request = Request(p.series, p.step, p.cell, p.positions)
            cell = p.cell if self.periodic else None
            job = self.jobs.dispatch(request, cell)
            job.slot = p.slot
            result = self.model0.evaluate(p.positions, cell, p.series, p.step, None)
            job.put(0, result.energy, result.forces, result.virial)
        if pending:
            self._complete(job)

    @property
    def batch_steps(self) -> dict[int, int]:
        """Evaluations per request id with i-PI's batched transport."""
        return self.steps.batch_steps

    @property
    def rows_by_bead(self) -> dict[int, int]:
        return getattr(self.sink, "rows_by_bead", {})

    # -- the session's handler ---------------------------------------------------------
    def _check_order(self, positions: np.ndarray) -> None:
        """The first structure: refuse a template whose atoms are the server's in another order."""
        template, self._unchecked_template = self._unchecked_template, None
        if template is not None and (reason := order_mismatch(template, positions)) is not None:
            raise ConfigError(reason)

    def __call__(self, request: Request) -> Reply:
        if self._unchecked_template is not None:
            self._check_order(request.positions)
        cell = request.cell if self.periodic else None
        check_cell(cell, f"bead {request.rid}, step {request.step}")
        if self.replicas is not None and not self._warned_idle_replicas:
            self._warned_idle_replicas = True
            log.warning(
                "--model0-ranks %d: ranks %s evaluate model 0 only for i-PI's batched transport (<batch_size>), "
                "but this server sends one structure per message, so they stay idle; use --connections to "
                "serve the beads in parallel",
                self.layout.model0_ranks,
                ", ".join(map(str, self.replicas.replicas)),
            )
        where = self.steps.locate(request.rid, request.step, request.positions)
        if where is not None:
            request = replace(request, rid=where[0], step=where[1])
            if self.one_client is not None:
                self.one_client.seen(*where)
        if where is not None and self.steps.needs_latest_row(request.rid, request.step):
            # --out-freq-near: whether this step gets a row depends on the bead's latest row
            self._complete(self._last_job.get(request.rid))
        parameters, server = self._parameters(request.init)
        if self.settings.committee_json or self.settings.bias_uncertainty is not None:  # every model, every structure
            row = where is not None and self.steps.row_due(request.rid, request.step, warn=False)
            job = self.jobs.dispatch(request, cell, row=row, parameters=parameters, server_parameters=server)
        elif where is not None and self.steps.row_due(request.rid, request.step):
            job = self.jobs.dispatch(request, cell, parameters=parameters, server_parameters=server)
        else:
            job = None
        if job is not None and job.row:
            self._last_job[request.rid] = job
            if self.journal is not None:
                job.slot = self.journal.hold(request.rid, request.step, request.cell, request.positions)
        result = self.model0.evaluate(request.positions, cell, request.rid, request.step, parameters)
        if job is not None:
            job.put(0, result.energy, result.forces, result.virial)
        if self.settings.bias_uncertainty is not None:
            return self._biased(job, result)
        return Reply(result.energy, result.forces, result.virial, self._extras(job))

    def _biased(self, job: Job, result) -> Reply:
        """--bias-uncertainty: the answer for E_0 - TAU sigma_E from every model's results
        on this structure (deviation.uncertainty_bias); model 0's own answer if a model
        failed (after_reply then ends the run)."""
        row = self._complete(job)
        if self.jobs.fatal is not None:
            return Reply(result.energy, result.forces, result.virial, b"")
        tau = self.settings.bias_uncertainty
        energy, forces, virial, sigma = uncertainty_bias(
            job.energies, job.forces, job.virials, tau, self.settings.alpha
        )
        self.bias_log.append((sigma, energy - result.energy))
        deviation = None
        if self.settings.extras:
            deviation = deviation_values(row if job.row else None, self.jobs.natoms, self.settings.kind.atomic)
        return Reply(energy, forces, virial, bias_extras(sigma, energy - result.energy, deviation))

    def _parameters(self, init) -> tuple[Parameters | None, tuple]:
        """The frame and atomic parameters and the charge and spin of the server's force
        field (i-PI's ``<parameters>{fparam: ..., aparam: ..., charge_spin: ...}``, in the
        INIT before the structure) over the run's own, checked against model 0 once per
        distinct values; (None, (None, None, None)) when the server sends none."""
        texts = (None, None, None) if init is None else tuple(init.get(k) for k in SERVER_KEYS)
        if texts == (None, None, None):
            return None, (None, None, None)
        found = self._server_parameters.get(texts)
        if found is None:
            parameters = from_server(self.model0.model.parameters, *texts)
            self.model0.model.check_parameters(parameters)
            given = (parameters.fparam, parameters.aparam, parameters.charge_spin)
            server = tuple(None if text is None else np.asarray(value, float) for text, value in zip(texts, given))
            found = self._server_parameters[texts] = (parameters, server)
            log.info("i-PI's <parameters>: every model evaluated with %s", parameters.describe())
        return found

    def _extras(self, job: Job | None) -> bytes:
        if self.settings.committee_json:
            self._complete(job)  # the answer needs every model's result for this structure
            # after a failure the answer goes without the committee; after_reply raises it
            return committee_extras(job, self.settings.alpha) if self.jobs.fatal is None else b""
        if self.settings.extras:
            # --extras needs this step's row now
            row = self._complete(job) if job is not None else None
            return deviation_extras(row, self.jobs.natoms, self.settings.kind.atomic)
        return b""

    def after_reply(self) -> None:
        """Called once the answer is on its way: local extra models, then collect."""
        self.jobs.run_local()
        self._hand_on(self.jobs.collect())
        if self.jobs.fatal is not None:
            raise self.jobs.fatal
        if self.watch is not None:
            self.watch()  # the other connections' rows, and their ends

    # -- the end -----------------------------------------------------------------------
    def finish(self, error: DriverError | None) -> DriverError | None:
        """Write what can be written, stop every follower, close the files; return the
        error the run ends with (see :func:`ending.finish`)."""
        rank0 = isinstance(self.sink, BeadRows)
        stop = [*self.layout.batch_replicas, *self.layout.ensemble_ranks] if rank0 else []
        return ending.finish(
            self.jobs,
            self.rows,
            error,
            drain=self._drain,
            others=self.hub.finish if self.hub is not None else None,
            stop=stop,
        )

    def _drain(self, deadline: float) -> None:
        """The rows in flight at the end: the last batch's deviation dispatched, then
        every job completed and written, until ``deadline`` (monotonic)."""
        self._resolve_batch(next_rid=None)
        self._hand_on(self.jobs.complete_until(None, deadline=deadline))

    def abort_drain_s(self) -> float:
        """How long to wait for the rows in flight after an error (see ending.ABORT_DRAIN_S)."""
        return ending.abort_drain_s(self.rows.latest_row_s)
