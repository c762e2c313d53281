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
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial

import numpy as np

from .. import ranks
from ..deviation import model_deviation
from ..errors import ConfigError, DriverError, ModelError
from ..models.deepmd import DeepPotModel, check_model_file, one_backend_thread
from ..models.devices import visible_gpus
from ..models.parameters import Parameters, check_charge_spin
from ..outputs.dumps import traj_layout
from ..outputs.model_devi import bead_file_names
from ..outputs.selection import TrustLevels, summary_file_name
from ..outputs.sink import DeviationOptions, RowSink
from .frames import Frame, name_dump_types, read_frames

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeviSettings:
    trajectories: tuple[str, ...]
    models: tuple[str, ...]
    fmt: str | None = None
    stride: int = 1
    type_map: tuple[str, ...] | None = None
    head: str | None = None  # the head of every multi-task model
    out_file: str = "model_devi.out"
    bead_files: str = "dpgen"
    atomic: bool = False
    relative: float | None = None
    relative_v: float | None = None
    overwrite: bool = False
    append: bool = False
    trust: TrustLevels | None = None
    batch: int | None = None  # frames per model call; None: frames_per_call's choice
    fparam: tuple[float, ...] | None = None
    aparam: tuple[float, ...] | None = None
    aparam_array: str | None = None  # per-atom values: this array of every frame
    charge_spin: tuple[float, float] | None = None  # --charge-spin Q S
    traj_files: str | None = None  # as run's --traj-files: every row's frame as a LAMMPS dump
    source: str = "trajectory"  # what a series is called in messages

    def validated(self) -> DeviSettings:
        if len(self.models) < 2:
            raise ConfigError("devi needs two or more --models (the deviation is their spread)")
        if not self.trajectories:
            raise ConfigError("no trajectory given")
        if self.stride < 1:
            raise ConfigError(f"--stride must be >= 1, got {self.stride}")
        self.deviation_options().validated()
        if self.aparam is not None and self.aparam_array is not None:
            raise ConfigError("--aparam and --aparam-array exclude each other (both give the atomic parameters)")
        for name, values in (("--fparam", self.fparam), ("--aparam", self.aparam)):
            if values is not None and not np.isfinite(values).all():
                raise ConfigError(f"{name} must be finite numbers, got {' '.join(map(str, values))}")
        check_charge_spin(self.charge_spin)
        return self

    def deviation_options(self) -> DeviationOptions:
        """What the rows and their files are, as ``run`` takes them too."""
        return DeviationOptions.of(self)

    def parameters(self, series: Sequence[list[Frame]]) -> Parameters:
        """The parameters every model is made with. With --aparam-array the first frame's
        array stands for all (each call gets its frames' own): it is what the models'
        dimensions are checked against; every frame's must have its shape."""
        fparam = None if self.fparam is None else np.array(self.fparam, dtype=np.float64)
        if self.aparam_array is None:
            aparam = None if self.aparam is None else np.array(self.aparam, dtype=np.float64)
            return Parameters(fparam=fparam, aparam=aparam, charge_spin=self.charge_spin)
        first = series[0][0].aparam
        for path, frames in zip(self.trajectories, series):
            for k, frame in enumerate(frames):
                if frame.aparam.shape[1] != first.shape[1]:
                    raise ConfigError(
                        f"trajectory {path}, frame {k}: array {self.aparam_array!r} has {frame.aparam.shape[1]} "
                        f"column(s), frame 0 of {self.trajectories[0]} has {first.shape[1]}"
                    )
        source = f"--aparam-array {self.aparam_array} of trajectory {self.trajectories[0]}"
        return Parameters(fparam=fparam, aparam=first, aparam_from=source, charge_spin=self.charge_spin)


def _progress(done: int, total: int, started: float) -> None:
    if sys.stderr.isatty():
        rate = done / max(time.monotonic() - started, 1e-9)
        left = (total - done) / rate if rate else 0
        sys.stderr.write(f"\r  {done}/{total} frames on rank 0, {rate:.1f}/s, ~{left:.0f} s left ")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()


