"""Rank 0's deviation rows: a finished job's model deviation, written to its bead's file
and offered to the selection (the rank roles: see :mod:`ensemble`).

The writer takes the jobs as :class:`jobs.JobPipeline` hands them on, in dispatch order,
so every bead's file gets its rows in step order.
"""

from __future__ import annotations

import time

from .deviation import Deviation, model_deviation
from .jobs import Job
from .output import BeadFiles
from .selection import Selection


class RowWriter:
    """Writes the rows of finished deviation jobs; counts them per bead."""

    def __init__(
        self,
        files: BeadFiles | None,
        selection: Selection | None,
        *,
        relative: float | None,
        relative_v: float | None,
        atomic: bool,
    ):
        self.files = files
        self.selection = selection
        self.relative = relative
        self.relative_v = relative_v
        self.atomic = atomic
        self.latest_row_s = 0.0  # dispatch to written, of the latest deviation job
        self.rows_by_bead: dict[int, int] = {}

    def write(self, job: Job) -> Deviation | None:
        """The job's row (None for a job without one), written if its bead has a file."""
        self.latest_row_s = time.monotonic() - job.dispatched
        if not job.row:
            return None
        row = model_deviation(
            job.forces, job.virials, relative=self.relative, relative_v=self.relative_v, atomic=self.atomic
        )
        if self.files is not None and self.files.write(job.rid, job.step, row):
            self.rows_by_bead[job.rid] = self.rows_by_bead.get(job.rid, 0) + 1
            if self.selection is not None:
                self.selection.add(job.rid, job.step, row, job.positions, job.cell)
        return row

    def close(self) -> None:
        if self.files is not None:
            self.files.close()
