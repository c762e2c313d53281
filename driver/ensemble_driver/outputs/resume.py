"""``--resume``: a restarted i-PI run continues from step K (its RESTART's ``<step>``), so
everything an earlier driver wrote for steps K and later is cut before the new rows come:
i-PI 3.3 rolls a run stopped by SIGTERM back to its last checkpoint (``safe_stride``), and
the steps since then are computed again. Each file is cut into a new file that replaces
the old one in one rename (a crash leaves the old file or the new one, never half), so
that every step is in every file once, as DP-GEN (row i of a bead is frame i) needs.

What is cut: the deviation files (rows by their step), the candidate files (frames by
their ``step=``), the LAMMPS dumps (frames by their TIMESTEP; files of one frame whose
name carries the step are removed) and, from what remains, the counts every bead starts
with in ``devi_summary.json``.

A replacement driver (:mod:`ensemble.journal`) cuts the same way, each bead at its own step: the
first row its predecessor left unwritten (None: the bead's files are kept whole).
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from .dumps import TrajLayout
from .selection import CLASSES, TrustLevels

_CANDIDATE_STEP = re.compile(r"\bstep=(\d+)")


def _replace(path: Path, text: str) -> None:
    """Write ``text`` as ``path``'s new content in one rename."""
    tmp = path.with_name(path.name + ".resume-tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"--resume: cannot cut {path}: {exc.strerror}") from None


def cut_deviation_file(path: str | Path, first_step: int | None) -> list[str]:
    """Keep the header and the rows before ``first_step`` (None: every row); return the
    rows kept."""
    path = Path(path)
    if not path.exists():
        return []
    lines = path.read_text().splitlines(keepends=True)
    header = [line for line in lines if line.startswith("#")]
    rows = [line for line in lines if not line.startswith("#") and line.strip()]
    kept = [row for row in rows if first_step is None or int(row.split()[0]) < first_step]
    if len(kept) != len(rows):
        _replace(path, "".join(header + kept))
    return kept


def cut_dump(path: str | Path, first_step: int) -> None:
    """A LAMMPS dump of many frames: keep the frames before ``first_step``."""
    path = Path(path)
    if not path.exists():
        return
    marker = "ITEM: TIMESTEP\n"
    frames = [marker + part for part in path.read_text().split(marker)[1:]]
    kept = [f for f in frames if int(f.split("\n", 2)[1]) < first_step]
    if len(kept) != len(frames):
        _replace(path, "".join(kept))


def cut_candidates(path: str | Path, first_step: int) -> None:
    """An extended XYZ file of candidates: keep the frames before ``first_step``."""
    path = Path(path)
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept, k, changed = [], 0, False
    while k < len(lines):
        n = int(lines[k])
        frame = lines[k : k + n + 2]
        found = _CANDIDATE_STEP.search(frame[1])
        if found and int(found.group(1)) >= first_step:
            changed = True
        else:
            kept.extend(frame)
        k += n + 2
    if changed:
        _replace(path, "".join(kept))


def cut_traj(layout: TrajLayout, first_step: int | Sequence[int | None]) -> None:
    steps = _per_file(first_step, len(layout.patterns))
    for pattern, cut in zip(layout.patterns, steps):
        if cut is None:
            continue
        if not layout.per_frame:
            cut_dump(pattern, cut)
            continue
        head, tail = pattern.split("{step}", 1)
        for path in glob.glob(glob.escape(head) + "*" + glob.escape(tail)):
            step = path[len(head) : len(path) - len(tail) if tail else None]
            if step.isdigit() and int(step) >= cut:
                os.unlink(path)


def _per_file(first_step: int | Sequence[int | None], n: int) -> list[int | None]:
    return [first_step] * n if isinstance(first_step, int) else list(first_step)


@dataclass(frozen=True)
class Kept:
    """What the cut left: each deviation file's rows, and with trust levels each bead's
    counts per class of them (the summary starts from them)."""

    rows: list[list[str]]
    counts: list[dict[str, int]] | None

    def last_steps(self) -> dict[int, int]:
        """Each bead's last step kept (beads with rows only)."""
        return {k: int(rows[-1].split()[0]) for k, rows in enumerate(self.rows) if rows}


def resume_outputs(
    first_step: int | Sequence[int | None],
    deviation_files: Sequence[str],
    *,
    candidate_files: Sequence[str] = (),
    traj: TrajLayout | None = None,
    levels: TrustLevels | None = None,
) -> Kept:
    """Cut every output to the steps before ``first_step``: one step for every bead, or
    one per bead (None: keep the bead's files whole); return what was kept."""
    steps = _per_file(first_step, len(deviation_files))
    kept = [cut_deviation_file(name, step) for name, step in zip(deviation_files, steps)]
    for name, step in zip(candidate_files, steps):
        if step is not None:
            cut_candidates(name, step)
    if traj is not None:
        cut_traj(traj, first_step)
    if levels is None:
        return Kept(kept, None)
    counts = []
    for rows in kept:
        bead = dict.fromkeys(CLASSES, 0)
        for row in rows:
            # LAMMPS's columns: step, max_devi_v, min_devi_v, avg_devi_v, max_devi_f, ...
            values = row.split()
            bead[levels.classify(float(values[4]), float(values[1]))] += 1
        counts.append(bead)
    return Kept(kept, counts)