@dataclass(frozen=True)
class DeviLayout:
    """How ``devi`` splits its work over R ranks and M models: the ranks form G groups
    (rank r is in group r % G); each group takes every G-th chunk of frames, and within a
    group of k ranks the rank at position p holds models p, p + k, ... (none when p >= M).

    G is chosen to balance the ranks: the busiest rank evaluates 1/G of the frames with
    ceil(M / k) models (k: the smallest group's size), and G minimises that, the
    fewest groups among equals (fewer models to load per rank). So with M a multiple
    of R the models are split and every rank sees every frame (4 models, 2 or 4 ranks);
    otherwise the frames are split too (3 models on 2 ranks: each rank evaluates all 3
    models on half of the frames, not 2 models and 1 on all of them)."""

    groups: int
    group: int
    position: int
    size: int
    models: tuple[int, ...]

    @staticmethod
    def n_groups(n_ranks: int, n_models: int) -> int:
        def load(groups: int) -> float:
            return -(-n_models // (n_ranks // groups)) / groups

        return min(range(1, n_ranks + 1), key=lambda g: (round(load(g), 9), g))

    @classmethod
    def of(cls, rank: int, n_ranks: int, n_models: int) -> DeviLayout:
        groups = cls.n_groups(n_ranks, n_models)
        group = rank % groups
        size = len(range(group, n_ranks, groups))
        position = rank // groups
        return cls(groups, group, position, size, tuple(range(position, n_models, size)))


def _on_rank(exc: DriverError, rank: int) -> DriverError:
    """An error met by one rank alone: it prints it itself, naming the rank."""
    error = DriverError(f"rank {rank}: {exc}")
    error.exit_status = exc.exit_status
    error.print_here = True
    return error


def run_devi(settings: DeviSettings, comm=None) -> int:
    """Compute and write the deviation of every frame of every trajectory. Returns 0."""
    settings.validated()
    clock = [("start", time.monotonic())]
    comm = comm if comm is not None else ranks.world()
    for path in settings.models:
        check_model_file(path)
    series = [read_frames(t, settings.fmt, settings.aparam_array) for t in settings.trajectories]
    for path, frames in zip(settings.trajectories, series):
        if not frames:
            raise ConfigError(f"trajectory {path}: no frames")
    _warn_bead_order(settings, series, comm.rank)
    clock.append(("reading", time.monotonic()))
    rows, type_map = evaluate_series(settings, series, partial(_keep_rows, settings), comm, clock)
    if rows is not None:
        _write(settings, series, rows, type_map, clock)
    return 0


def evaluate_series(
    settings: DeviSettings, series: Sequence[list[Frame]], keep: Callable, comm, clock: list
) -> tuple[dict | None, list[str]]:
    """Every model on every frame of ``series`` (one list of frames per entry of
    ``settings.trajectories``), split over the ranks of ``comm`` (``DeviLayout``).
    ``keep(chunk, results, rows)`` turns a chunk's results (model index ->
    ``BatchEvaluation``, every model's) into ``rows[(series, frame)]``. Returns the rows
    of every frame on rank 0 (None on the other ranks) and model 0's type map; appends
    its steps to ``clock``."""
    typed = any(f.types is not None for frames in series for f in frames)
    if not typed:
        _check_same_atoms(settings, series)  # before the models load: a bad file fails fast
    layout = DeviLayout.of(comm.rank, comm.size, len(settings.models))
    group = comm if layout.groups == 1 else comm.Split(layout.group, comm.rank)
    # before any model loads: OpenMP reads its thread count once, when torch starts it
    threads = worker_threads(settings, layout, ranks.node_share(comm)[1], len(_chunks(settings, series, layout)))
    try:
        models = _load_models(settings, series, layout)
    except DriverError as exc:
        raise (_on_rank(exc, comm.rank) if comm.size > 1 else exc) from None
    clock.append(("loading the models", time.monotonic()))
    # model 0's names for a dump's types: rank 0 holds model 0 (the first of group 0)
    type_map = settings.type_map or comm.bcast(models[0].type_map if comm.rank == 0 else None, root=0)
    if typed:
        name_dump_types(series, type_map, settings.trajectories)
        _check_same_atoms(settings, series)
    try:
        rows = _evaluate(settings, series, layout, group, threads, models, keep)
    except DriverError as exc:
        raise (_on_rank(exc, comm.rank) if comm.size > 1 else exc) from None
    clock.append(("evaluating", time.monotonic()))
    gathered = comm.gather(rows, root=0) if comm.size > 1 else [rows]
    if comm.rank != 0:
        return None, list(type_map)
    for part in gathered:
        rows.update(part)
    return rows, list(type_map)


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


def _check_same_atoms(settings: DeviSettings, series: Sequence[list[Frame]]) -> None:
    for path, frames in zip(settings.trajectories, series):
        for k, f in enumerate(frames):
            if f.symbols != frames[0].symbols:
                raise ConfigError(f"{settings.source} {path}: frame {k} has other atoms than frame 0")


def _load_models(settings: DeviSettings, series: Sequence[list[Frame]], layout: DeviLayout) -> dict:
    """This rank's models (index -> model), each loaded once."""
    parameters = settings.parameters(series)
    return {
        m: DeepPotModel(settings.models[m], type_map=settings.type_map, parameters=parameters, head=settings.head)
        for m in layout.models
    }


#: Atoms per model call on the CPU unless ``--batch`` says: on one torch thread (CPU time
#: per frame, m0.pth, 2026-12-05) 256 atoms took 32.6 ms a frame one frame a call, 33.2
#: two, 45.7 eight; 128 atoms 14.4 ms one, 18.3 four; 64 atoms 10.7 one, 9.8 two; 32
#: atoms 6.3 one, 4.7 four or eight: large batches leave the caches, small ones pay the
#: call's overhead.
CPU_ATOMS_PER_CALL = 128
GPU_FRAMES_PER_CALL = 8


def frames_per_call(settings: DeviSettings, natoms: int) -> int:
    """``--batch``, else about CPU_ATOMS_PER_CALL atoms a call, or GPU_FRAMES_PER_CALL on a GPU."""
    if settings.batch:
        return settings.batch
    if os.environ.get("DEVICE") != "cpu" and visible_gpus():
        return GPU_FRAMES_PER_CALL
    return max(1, CPU_ATOMS_PER_CALL // max(natoms, 1))


def _chunks(settings: DeviSettings, series: Sequence[list[Frame]], layout: DeviLayout) -> list[list[tuple[int, int]]]:
    """This group's frames, (series, index), every G-th of all, in chunks of up to
    ``frames_per_call`` frames of one series: one model call per chunk and model."""
    tasks = [(s, k) for s, frames in enumerate(series) for k in range(len(frames))]
    mine = tasks[layout.group :: layout.groups]
    per_call = [frames_per_call(settings, len(frames[0].symbols)) for frames in series]
    chunks = []
    k = 0
    while k < len(mine):
        chunk = [t for t in mine[k : k + per_call[mine[k][0]]] if t[0] == mine[k][0]]
        chunks.append(chunk)
        k += len(chunk)
    return chunks


#: The variables by which a user sets the threads of the models' calls (deepmd-kit reads the
#: DP_ ones, torch and OpenMP the others): with any of them set, ``devi`` leaves threads alone.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "DP_INTRA_OP_PARALLELISM_THREADS", "TF_INTRA_OP_PARALLELISM_THREADS")


def worker_threads(settings: DeviSettings, layout: DeviLayout, local_ranks: int, n_chunks: int) -> int:
    """How many chunks this rank evaluates at once, each in its own thread, and the
    threads of each model call (``OMP_NUM_THREADS``, set here before torch starts).

    Unless the user set the threads (any of ``THREAD_VARIABLES``: then 1 chunk at a
    time, their settings kept), the rank's share of the node's cores
    (``os.sched_getaffinity`` over the ranks on the node) goes to chunks in parallel,
    one torch thread each, when the rank holds every model (no chunk waits for another
    rank) and every model is a PyTorch one; otherwise to the threads of one call.
    Chunks in parallel scale with the cores where one call on several threads does not:
    at 256 atoms a call on two threads took nearly as long as on one, and on a busy
    machine OpenMP's waiting threads made it several times slower."""
    if any(os.environ.get(v) for v in THREAD_VARIABLES):
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    share = max(1, cpus // max(local_ranks, 1))
    pytorch = all(str(m).endswith((".pth", ".pt")) for m in settings.models)
    threads = min(share, n_chunks) if layout.size == 1 and pytorch else 1
    os.environ["OMP_NUM_THREADS"] = str(max(1, share // threads))
    os.environ.setdefault("MKL_NUM_THREADS", os.environ["OMP_NUM_THREADS"])
    return max(threads, 1)


def _evaluate(
    settings: DeviSettings, series: Sequence[list[Frame]], layout: DeviLayout, group, threads: int, models: dict, keep
) -> dict:
    """This rank's share: its models on its group's chunks of frames; the group's first
    rank gathers the chunk's results of all models and keeps the rows (``keep``). A rank
    that holds every model evaluates several chunks at once in threads (``worker_threads``)."""
    types = {
        (s, m): models[m].atom_types(frames[0].symbols, template=f"{settings.source} {settings.trajectories[s]}")
        for s, frames in enumerate(series)
        for m in models
    }
    chunks = _chunks(settings, series, layout)
    total = sum(len(c) for c in chunks)
    rows: dict[tuple[int, int], object] = {}
    started = time.monotonic()
    done = 0
    shown = layout.group == 0 and layout.position == 0
    call = partial(_call, settings, series, types)
    if threads == 1:
        for chunk in chunks:
            results = call(models, chunk)
            if layout.size > 1:
                parts = group.gather(results, root=0)
                if layout.position != 0:
                    continue
                for part in parts:
                    results.update(part)
            keep(chunk, results, rows)
            done += len(chunk)
            if shown:
                _progress(done, total, started)
        return rows
    # OpenMP's thread count is per thread: set in each worker, or its calls take all cores
    log.debug("devi: %d chunks in %d threads of one torch thread each", len(chunks), threads)
    pool = ThreadPoolExecutor(threads, thread_name_prefix="devi", initializer=one_backend_thread)
    try:
        # each model's first calls (TorchScript profiles its graph, the driver checks its
        # direct path) on the first chunk, the models in parallel
        first = list(pool.map(lambda m: call({m: models[m]}, chunks[0]), models))
        keep(chunks[0], {m: r[m] for r in first for m in r}, rows)
        done = len(chunks[0])
        if shown:
            _progress(done, total, started)
        for chunk, results in zip(chunks[1:], pool.map(partial(call, models), chunks[1:])):
            keep(chunk, results, rows)
            done += len(chunk)
            if shown:
                _progress(done, total, started)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return rows


def _call(settings: DeviSettings, series: Sequence[list[Frame]], types: dict, models: dict, chunk: list) -> dict:
    """Each of ``models`` (index -> model) on the frames of ``chunk``: index -> its ``BatchEvaluation``."""
    s = chunk[0][0]
    frames = [series[s][i] for _, i in chunk]
    positions = np.stack([f.positions for f in frames])
    cells = None if frames[0].cell is None else np.stack([f.cell for f in frames])
    aparam = None if settings.aparam_array is None else np.stack([f.aparam for f in frames])
    results = {}
    shared: dict = {}  # neighbour lists the models of this rank can share on these frames
    for m, model in models.items():
        result = model.evaluate_batch(positions, cells, types[(s, m)], aparam=aparam, shared=shared)
        if not (np.isfinite(result.forces).all() and np.isfinite(result.virial).all()):
            raise ModelError(
                f"model {settings.models[m]} returned non-finite forces or virial on "
                f"{settings.trajectories[s]} frames {chunk[0][1]}..{chunk[-1][1]}"
            )
        results[m] = result
    return results


def _keep_rows(settings: DeviSettings, chunk: list, results: dict, rows: dict) -> None:
    """The deviation rows of a chunk's frames, from every model's forces and virials."""
    n_models = len(settings.models)
    stacked_f = np.stack([results[m].forces for m in range(n_models)], axis=1)  # (frames, models, nat, 3)
    stacked_v = np.stack([results[m].virial for m in range(n_models)], axis=1)
    for j, task in enumerate(chunk):
        row = model_deviation(
            stacked_f[j],
            stacked_v[j],
            relative=settings.relative,
            relative_v=settings.relative_v,
            atomic=settings.atomic,
            # each atom's deviation is written only with candidates or --atomic; every row is held till the end
            per_atom=settings.trust is not None or settings.atomic,
        )
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
