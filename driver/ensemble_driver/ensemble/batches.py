"""i-PI's batched transport (``<batch_size>``) on rank 0: a POSDATA of several
structures, answered by model 0 in one call; which of them are beads, and so get a row,
is known only once the next batch (or the end of the run) tells (:class:`steps.BatchBeads`).
Composed into :class:`leader.Leader`, whose pieces (steps, jobs, model 0) it uses."""

from __future__ import annotations

import numpy as np

from ..errors import ModelError, ProtocolError, UnsupportedTransport
from ..wire.session import BatchRequest, Reply, Request


def check_cell(cell: np.ndarray | None, where: str) -> None:
    if cell is not None and abs(np.linalg.det(cell)) < 1e-8:
        raise ProtocolError(
            f"the server sent a cell of zero volume ({where}) for a periodic system; if the "
            "system is not periodic, run with --no-pbc"
        )


class BatchedTransport:
    """The leader's side of i-PI's batches (a part of :class:`leader.Leader`)."""

    def begin_batches(self, batch_size: int, init_every_step: bool) -> None:
        """Called at the INIT that announces batching: refuse what cannot work with it."""
        if self.settings.out_freq_near:
            raise UnsupportedTransport(
                "--out-freq-near cannot be used with i-PI's batched transport (<batch_size>) yet: a batch's "
                "rows are known only once the next batch arrives"
            )
        if self.layout.connections > 1:
            raise UnsupportedTransport(
                f"i-PI's batched transport (<batch_size>) with --connections {self.layout.connections}: "
                "a batch's beads are told apart only with one connection; use one connection and "
                "--model0-ranks to split the batches over ranks"
            )
        for flag, on in (
            ("--committee-json", self.settings.committee_json),
            ("--bias-uncertainty", self.settings.bias_uncertainty is not None),
        ):
            if on:
                raise UnsupportedTransport(f"{flag} cannot be used with i-PI's batched transport (<batch_size>) yet")
        if self.settings.extras:
            raise UnsupportedTransport(
                "--extras cannot be used with i-PI's batched transport (<batch_size>): which bead each "
                "structure of a batch is becomes known only with the next batch"
            )
        if self.steps.deviation_on and not init_every_step:
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
        if self._unchecked_template is not None:
            self._check_order(request.positions[0])
        cells = request.cells if self.periodic else None
        if cells is not None:
            for cell in cells:
                check_cell(cell, f"batch starting at request id {request.rid}")
        distinct, source = distinct_structures(request.positions, cells)
        leading = int(distinct[-1]) + 1  # structures up to the last that differs from the one before
        self._resolve_batch(next_rid=request.rid, next_leading=leading)
        cells_in = None if cells is None else cells[distinct]
        parameters, _ = self._parameters(request.init)
        if self.replicas is not None:
            if parameters is not None:
                raise UnsupportedTransport(
                    "i-PI's <parameters> (fparam, aparam) with --model0-ranks > 1: the batch replicas do not "
                    "receive them yet; use one model-0 rank"
                )
            result = self.replicas.evaluate_batch(request.positions[distinct], cells_in)
        else:
            extra = {} if parameters is None else {"parameters": parameters}  # the server's, if it sent any
            result = self.model0.model.evaluate_batch(
                request.positions[distinct], cells_in, self.model0.atom_types, **extra
            )
        energy, forces, virial = result.energy[source], result.forces[source], result.virial[source]
        if not (np.isfinite(energy).all() and np.isfinite(forces).all() and np.isfinite(virial).all()):
            raise ModelError(
                f"model 0 ({self.model0.model.path}) returned non-finite energy, forces or virial in the "
                f"batch starting at request id {request.rid}"
            )
        self.steps.batches.hold(request, (energy, forces, virial), leading)
        return [Reply(float(energy[k]), forces[k], virial[k], b"") for k in range(len(energy))]

    def _resolve_batch(self, next_rid: int | None, next_leading: int | None = None) -> None:
        """Give the structures of the batches held their beads and steps, as far as they
        are known now, and start the deviation of those at a deviation step."""
        for batch in self.steps.batches.resolve(next_rid, next_leading):
            request = batch.request
            parameters, server = self._parameters(request.init)
            for k, (rid, evaluation) in enumerate(batch.beads):
                where = self.steps.locate(rid, evaluation, request.positions[k])
                if where is None:
                    continue
                rid, step = where
                if self.steps.row_due(rid, step, warn=False):
                    cell = None if not self.periodic else request.cells[k]
                    structure = Request(rid, step, request.cells[k], request.positions[k])
                    job = self.jobs.dispatch(structure, cell, parameters=parameters, server_parameters=server)
                    job.put(0, batch.energy[k], batch.forces[k], batch.virial[k])


def distinct_structures(positions: np.ndarray, cells: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The indices of the distinct consecutive structures of a batch, and for every slot
    the distinct structure it copies."""
    # distinct consecutive structures only: padding, and step 0 where every bead is
    # the same, are copies of the structure before them
    same = np.array(
        [False]
        + [
            np.array_equal(positions[k], positions[k - 1]) and (cells is None or np.array_equal(cells[k], cells[k - 1]))
            for k in range(1, len(positions))
        ]
    )
    distinct = np.flatnonzero(~same)
    source = np.cumsum(~same) - 1  # the distinct structure each slot copies
    return distinct, source
