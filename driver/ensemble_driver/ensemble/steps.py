"""Rank 0's bookkeeping of beads and steps: which request is which bead at which step,
and which of them get a deviation row (the rank roles: see :mod:`layout`).

With one structure per POSDATA the server says the request id (the bead) and the session
counts its steps. With i-PI's batched transport the server says only the first request id
of a batch, so the steps are counted here, once the next batch (or the end of the run)
tells how many structures of a batch were real beads (see :meth:`BeadSteps.resolve_batch`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..wire.ipi_input import RequestIds
from ..wire.session import BatchRequest

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolvedBatch:
    """A batch whose real structures are known: ``beads[k]`` is the (request id, step) of
    structure ``k``; the structures after ``len(beads)`` were padding (or another client's)."""

    request: BatchRequest
    energy: np.ndarray
    forces: np.ndarray
    virial: np.ndarray
    beads: list[tuple[int, int]]


class BeadSteps:
    """Deviation steps per bead, and the steps of i-PI's batched transport."""

    def __init__(
        self,
        *,
        out_freq: int,
        nbeads: int,
        deviation_on: bool,
        near_freq: int = 0,
        trust_lo: float | None = None,
        ids: RequestIds | None = None,
    ):
        self.out_freq = out_freq
        self.ids = ids  # --ipi-input: request id -> (series, i-PI step)
        self.nbeads = nbeads
        self.deviation_on = deviation_on
        # --out-freq-near: a bead whose latest row reached trust_lo gets a row every near_freq steps
        self.near_freq = near_freq
        self.trust_lo = trust_lo
        self.near: set[int] = set()
        self.extra_rows: dict[int, int] = {}  # per bead: rows at steps out_freq alone would not have
        self._warned_rids: set[int] = set()
        # i-PI's batched transport (see resolve_batch()): the last batch, until the next one
        # tells how many of its structures were real, and the steps counted per request id
        self._pending_batch: tuple[BatchRequest, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None
        self.batch_steps: dict[int, int] = {}
        self._warned_batch_gap = False

    def locate(self, rid: int, evaluation: int) -> tuple[int, int] | None:
        """(bead, step) of the ``evaluation``-th structure of request ``rid``: with
        --ipi-input the series (system and bead) and i-PI's step, None for a request that
        is no bead (an estimator's clone) or an MTS inner level's intermediate structure;
        without it the request id and the evaluation count."""
        if self.ids is None:
            return rid, evaluation
        return self.ids.locate(rid, evaluation)

    def row_due(self, rid: int, step: int, *, warn: bool = True) -> bool:
        """A deviation row for request ``rid`` at ``step``: a deviation step of a bead
        below ``nbeads``. With ``warn``, a request id >= ``nbeads`` at a deviation step is
        named once."""
        if not self.deviation_on:
            return False
        regular = step % self.out_freq == 0
        if not (regular or (rid in self.near and step % self.near_freq == 0)):
            return False
        if rid < self.nbeads:
            if not regular:
                self.extra_rows[rid] = self.extra_rows.get(rid, 0) + 1
            return True
        if warn and rid not in self._warned_rids:
            self._warned_rids.add(rid)
            log.warning(
                "request id %d >= --nbeads %d: no deviation rows for it (an estimator's clone, or "
                "pass --nbeads P for a path-integral run with P beads)",
                rid,
                self.nbeads,
            )
        return False

    def needs_latest_row(self, rid: int, step: int) -> bool:
        """Whether a row at ``step`` depends on the bead's latest row (--out-freq-near):
        a step of the dense series only, for a bead with rows."""
        return bool(
            self.near_freq
            and self.deviation_on
            and rid < self.nbeads
            and step % self.near_freq == 0
            and step % self.out_freq != 0
        )

    def observe(self, rid: int, max_devi_f: float) -> None:
        """A bead's newest row: dense rows from now on while it is at or above trust_lo."""
        if not self.near_freq:
            return
        if max_devi_f >= self.trust_lo:  # type: ignore[operator]
            self.near.add(rid)
        else:
            self.near.discard(rid)

    def hold_batch(self, request: BatchRequest, energy: np.ndarray, forces: np.ndarray, virial: np.ndarray) -> None:
        """Keep a batch and model 0's answers to it until the next batch resolves it."""
        self._pending_batch = (request, (energy, forces, virial))

    def resolve_batch(self, next_rid: int | None) -> ResolvedBatch | None:
        """Count the real structures of the batch held, give each its bead and step, and
        return it (None if no batch is held). ``next_rid`` is the next batch's first
        request id, None at the end of the run."""
        if self._pending_batch is None:
            return None
        request, (energy, forces, virial) = self._pending_batch
        self._pending_batch = None
        real = self._real_structures(request.rid, len(energy), next_rid)
        beads = []
        for k in range(real):
            rid = request.rid + k
            step = self.batch_steps.get(rid, 0)
            self.batch_steps[rid] = step + 1
            beads.append((rid, step))
        return ResolvedBatch(request, energy, forces, virial, beads)

    def _real_structures(self, first: int, size: int, next_rid: int | None) -> int:
        if self.ids is not None:  # the ids i-PI queues for this forcefield: the rest is padding
            real = 0
            while real < size and first + real in self.ids.index:
                real += 1
            return max(real, 1)
        nbeads = self.nbeads
        if first >= nbeads:
            return 1  # an estimator's clone: no rows, and no way to tell more
        if next_rid is not None and next_rid > first:
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
            return real
        return min(size, nbeads - first)  # the batch closed its step
