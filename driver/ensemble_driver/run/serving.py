"""The connection ranks' run: connect, serve the server with a :class:`ensemble.leader.Leader`
until the run ends, finish (the rank roles: see :mod:`ensemble.layout`; several connections:
see :mod:`ensemble.connections`).

Rank 0 serves its connection, writes every row and ends the job; with ``--connections
K`` ranks 1..K-1 serve one connection each and report to rank 0.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from .. import ranks
from ..ensemble import messages
from ..ensemble.connections import Done, Hub, Link, StoppedByRank0
from ..ensemble.jobs import JobPipeline
from ..ensemble.layout import Layout
from ..ensemble.leader import DeviationSettings, Leader, RankZero
from ..ensemble.replicas import Model0Replicas
from ..ensemble.rows import BeadRows, RemoteRows
from ..ensemble.steps import ids_warning
from ..errors import DriverError, ReportedError, one_line
from ..models.local import LocalModel
from ..outputs.sink import RowSink
from ..signals import Stopped, StopSignals
from ..wire.ipi_input import RequestIds, system_names
from ..wire.protocol import Wire
from ..wire.session import EndReason, Session
from ..wire.template import Template
from ..wire.transport import Address, connect
from .config import RunConfig
from .continuation import record_peer
from .ipi_process import IpiProcess, connect_to_started, ipi_outcome
from .progress import Progress, WatchedHandler, WatchedSink, selection_counts

log = logging.getLogger(__name__)


@dataclass
class Served:
    """What a connection rank serves with."""

    config: RunConfig
    comm: Any
    layout: Layout
    address: Address
    template: Template
    members: list[LocalModel]
    periodic: bool
    signals: StopSignals
    counter: ranks.StepCounter | None
    hosts: list[str]
    ids: RequestIds | None = None  # --ipi-input: which request id is which bead
    total_steps: int | None = None  # --ipi-input: i-PI's total steps
    ipi: IpiProcess | None = None  # --start-ipi, on rank 0: the i-PI it started

    def leader(self, sink: BeadRows | RemoteRows, watch=None, rank0: RankZero | None = None) -> Leader:
        """This rank's leader: model 0 here, the other models through a job pipeline."""
        model0 = self.members[0]
        jobs = JobPipeline(
            self.comm,
            self.layout,
            self.members[1:],
            natoms=self.template.natoms,
            rank_timeout=self.config.server_timeout or None,
            hosts=self.hosts,
            slots=messages.parameter_slots(model0.model),
        )
        settings = deviation_settings(self.config, self.ids)
        return Leader(
            jobs, model0, settings, sink, periodic=self.periodic, template=self.template, watch=watch, rank0=rank0
        )


def deviation_settings(config: RunConfig, ids: RequestIds | None = None) -> DeviationSettings:
    """The leader's settings: the run settings of the same names."""
    shared = {f.name: getattr(config, f.name) for f in fields(DeviationSettings) if hasattr(config, f.name)}
    return DeviationSettings(**shared, ids=ids)


#: Tests only: "N:PATH" makes rank 0 stop answering once it has numbered its N-th structure
#: (it touches PATH and waits to be killed), so that a test can kill a driver while i-PI
#: waits for its answer: a timing no real server can be asked for.
STALL_VARIABLE = "ENSEMBLE_DRIVER_TEST_STALL"


def numbering(counter, journal):
    """How every structure is numbered: by the bead step counter that several connections
    share, by the journal (one connection, --ipi-input), or by the session itself (None)."""
    if counter is not None:
        return lambda rid, h, positions: counter.next_step(rid)
    if journal is None:
        return None
    stall = os.environ.get(STALL_VARIABLE)
    if not stall:
        return journal.number
    at, path = stall.split(":", 1)
    seen = [0]

    def number(rid, h, positions):
        evaluation = journal.number(rid, h, positions)
        seen[0] += 1
        if seen[0] == int(at):
            Path(path).touch()
            threading.Event().wait()  # until killed
        return evaluation

    return number


