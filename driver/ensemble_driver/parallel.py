"""Ranks: who holds which model, and the messages between the leader and its followers.

The only module that imports mpi4py, and only when the process was started by an MPI
launcher (a single process needs no MPI at all). :class:`SerialComm` stands in for it
with the same methods, so the rest of the driver has one code path.

Roles: rank 0 (the leader) owns the socket and model 0; followers (ranks >= 1) hold the
other models and evaluate them when the leader sends a structure. Messages are NumPy
float64 buffers moved with mpi4py's upper-case point-to-point calls (no pickling on the
hot path), all of a size fixed by the atom count. Point-to-point rather than collectives
(Bcast/Gatherv): a collective makes every rank enter it together, so the leader would
wait at each deviation step for the slowest follower to finish the previous one; with
non-blocking sends and receives each follower works through its queue at its own pace
while the leader goes on serving the server.

- WORK, leader -> follower: ``[1, seq, rid, step, periodic, cell(9), positions(3N)]``;
  STOP has the same tag: ``[0, exit status]``;
- RESULT, follower -> leader: ``[seq, then per model: energy, forces(3N), virial(9)]``;
- ERROR, follower -> leader: a pickled one-line message (rare).

Nobody waits in a blocking MPI call: MPICH busy-polls inside them, which would take a
core from the models on a machine with more ranks than cores. Waits poll ``Test`` with
a short sleep that grows while nothing arrives (see :func:`wait_for`).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ConfigError

TAG_CONTROL = 11
TAG_RESULT = 12
TAG_ERROR = 13
KIND_STOP = 0.0
KIND_WORK = 1.0
WORK_HEADER = 5  # kind, seq, rid, step, periodic
_LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS")
_LAUNCHER_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK", "SLURM_PROCID")


def launched_by_mpi() -> bool:
    """True when an MPI launcher started this process with more than one rank."""
    for name in _LAUNCHER_SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 1:
            return True
    return False


def launch_rank() -> int:
    """This process's rank as the launcher announces it (0 without a launcher); known
    before MPI is initialised, for log lines and for printing errors once."""
    if not launched_by_mpi():
        return 0
    for name in _LAUNCHER_RANK_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


class SerialComm:
    """A one-rank stand-in with the subset of mpi4py's Comm API the driver uses."""

    rank = 0
    size = 1

    def allgather(self, obj: Any) -> list[Any]:
        return [obj]

    def bcast(self, obj: Any, root: int = 0) -> Any:
        return obj

    def Abort(self, errorcode: int = 1) -> None:  # noqa: N802 (mpi4py's name)
        os._exit(errorcode)


def node_local_rank(comm) -> int:
    """This rank's index among the ranks on its own node (0 without MPI): MPI's
    shared-memory split (MPI_COMM_TYPE_SHARED), which groups the ranks that share a node,
    whatever the launcher's placement. Collective: every rank calls it."""
    if isinstance(comm, SerialComm):
        return 0
    from mpi4py import MPI

    node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.rank)
    try:
        return node.rank
    finally:
        node.Free()


def host_name() -> str:
    return socket.gethostname()


def world(use_mpi: bool | None = None):
    """MPI.COMM_WORLD when launched by mpiexec (or ``use_mpi``), else a SerialComm."""
    if use_mpi is None:
        use_mpi = launched_by_mpi()
    if not use_mpi:
        return SerialComm()
    import mpi4py

    mpi4py.rc.thread_level = "funneled"  # only the main thread calls MPI
    from mpi4py import MPI

    return MPI.COMM_WORLD


@dataclass(frozen=True)
class Layout:
    """Which models each rank holds: ``models_of[rank]`` lists model indices."""

    models_of: tuple[tuple[int, ...], ...]

    @property
    def n_models(self) -> int:
        return sum(len(m) for m in self.models_of)

    @property
    def n_ranks(self) -> int:
        return len(self.models_of)

    def rank_of(self, model: int) -> int:
        for rank, models in enumerate(self.models_of):
            if model in models:
                return rank
        raise IndexError(model)


