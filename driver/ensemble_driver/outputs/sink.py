"""Rank 0's deviation outputs, one sink for ``run`` and ``devi`` alike.

:class:`DeviationOptions` is what a user asks of the outputs (the same options, checked
once, for both commands); :class:`RowSink` writes every row: its structure as a LAMMPS
dump frame first (``--traj-files``: a row never lands without its frame), then the row
in its bead's deviation file, then its class and candidate file (trust levels), and the
stop rule (``--stop-after-failed``: i-PI's EXIT file after N failed rows). Closing it
writes ``devi_summary.json`` whole and gives the counts to print.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from ..deviation import Deviation, DeviationKind
from ..errors import ConfigError
from .dumps import TrajFiles, TrajLayout, lammps_frame
from .model_devi import BeadFiles
from .selection import FAILED, Selection, TrustLevels, candidate_file_names

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviationOptions:
    """The deviation rows and where they go, as ``run`` and ``devi`` take them."""

    out_file: str = "model_devi.out"
    bead_files: str = "dpgen"
    traj_files: str | None = None
    kind: DeviationKind = field(default_factory=DeviationKind)
    trust: TrustLevels | None = None
    overwrite: bool = False
    append: bool = False

    @classmethod
    def of(cls, settings, **named_otherwise) -> DeviationOptions:
        """The options of a command's settings record (run's or devi's), field by field
        of the same name; ``named_otherwise`` for those it holds under another name."""
        values = {f.name: getattr(settings, f.name) for f in fields(cls) if hasattr(settings, f.name)}
        return cls(**{**values, **named_otherwise})

    def validated(self) -> DeviationOptions:
        self.kind.validated()
        if self.overwrite and self.append:
            raise ConfigError("--overwrite and --append exclude each other")
        return self

    @property
    def mode(self) -> str:
        """How existing files are met: "new" (refused), "overwrite" or "append"."""
        return "append" if self.append else "overwrite" if self.overwrite else "new"


class RowSink:
    """Every row of every bead, with its frame, class and candidate; see the module."""

    def __init__(
        self,
        files: BeadFiles,
        *,
        selection: Selection | None = None,
        traj: TrajFiles | None = None,
        stop_after_failed: int = 0,
        exit_file: str | None = None,
        atomic: bool = False,
    ):
        self.files = files
        self.atomic = atomic  # the frames carry each atom's devi_f too
        self.selection = selection
        self.traj = traj
        self.types: np.ndarray | None = None  # model 0's type index of every atom, for the frames
        self.stop_after_failed = stop_after_failed
        self.exit_file = exit_file
        self.failed = 0
        self.rows_by_bead: dict[int, int] = {}
        self.continuation = None  # run's: the journal and what it continues (run/continuation.py)
        self._closed = False

    @classmethod
    def open(
        cls,
        options: DeviationOptions,
        names: Sequence[str],
        *,
        summary: str,
        traj: TrajLayout | None = None,
        step_offset: int = 0,
        counts: Sequence[dict[str, int]] | None = None,
        **stop_rule,
    ) -> RowSink:
        """Open (or create) every file; the checks that can fail come before the
        deviation files are made."""
        mode = options.mode
        selection = None
        if options.trust is not None:
            candidates = candidate_file_names(names)
            selection = Selection(options.trust, candidates, summary, mode=mode, step_offset=step_offset, counts=counts)
        dumps = TrajFiles(traj, mode=mode, step_offset=step_offset) if traj is not None else None
        atomic = options.kind.atomic
        files = BeadFiles(names, atomic=atomic, mode=mode, step_offset=step_offset)
        return cls(files, selection=selection, traj=dumps, atomic=atomic, **stop_rule)

    @property
    def names(self) -> list[str]:
        return self.files.names

    def set_atoms(self, symbols: Sequence[str], types: np.ndarray | None) -> None:
        """The atoms of the rows to come: their elements (candidates) and types (frames)."""
        if self.selection is not None:
            self.selection.symbols = list(symbols)
        self.types = types

    def write(self, bead: int, step: int, row: Deviation, positions: np.ndarray, cell, forces) -> bool:
        """One row of a bead < the number of files; False for another bead."""
        if bead >= len(self.files.names):
            return False
        if self.traj is not None:  # the frame first: a row never lands without its frame
            devi_f = row.per_atom if self.atomic else None
            self.traj.write(
                bead, step, lambda labelled: lammps_frame(labelled, positions, cell, self.types, forces, devi_f)
            )
        if not self.files.write(bead, step, row):
            return False
        self.rows_by_bead[bead] = self.rows_by_bead.get(bead, 0) + 1
        if self.selection is not None and self.selection.add(bead, step, row, positions, cell) == FAILED:
            self._count_failed(bead, step)
        return True

    def _count_failed(self, bead: int, step: int) -> None:
        self.failed += 1
        if self.stop_after_failed and self.failed == self.stop_after_failed:
            Path(self.exit_file).touch()  # type: ignore[arg-type]
            log.warning(
                "%d rows classified failed (the latest: bead %d, step %d; --stop-after-failed %d): created %s to "
                "end the run (i-PI's soft exit)",
                self.failed,
                bead,
                step,
                self.stop_after_failed,
                self.exit_file,
            )

    def close(self) -> str | None:
        """Close every file (the candidates and devi_summary.json, whole); return the
        counts by class to print, if rows were classified. Closing again only returns them."""
        if not self._closed:
            self._closed = True
            self.files.close()
            if self.traj is not None:
                self.traj.close()
            if self.selection is not None:
                self.selection.close()
        if self.selection is None or not self.selection.rows:
            return None
        return (
            f"deviation rows by class (trust levels {self.selection.levels.describe()}):\n"
            f"{self.selection.report()}\ncounts in {self.selection.summary_file}"
        )

    def discard_unused(self) -> None:
        self.files.discard_unused()