def run_session(
    served: Served, leader: Leader, idle=None, progress: Progress | None = None
) -> tuple[Session | None, EndReason | None, DriverError | None]:
    """Connect and serve until the server ends the run; (session, how it ended, error).
    With a journal (rank 0, see run/continuation) the served i-PI process is named in it
    and every structure is numbered by it."""
    session = reason = error = None
    config, signals = served.config, served.signals
    try:
        with signals.interruptible():
            if served.ipi is not None:  # the i-PI rank 0 started: given up on at once if it ends
                sock = connect_to_started(
                    served.ipi, served.address, config.connect_timeout, server_timeout=config.server_timeout
                )
            else:
                sock = connect(served.address, config.connect_timeout, server_timeout=config.server_timeout)
        record_peer(leader.journal, served.address)
        with sock:
            session = Session(
                Wire(sock, served.template.natoms),
                leader if progress is None else WatchedHandler(leader, progress),
                init_every_step=config.init_each,
                after_reply=leader.after_reply,
                signals=signals,
                numbering=numbering(served.counter, leader.journal),
                idle=idle,
                server_timeout=config.server_timeout,
            )
            reason = session.run()
            log.info("run ended: %s", reason.value)
    except DriverError as exc:
        error = exc
    except BaseException as exc:
        leader.finish(DriverError(f"interrupted: {one_line(exc)}"))
        raise
    return session, reason, error


def serve_rank0(served: Served, elements, sink: RowSink | None) -> int:
    """Rank 0: its connection, every row, and the end of the job."""
    config, layout, template = served.config, served.layout, served.template
    _log_start(served, elements, sink)
    if sink is not None:
        sink.set_atoms(elements, served.members[0].atom_types)
    progress = status_lines(served, sink)
    watched = WatchedSink(sink, progress) if progress is not None and sink is not None else sink
    rows = BeadRows(watched, out_freq=config.out_freq if config.connections > 1 else None)
    hub = Hub(served.comm, layout.connection_ranks[1:], rows) if config.connections > 1 else None
    replicas = None
    if layout.batch_replicas:
        replicas = Model0Replicas(
            served.comm,
            served.members[0],
            layout.batch_replicas,
            template.natoms,
            deadline_s=config.server_timeout or None,
            hosts=served.hosts,
        )
    watch = hub.idle if hub is not None else None
    going_on = sink.continuation if sink is not None else None
    journal = going_on.journal if going_on is not None else None
    leader = served.leader(rows, watch, RankZero(replicas, hub, journal))
    if going_on is not None and going_on.mode is not None:  # a driver replacing one that stopped
        leader.replay(going_on.replay)
        replayed = {p.series: p.step for p in going_on.replay}
        rows.written_until = {
            k: max(going_on.last_steps.get(k, -1), replayed.get(k, -1)) for k in range(len(sink.names))
        }
    if sink is not None and sink.selection is not None and config.out_freq_near:
        sink.selection.extra_rows = leader.steps.extra_rows  # counted by the bead steps, reported with the classes
    session, _, error = run_session(served, leader, idle=watch, progress=progress)
    error = leader.finish(error)
    if served.ipi is not None:
        fired = sink is not None and sink.stop_after_failed > 0 and sink.failed >= sink.stop_after_failed
        error = ipi_outcome(served.ipi, error, served.signals.received, stop_rule=fired)
    if error is None and journal is not None:
        journal.remove()  # the server ended the run: nothing is left to continue
    _log_end(served, session, leader, hub, sink)
    if error is not None:
        raise error
    return 0


