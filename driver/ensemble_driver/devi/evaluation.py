"""Every model of ``devi`` (and ``calibrate``) on every frame: the split over the ranks
(:class:`DeviLayout`), the frames per model call, the worker threads, and the rows
gathered on rank 0."""

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
from ..errors import ConfigError, DriverError, ModelError
from ..models.deepmd import DeepPotModel, one_backend_thread
from ..models.devices import visible_gpus
from .frames import Frame, name_dump_types
from .settings import DeviSettings

log = logging.getLogger(__name__)


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


def _check_same_atoms(settings: DeviSettings, series: Sequence[list[Frame]]) -> None:
    for path, frames in zip(settings.trajectories, series):
        for k, f in enumerate(frames):
            if f.symbols != frames[0].symbols:
                raise ConfigError(f"{settings.source} {path}: frame {k} has other atoms than frame 0")


def _load_models(settings: DeviSettings, series: Sequence[list[Frame]], layout: DeviLayout) -> dict:
    """This rank's models (index -> model), each loaded once."""
    parameters = settings.model_parameters(series)
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
    aparam = None if settings.parameters.aparam_array is None else np.stack([f.aparam for f in frames])
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
