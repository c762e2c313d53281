"""``ensemble-driver devi``: the model deviation of existing trajectories.

For runs made without the driver, or to re-check a run with other models. Every input
file is one series (one bead): its rows go to one deviation file, named as in a live run
(one file: ``--out-file``; several: per bead, ``--bead-files``), in the same format, with
the same options (``--relative``, ``--relative-v``, ``--atomic``) and the same candidate
selection (``--trust-lo``/``--trust-hi``: candidates*.xyz and devi_summary.json).

Input formats (``frames``):

- i-PI's trajectories, found by their content whatever ``--format`` says, in the units of
  their own words (``positions{atomic_unit} cell{atomic_unit}``, i-PI's default, or
  ``angstrom``, ``nanometer``, ``ase``, ...): its xyz (``<trajectory format='xyz'>``; the
  comment line carries the cell, ``CELL(abcABC)``, the step and the bead) and its pdb
  (``format='pdb'``; the TITLE line carries the step, the bead and the units, CRYST1 the
  cell) are read here, since ASE would take their numbers for Angstrom (and drop the
  xyz's cell); its extxyz (``format='ase'``) through ASE's extxyz reader;
- anything else ASE reads (extxyz, LAMMPS dumps with ``--format lammps-dump-text``, VASP,
  ASE trajectories, ...).

Frame and atomic parameters, for models trained with them, are given as for ``run``:
``--fparam`` and ``--aparam`` (the same for every frame), or ``--aparam-array NAME``: the
per-atom array NAME of every frame (extended XYZ), so that each frame is evaluated with
its own values, as ``dp model-devi`` takes them from a system's ``aparam.npy``.

The step of a row is the trajectory's own (i-PI's ``Step:``, also inside the
``ipi_comment`` of its ``format='ase'`` extxyz, or extxyz ``step=``) when it
carries one, else the frame's index times ``--stride``.

Under ``mpiexec`` the models and the frames are split over the ranks (``DeviLayout``:
with no more ranks than models each rank loads only its models; with twice as many or
more, groups of ranks take every G-th frame) and rank 0 writes the files; alone, one
process does it all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from functools import partial

import numpy as np

from .. import ranks
from ..errors import ConfigError
from ..models.deepmd import check_model_file
from ..outputs.dumps import traj_layout
from ..outputs.model_devi import bead_file_names
from ..outputs.selection import summary_file_name
from ..outputs.sink import RowSink
from .evaluation import evaluate_series
from .frames import Frame, read_frames
from .settings import DeviSettings

log = logging.getLogger(__name__)


def run_devi(settings: DeviSettings, comm=None) -> int:
    """Compute and write the deviation of every frame of every trajectory. Returns 0."""
    settings.validated()
    clock = [("start", time.monotonic())]
    comm = comm if comm is not None else ranks.world()
    for path in settings.models:
        check_model_file(path)
    series = [read_frames(t, settings.fmt, settings.parameters.aparam_array) for t in settings.trajectories]
    for path, frames in zip(settings.trajectories, series):
        if not frames:
            raise ConfigError(f"trajectory {path}: no frames")
    _warn_bead_order(settings, series, comm.rank)
    clock.append(("reading", time.monotonic()))
    rows, type_map = evaluate_series(settings, series, partial(_keep_rows, settings), comm, clock)
    if rows is not None:
        _write(settings, series, rows, type_map, clock)
    return 0


def _warn_bead_order(settings: DeviSettings, series: Sequence[list[Frame]], rank: int) -> None:
    """One warning when i-PI's files are given out of their beads' order: each file's rows
    go to the series of its place on the command line (a shell's sorting puts pos_10
    before pos_2)."""
    beads = [frames[0].bead for frames in series]
    if rank == 0 and len(beads) > 1 and None not in beads and beads != sorted(beads):
        log.warning(
            "the trajectories hold i-PI's beads %s in the order given; the rows of each go to the "
            "deviation file of its place in that order (give them in bead order to file bead b's as b's)",
            " ".join(map(str, beads)),
        )


def _keep_rows(settings: DeviSettings, chunk: list, results: dict, rows: dict) -> None:
    """The deviation rows of a chunk's frames, from every model's forces and virials."""
    n_models = len(settings.models)
    stacked_f = np.stack([results[m].forces for m in range(n_models)], axis=1)  # (frames, models, nat, 3)
    stacked_v = np.stack([results[m].virial for m in range(n_models)], axis=1)
    for j, task in enumerate(chunk):
        # each atom's deviation is written only with candidates or --atomic; every row is held till the end
        per_atom = settings.trust is not None or settings.kind.atomic
        row = settings.kind.row(stacked_f[j], stacked_v[j], per_atom=per_atom)
        rows[task] = (row, stacked_f[j][0]) if settings.traj_files else (row, None)  # model 0's, for frames


def _write(
    settings: DeviSettings, series: Sequence[list[Frame]], rows: dict, type_map: Sequence[str], clock: list
) -> None:
    names = bead_file_names(settings.out_file, settings.bead_files, len(series))
    traj = traj_layout(settings.traj_files, settings.out_file, len(series)) if settings.traj_files else None
    sink = RowSink.open(settings.deviation_options(), names, summary=summary_file_name(names), traj=traj)
    report = None
    try:
        for s, frames in enumerate(series):
            types = np.array([list(type_map).index(e) for e in frames[0].symbols]) if traj is not None else None
            sink.set_atoms(frames[0].symbols, types)
            for k, frame in enumerate(frames):
                step = frame.step if frame.step is not None else k * settings.stride
                row, forces = rows[(s, k)]
                sink.write(s, step, row, frame.positions, frame.cell, forces)  # the frame before its row
    finally:
        report = sink.close()
    clock.append(("writing", time.monotonic()))
    total = sum(len(f) for f in series)
    where = ", ".join(names) if len(names) <= 4 else names[0] + " .. " + names[-1]
    # rank 0's times (loading includes importing deepmd-kit and torch)
    parts = ", ".join(f"{name} {b - a:.1f} s" for (_, a), (name, b) in zip(clock, clock[1:]))
    print(f"wrote {total} deviation rows to {where} in {clock[-1][1] - clock[0][1]:.1f} s ({parts})")
    if report is not None:
        print(report)
