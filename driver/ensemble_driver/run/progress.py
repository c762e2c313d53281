"""``--status-every SECONDS``: rank 0's status line, for a terminal and a batch log alike.

    status: step 1200 of 5000 (24%), 12.3 steps/s, 5 min 9 s left; max_devi_f since the last line:
    0.123 eV/A; rows: 12 candidate, 0 failed

Cheap by construction: per structure served, the session's handler records the request
(an assignment) and compares the clock with the time of the next line; per row, the
largest max_devi_f of its system is kept (a comparison). Everything else is worked out
when a line is due. i-PI's step is the largest step seen among the requests (located in
i-PI's steps with ``--ipi-input``) and the rows; the total is known from ``--ipi-input``
only.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence

from ..outputs.selection import CANDIDATE, FAILED
from ..wire.ipi_input import RequestIds

log = logging.getLogger(__name__)

#: --status-every's default: a line a minute
DEFAULT_STATUS_EVERY = 60.0


def duration(seconds: float) -> str:
    """A time left, to the precision that matters: '42 s', '5 min 9 s', '3 h 07 min', '2 d 4 h'."""
    if not math.isfinite(seconds):
        return "unknown"
    s = max(int(round(seconds)), 0)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60} s"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def status_line(
    step: int | None,
    total: int | None,
    rate: float | None,
    devi: Sequence[tuple[str, float | None]] | None,
    counts: tuple[int, int] | None,
) -> str:
    """The status line: i-PI's ``step`` (None: none served yet) of ``total`` (None:
    unknown), ``rate`` in steps/s (None: not measured yet), the largest max_devi_f per
    system since the last line (None: no deviation rows; a system's None: no row since),
    ``counts`` of (candidate, failed) rows so far (None: no trust levels)."""
    if step is None:
        where = "no step yet"
    elif total is None:
        where = f"step {step} (total unknown without --ipi-input)"
    else:
        where = f"step {step} of {total} ({100 * step / total:.0f}%)" if total else f"step {step} of {total}"
    parts = [where]
    if rate is not None:
        parts.append(f"{rate:.3g} steps/s")
        if total is not None and step is not None:
            left = (total - step) / rate if rate > 0 else math.inf
            parts.append(f"{duration(left)} left")
    line = "status: " + ", ".join(parts)
    if devi is not None:
        shown = [(name, "no row" if value is None else f"{value:.4g} eV/A") for name, value in devi]
        if len(shown) == 1:
            line += f"; max_devi_f since the last line: {shown[0][1]}"
        else:
            line += "; max_devi_f since the last line: " + ", ".join(f"{n} {v}" for n, v in shown)
    if counts is not None:
        line += f"; rows: {counts[0]} candidate, {counts[1]} failed"
    return line


class Progress:
    """Rank 0's status lines every ``every`` seconds (see the module)."""

    def __init__(
        self,
        every: float,
        *,
        total: int | None = None,
        ids: RequestIds | None = None,
        systems: Sequence[str] = ("",),
        system_of_bead: Sequence[int] | None = None,
        counts: Callable[[], tuple[int, int] | None] = lambda: None,
        deviation: bool = True,
        clock: Callable[[], float] = time.monotonic,
        emit: Callable[[str], None] | None = None,
    ):
        self.every = every
        self.total = total
        self.ids = ids
        self.systems = list(systems)
        self.system_of_bead = system_of_bead
        self.counts = counts
        self.deviation = deviation
        self.clock = clock
        self.emit = emit if emit is not None else log.info
        self.last_request: tuple[int, int] | None = None  # (request id, its evaluation index)
        self.row_step = -1
        self.top = [-math.inf] * len(self.systems)
        now = clock()
        self.next_at = now + every
        self.mark: tuple[float, int | None] = (now, None)  # (time, step) of the last line

    # per structure and per row: the cheap parts
    def request(self, rid: int, evaluation: int) -> None:
        self.last_request = (rid, evaluation)
        if self.clock() >= self.next_at:
            self.line()

    def row(self, bead: int, step: int, max_devi_f: float) -> None:
        if step > self.row_step:
            self.row_step = step
        k = self.system_of_bead[bead] if self.system_of_bead is not None and bead < len(self.system_of_bead) else 0
        if max_devi_f > self.top[k]:
            self.top[k] = max_devi_f

    # when a line is due
    def step(self) -> int | None:
        """i-PI's latest step seen, in i-PI's numbering where the ids say it."""
        best = self.row_step if self.row_step >= 0 else None
        if self.last_request is not None:
            rid, evaluation = self.last_request
            if self.ids is None:
                located = evaluation
            else:
                where = self.ids.locate(rid, evaluation)
                located = where[1] if where is not None else None
            if located is not None and (best is None or located > best):
                best = located
        return best

    def line(self) -> str:
        now = self.clock()
        step = self.step()
        then, then_step = self.mark
        rate = None
        if step is not None and then_step is not None and now > then:
            rate = (step - then_step) / (now - then)
        devi = None
        if self.deviation:
            devi = [(name, top if top > -math.inf else None) for name, top in zip(self.systems, self.top)]
        text = status_line(step, self.total, rate, devi, self.counts())
        self.emit(text)
        self.mark = (now, step)
        self.top = [-math.inf] * len(self.systems)
        self.next_at = now + self.every
        return text


class WatchedHandler:
    """The session's handler (a :class:`ensemble.leader.Leader`) with each request told to a
    :class:`Progress` first; everything else is the leader's."""

    def __init__(self, leader, progress: Progress):
        self._leader = leader
        self._progress = progress

    def __call__(self, request):
        self._progress.request(request.rid, request.step)
        return self._leader(request)

    def __getattr__(self, name):
        return getattr(self._leader, name)


class WatchedSink:
    """Rank 0's row sink with each row's max_devi_f told to a :class:`Progress`."""

    def __init__(self, sink, progress: Progress):
        self._sink = sink
        self._progress = progress

    def write(self, bead: int, step: int, row, positions, cell, forces) -> bool:
        written = self._sink.write(bead, step, row, positions, cell, forces)
        if written:
            self._progress.row(bead, step, row.max_devi_f)
        return written

    def __getattr__(self, name):
        return getattr(self._sink, name)


def selection_counts(sink) -> Callable[[], tuple[int, int] | None]:
    """(candidate, failed) rows so far in ``sink``'s selection; None without trust levels."""

    def counts() -> tuple[int, int] | None:
        selection = getattr(sink, "selection", None) if sink is not None else None
        if selection is None:
            return None
        return (sum(c[CANDIDATE] for c in selection.counts), sum(c[FAILED] for c in selection.counts))

    return counts