def status_lines(served: Served, sink: RowSink | None) -> Progress | None:
    """Rank 0's status lines (--status-every), or None when off."""
    config, ids = served.config, served.ids
    if not config.status_every:
        return None
    systems, system_of_bead = [""], None
    if ids is not None and len(ids.systems) > 1:
        systems = system_names(ids)
        order = list(dict.fromkeys(s.system for s in ids.series))
        system_of_bead = [order.index(s.system) for s in ids.series]
    return Progress(
        config.status_every,
        total=served.total_steps,
        ids=ids,
        systems=systems,
        system_of_bead=system_of_bead,
        counts=selection_counts(sink),
        deviation=sink is not None,
    )


def _log_start(served: Served, elements, files: RowSink | None) -> None:
    """The run's start-up lines on rank 0: the system, the parameters, the ensemble."""
    config, layout, template = served.config, served.layout, served.template
    log.info(
        "%d atoms (%s), %s; model 0: %s",
        template.natoms,
        ", ".join(f"{n} {e}" for e, n in sorted(Counter(elements).items())),
        "periodic" if served.periodic else "not periodic",
        config.models[0],
    )
    if served.members[0].model.parameters.describe():
        log.info("every model evaluated with %s", served.members[0].model.parameters.describe())
    if files is not None:
        log.info(
            "%d models on %d rank(s) %s; deviation every %d steps to %s",
            layout.n_models,
            layout.n_ranks,
            [list(m) for m in layout.models_of],
            config.out_freq,
            ", ".join(files.names) if len(files.names) <= 4 else f"{files.names[0]} .. {files.names[-1]}",
        )


def _log_end(served: Served, session, leader: Leader, hub: Hub | None, files: RowSink | None) -> None:
    """The run's closing lines on rank 0: evaluations per request id, rows per bead."""
    config = served.config
    if session is not None:
        counts = session.stats.steps_by_rid if session.stats.batch_size == 1 else leader.batch_steps
        if hub is not None:
            log.info("connection 0 (rank 0) ended after %d evaluations", sum(counts.values()))
            counts = hub.evaluations(counts)
        log.info(
            "evaluations per request id: %s%s",
            dict(sorted(counts.items())),
            ""
            if config.init_each
            else " (one series: without --init-each the request ids after the first are not asked for)",
        )
        if served.ids is None and config.init_each and leader.steps.deviation_on:
            warning = ids_warning(counts, config.nbeads)
            if warning is not None:
                log.warning(warning)
    if files is not None:
        log.info("deviation rows written per bead: %s", dict(sorted(leader.rows_by_bead.items())))
    if leader.one_client is not None and leader.one_client.warning is not None:
        log.warning(leader.one_client.warning)
    if leader.bias_log:
        sigma, bias = np.array(leader.bias_log).T
        log.info(
            "--bias-uncertainty %g eV: %d answers biased; sigma_E mean %.4g eV, largest %.4g eV; bias energy mean %.4g eV",
            config.bias_uncertainty,
            len(sigma),
            sigma.mean(),
            sigma.max(),
            bias.mean(),
        )


def serve_connection(served: Served) -> int:
    """A connection rank other than 0: its connection, its rows sent to rank 0, then how
    it ended (see :mod:`ensemble.connections`). Its errors are printed by rank 0."""
    link = Link(served.comm)
    leader = served.leader(RemoteRows(served.comm), watch=link.idle)
    session, reason, error = run_session(served, leader, idle=link.idle)
    error = leader.finish(error)
    evaluations = dict(session.stats.steps_by_rid) if session is not None else {}
    if isinstance(error, StoppedByRank0):
        done = Done("stopped", error.exit_status, "", evaluations)
    elif isinstance(error, Stopped):  # SIGTERM/SIGINT: mpiexec gave it to every rank, rank 0 too
        done = Done("signal", error.exit_status, str(error), evaluations)
    elif error is not None:
        done = Done("error", error.exit_status, str(error), evaluations)
    else:
        done = Done("exit" if reason is EndReason.EXIT else "eof", 0, "", evaluations)
    link.finish(done)
    if done.status:
        raise ReportedError("", done.status, print_here=False)
    return 0