def deal_models(n_models: int, n_ranks: int) -> Layout:
    """Model 0 on rank 0. With one rank, all models there (evaluated in turn, as LAMMPS
    does). Otherwise models 1.. are dealt round-robin over ranks 1..R-1, so the leader,
    which also serves the socket, holds model 0 only."""
    if n_models < 1:
        raise ConfigError("no model given")
    if n_ranks > n_models:
        raise ConfigError(
            f"{n_ranks} MPI ranks for {n_models} models: each rank holds at least one model; "
            f"use at most {n_models} ranks (mpiexec -n {n_models})"
        )
    if n_ranks == 1:
        return Layout((tuple(range(n_models)),))
    followers: list[list[int]] = [[] for _ in range(n_ranks - 1)]
    for model in range(1, n_models):
        followers[(model - 1) % (n_ranks - 1)].append(model)
    return Layout(((0,), *map(tuple, followers)))


def wait_for(test: Callable[[], bool], *, deadline: float | None = None, max_sleep: float = 2e-3) -> bool:
    """Poll ``test()`` until it is true; sleep between polls, 10 us at first, growing to
    ``max_sleep`` while nothing happens. Returns False if ``deadline`` (monotonic) passes."""
    pause = 1e-5
    while not test():
        if deadline is not None and time.monotonic() > deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 2, max_sleep)
    return True


def work_size(natoms: int) -> int:
    return WORK_HEADER + 9 + 3 * natoms


def result_size(natoms: int, n_local_models: int) -> int:
    return 1 + n_local_models * (1 + 3 * natoms + 9)


def pack_work(buf: np.ndarray, seq: int, rid: int, step: int, cell: np.ndarray | None, positions: np.ndarray) -> None:
    """Fill a WORK buffer in place (float64 holds the integers exactly)."""
    buf[:WORK_HEADER] = (KIND_WORK, seq, rid, step, 0.0 if cell is None else 1.0)
    buf[WORK_HEADER : WORK_HEADER + 9] = 0.0 if cell is None else cell.ravel()
    buf[WORK_HEADER + 9 :] = positions.ravel()


@dataclass(frozen=True)
class Work:
    seq: int
    rid: int
    step: int
    cell: np.ndarray | None
    positions: np.ndarray


def unpack_work(buf: np.ndarray, natoms: int) -> Work:
    kind, seq, rid, step, periodic = buf[:WORK_HEADER]
    assert kind == KIND_WORK
    cell = buf[WORK_HEADER : WORK_HEADER + 9].reshape(3, 3).copy() if periodic else None
    positions = buf[WORK_HEADER + 9 : WORK_HEADER + 9 + 3 * natoms].reshape(natoms, 3).copy()
    return Work(int(seq), int(rid), int(step), cell, positions)


def pack_results(
    buf: np.ndarray, seq: int, energies: Sequence[float], forces: Sequence[np.ndarray], virials: Sequence[np.ndarray]
) -> None:
    buf[0] = seq
    offset = 1
    for e, f, v in zip(energies, forces, virials):
        buf[offset] = e
        buf[offset + 1 : offset + 1 + f.size] = f.ravel()
        offset += 1 + f.size
        buf[offset : offset + 9] = v.ravel()
        offset += 9


def unpack_results(buf: np.ndarray, natoms: int, n_local_models: int):
    """(seq, energies (n,), forces (n, nat, 3), virials (n, 3, 3)) from a RESULT buffer."""
    body = buf[1:].reshape(n_local_models, 1 + 3 * natoms + 9)
    return (
        int(buf[0]),
        body[:, 0].copy(),
        body[:, 1 : 1 + 3 * natoms].reshape(n_local_models, natoms, 3).copy(),
        body[:, 1 + 3 * natoms :].reshape(n_local_models, 3, 3).copy(),
    )
