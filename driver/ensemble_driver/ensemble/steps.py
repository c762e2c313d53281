"""Rank 0's bookkeeping of beads and steps: which request is which bead at which step,
and which of them get a deviation row (the rank roles: see :mod:`layout`).

With one structure per POSDATA the server says the request id (the bead) and the session
counts its steps. With i-PI's batched transport the server says only the first request id
of a batch, so the steps are counted here, once the next batch (or the end of the run)
tells how many structures of a batch were real beads (see :class:`BatchBeads`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
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
        self.batches = BatchBeads(nbeads, ids)  # i-PI's batched transport

    def locate(self, rid: int, evaluation: int, positions: np.ndarray | None = None) -> tuple[int, int] | None:
        """(bead, step) of the ``evaluation``-th structure of request ``rid``: with
        --ipi-input the series (system and bead) and i-PI's step, None for a request that
        is no bead (an estimator's clone) or an MTS inner level's intermediate structure;
        without it the request id and the evaluation count. ``positions``: the structure,
        from which a geometry optimiser's step is told (every evaluation located once)."""
        if self.ids is None:
            return rid, evaluation
        return self.ids.locate(rid, evaluation, positions)

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
                "request id %d >= --nbeads %d: no deviation rows for it (an estimator's clone; a bead of another "
                "force or system if it comes every step: --ipi-input files those)",
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

    @property
    def batch_steps(self) -> dict[int, int]:
        return self.batches.steps


class OneClient:
    """With --ipi-input: is this driver i-PI's only client on the socket?

    i-PI evaluates every bead of a system once per step and waits for them all before the
    next step, so with one client the steps this driver counts for the beads of a system
    are never more than one apart (two around a replaced driver's first request: still
    one). A second job on the same socket takes some of the requests, and the counts of
    the beads it took fall behind: the step labels of both jobs are then wrong. Said as
    soon as it shows, and again in the closing summary (``warning``)."""

    def __init__(self, ids: RequestIds):
        # an optimiser's beads are labelled by its line search, not once a step: not checked
        self.system = [None if s.optimiser else s.system for s in ids.series]
        self.latest: dict[int, dict[int, int]] = {}  # system -> series -> latest step seen
        self.warning: str | None = None

    def seen(self, series: int, step: int) -> None:
        if self.warning is not None or self.system[series] is None:
            return
        steps = self.latest.setdefault(self.system[series], {})
        steps[series] = step
        ahead, behind = max(steps, key=steps.get), min(steps, key=steps.get)
        if steps[ahead] - steps[behind] > 1:
            self.warning = (
                f"bead {ahead} is at step {steps[ahead]} here while bead {behind} is at step {steps[behind]}: another "
                "client (a second driver job?) takes requests from this i-PI socket, so the steps of this job's rows "
                "are wrong; serve all of i-PI's requests from one job (--connections N for beads in parallel)"
            )
            log.warning(self.warning)


def ids_warning(evaluations: Mapping[int, int], nbeads: int) -> str | None:
    """Without --ipi-input: one warning when the request ids a run saw do not look like
    beads 0..nbeads-1 (a contracted force, a second force or system: i-PI's ids are not
    bead indices), naming the likely cause and the fix; None when they do."""
    if not evaluations:
        return None
    most = max(evaluations.values())
    missing = [b for b in range(nbeads) if not evaluations.get(b)]
    beyond = sorted(r for r, n in evaluations.items() if r >= nbeads and n == most)
    if not missing and not beyond:
        return None
    every_step = sorted(r for r, n in evaluations.items() if n == most)
    fits = len(every_step) if every_step == list(range(len(every_step))) else None
    cause = (
        f"beads {_ranges(missing)} of --nbeads {nbeads} never came"
        if missing
        else f"request ids {_ranges(beyond)} came every step, as beads do, but are >= --nbeads {nbeads} and got no rows"
    )
    fix = f" (or --nbeads {fits})" if fits is not None and fits != nbeads else ""
    return (
        f"{cause}: i-PI's request ids are bead indices only for one <force> of one <system> (ids seen every step: "
        f"{_ranges(every_step)}); pass --ipi-input with i-PI's input{fix}, which files every row under its "
        "system, bead and step (docs/running.md, 'How i-PI numbers its requests')"
    )


def _ranges(ids: list[int]) -> str:
    """0, 1, 2, 5 -> '0..2, 5'."""
    parts, start = [], None
    for k, value in enumerate(ids):
        if start is None:
            start = value
        if k + 1 == len(ids) or ids[k + 1] != value + 1:
            parts.append(str(start) if start == value else f"{start}..{value}")
            start = None
    return ", ".join(parts)


@dataclass
class _Held:
    request: BatchRequest
    results: tuple[np.ndarray, np.ndarray, np.ndarray]  # model 0's energy, forces, virial
    leading: int  # structures up to the last one that differs from the one before


class BatchBeads:
    """Which structures of i-PI's batches are beads, and their steps.

    A batch says only its first request id, and i-PI pads a short batch with copies of
    its last structure (``dispatch_send_batch`` in ipi/interfaces/sockets.py). How many
    are real: with --ipi-input, the forcefield's ids from the first on. Otherwise the next
    batch tells, when it starts at a higher id (the beads in between were this one's); when
    it starts again (the batch closed its step), the structures after the last one that
    differs from the one before it are padding, unless every structure of the batch is the
    same (step 0, before the beads spread, or a contracted force's beads): such a batch is
    held until a later batch of the same first id shows how many of its beads differ (and
    at the end of the run --nbeads decides). So no row is ever written for padding."""

    def __init__(self, nbeads: int, ids: RequestIds | None = None):
        self.nbeads = nbeads
        self.ids = ids
        self.steps: dict[int, int] = {}  # evaluations per request id
        self._held: list[_Held] = []  # in arrival order; the last one may still be resolved by next_rid
        self._real: dict[int, int] = {}  # first request id -> real structures, once known
        self._warned_gap = False

    def hold(self, request: BatchRequest, results: tuple, leading: int) -> None:
        self._held.append(_Held(request, results, leading))

    def resolve(self, next_rid: int | None, next_leading: int | None = None) -> list[ResolvedBatch]:
        """The batches held whose real structures are now known, in arrival order, given
        the next batch's first id and leading count (None, None at the end of the run)."""
        if self._held:
            last = self._held[-1]
            known = self._known(last, next_rid)
            if known is not None:
                self._real[last.request.rid] = known
        if next_rid is not None and next_leading is not None and next_leading >= 2:
            self._real.setdefault(next_rid, self._before_padding(next_rid, next_leading))
        out, keep = [], []
        for held in self._held:
            first, size = held.request.rid, len(held.results[0])
            real = self._real.get(first)
            if real is None and next_rid is None:  # the end: nothing more will tell, --nbeads decides
                real = self._before_padding(first, size)
            if real is None or any(k.request.rid == first for k in keep):
                keep.append(held)  # a batch of the same beads waits for the one before it
                continue
            out.append(self._resolved(held, min(real, size)))
        self._held = keep
        return out

    def _known(self, held: _Held, next_rid: int | None) -> int | None:
        """The real structures of the latest batch, if it tells them itself or with the next
        batch's first id; None when every structure is the same and nothing else tells."""
        first, size = held.request.rid, len(held.results[0])
        if self.ids is not None:  # the ids i-PI queues for this forcefield: the rest is padding
            return self.ids.batch_beads(first, size)
        if first >= self.nbeads:
            return self._before_padding(first, size)
        if next_rid is not None and next_rid > first:
            if next_rid - first > size and not self._warned_gap:  # other beads went to another client
                self._warned_gap = True
                log.warning(
                    "request ids %d..%d were not sent here: with i-PI's batched transport the deviation "
                    "needs one client per <ffsocket> to tell the beads of a batch apart",
                    first + size,
                    next_rid - 1,
                )
            return min(next_rid - first, size)
        if held.leading >= 2:  # the batch closed its step: what follows the last change is padding
            return self._before_padding(first, held.leading)
        return self._real.get(first)

    def _before_padding(self, first: int, count: int) -> int:
        """Real structures of a batch starting at ``first`` whose first ``count`` could
        be beads: no more than --nbeads allows; one from an estimator's clone (no rows,
        and no way to tell more)."""
        return max(1, min(count, self.nbeads - first))

    def _resolved(self, held: _Held, real: int) -> ResolvedBatch:
        beads = []
        for k in range(real):
            rid = held.request.rid + k
            step = self.steps.get(rid, 0)
            self.steps[rid] = step + 1
            beads.append((rid, step))
        return ResolvedBatch(held.request, *held.results, beads)
