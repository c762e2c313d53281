"""Ranks: who holds which model, and the moving of messages between them.

The only module that imports mpi4py, and only when the process was started by an MPI
launcher (a single process needs no MPI at all). :class:`SerialComm` stands in for it
with the same methods, so the rest of the driver has one code path.

Roles (see :func:`deal_models`): ranks 0..R0-1 hold model 0 (``--model0-ranks R0``):
the first K of them each serve a connection to the server (``--connections K``), the
others (with one connection) evaluate slices of i-PI's batches for rank 0; the ensemble
ranks (R0 and up) hold the other models and evaluate them when a connection rank sends a
structure. Rank 0 writes every row and ends the job. The messages (their tags and
buffers) are :mod:`messages`'s; this module moves them, with mpi4py's upper-case
point-to-point calls. Point-to-point rather than collectives (Bcast/Gatherv): a
collective makes every rank enter it together, so a connection rank would wait at each
deviation step for the slowest ensemble rank to finish the previous one; with
non-blocking sends and receives each rank works through its queue at its own pace while
the connection ranks go on serving the server.

With several connections each bead's steps are counted by :class:`StepCounter`, one
integer per bead in an MPI window on rank 0, advanced with an atomic fetch-and-add.

Nobody waits in a blocking MPI call: MPICH busy-polls inside them, which would take a
core from the models on a machine with more ranks than cores. Waits poll ``Test`` with
a short sleep that grows while nothing arrives (see :func:`wait_for`).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import ConfigError

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


def node_share(comm) -> tuple[int, int]:
    """(this rank's index among the ranks on its own node, how many ranks that node has);
    (0, 1) without MPI. MPI's shared-memory split (MPI_COMM_TYPE_SHARED) groups the ranks
    that share a node, whatever the launcher's placement. Collective: every rank calls it."""
    if isinstance(comm, SerialComm):
        return 0, 1
    from mpi4py import MPI

    node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.rank)
    try:
        return node.rank, node.size
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
    """Which models each rank holds: ``models_of[rank]`` lists model indices. The first
    ``model0_ranks`` ranks hold model 0 (the first ``connections`` of them serve a
    connection each); the ensemble ranks after them hold the other models."""

    models_of: tuple[tuple[int, ...], ...]
    model0_ranks: int = 1
    connections: int = 1

    @property
    def n_models(self) -> int:
        return len({m for models in self.models_of for m in models})

    @property
    def n_ranks(self) -> int:
        return len(self.models_of)

    @property
    def connection_ranks(self) -> list[int]:
        return list(range(self.connections))

    @property
    def batch_replicas(self) -> list[int]:
        """The model-0 ranks that serve no connection: they evaluate slices of batches."""
        return list(range(self.connections, self.model0_ranks))

    @property
    def ensemble_ranks(self) -> list[int]:
        return list(range(self.model0_ranks, self.n_ranks))

    def role(self, rank: int) -> str:
        if rank < self.connections:
            return f"connection {rank}" if self.connections > 1 else "the connection"
        if rank < self.model0_ranks:
            return "batch replica of model 0"
        return "ensemble"

    def rank_of(self, model: int) -> int:
        for rank, models in enumerate(self.models_of):
            if model in models:
                return rank
        raise IndexError(model)


def deal_models(n_models: int, n_ranks: int, model0_ranks: int = 1, connections: int = 1) -> Layout:
    """Model 0 on ranks 0..model0_ranks-1. With one rank, all models there (evaluated in
    turn, as LAMMPS does). Otherwise models 1.. are dealt round-robin over the ranks after
    the model-0 ranks, so a rank that serves the socket holds model 0 only."""
    if n_models < 1:
        raise ConfigError("no model given")
    if connections > model0_ranks:
        raise ConfigError(
            f"--connections {connections} needs a model-0 rank per connection: --model0-ranks must be "
            f"at least {connections} (or left out)"
        )
    if model0_ranks > n_ranks:
        what = f"--connections {connections}" if connections > 1 else f"--model0-ranks {model0_ranks}"
        raise ConfigError(
            f"{what} needs {model0_ranks} MPI ranks for model 0, but this job has {n_ranks}: run under "
            f"mpiexec -n {model0_ranks + n_models - 1}"
        )
    others = n_ranks - model0_ranks
    if n_ranks > 1 and n_models > 1 and others == 0:
        what = f"--connections {connections}" if connections > 1 else f"--model0-ranks {model0_ranks}"
        raise ConfigError(
            f"{n_ranks} MPI ranks all hold model 0 ({what}): models 1..{n_models - 1} need "
            f"ranks of their own; run under mpiexec -n {model0_ranks + n_models - 1}"
        )
    if others > n_models - 1 and n_ranks > 1:
        most = model0_ranks + n_models - 1
        replicas = f" with {model0_ranks} ranks for model 0" if model0_ranks > 1 else ""
        raise ConfigError(
            f"{n_ranks} MPI ranks for {n_models} models{replicas}: each rank holds at least one model; "
            f"use at most {most} ranks (mpiexec -n {most})"
        )
    if n_ranks == 1:
        return Layout((tuple(range(n_models)),))
    ensemble: list[list[int]] = [[] for _ in range(others)]
    for model in range(1, n_models):
        ensemble[(model - 1) % others].append(model)
    return Layout(((0,),) * model0_ranks + tuple(map(tuple, ensemble)), model0_ranks, connections)


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


# -- several senders: the ensemble ranks serve every connection rank ---------------------
def irecv_any(comm, buf: np.ndarray, tag: int):
    """A receive of ``buf`` from any rank; returns (request, status): once the request
    has completed, ``status.Get_source()`` is the sender."""
    from mpi4py import MPI

    status = MPI.Status()
    return comm.Irecv(buf, source=MPI.ANY_SOURCE, tag=tag), status


def probe_count(comm, source: int, tag: int) -> int | None:
    """The number of float64 in the next message from ``source`` with ``tag``, or None
    if none has arrived (non-blocking)."""
    from mpi4py import MPI

    status = MPI.Status()
    if not comm.Iprobe(source=source, tag=tag, status=status):
        return None
    return status.Get_count(MPI.DOUBLE)


def poll_object(comm, tag: int) -> tuple[int, Any] | None:
    """(sender, object) of a pickled message with ``tag`` from any rank, if one has arrived."""
    from mpi4py import MPI

    status = MPI.Status()
    if not comm.Iprobe(source=MPI.ANY_SOURCE, tag=tag, status=status):
        return None
    source = status.Get_source()
    return source, comm.recv(source=source, tag=tag)


# -- each bead's steps, counted across connections ---------------------------------------
class StepCounter:
    """How many times each request id has been evaluated, shared by every connection.

    With one connection the session counts by itself. With several, a bead's structures
    reach whichever connection i-PI picks (``matching='auto'`` or ``'any'``), so each
    bead's count is one int64 in an MPI window on rank 0, advanced with an atomic
    fetch-and-add (MPI_Fetch_and_op, passive target): the k-th evaluation of bead r is
    step k of bead r whichever connection carried it. The order is i-PI's: a bead's next
    structure is sent only once every bead of the step has its forces, which the
    connection sends after it took the step number. Request ids beyond the window
    (estimator clones, >= --nbeads) are counted by each connection alone: they get no rows.

    Creating one is collective over ``comm`` (every rank takes part, rank 0 holds it)."""

    def __init__(self, comm, size: int):
        from mpi4py import MPI

        self._mpi = MPI
        self.size = size
        self._win = MPI.Win.Allocate(8 * size if comm.rank == 0 else 0, 8, comm=comm)
        if comm.rank == 0:
            np.frombuffer(self._win.tomemory(), dtype=np.int64)[:] = 0
        comm.Barrier()
        self._win.Lock_all()
        self._one = np.ones(1, dtype=np.int64)
        self._out = np.zeros(1, dtype=np.int64)
        self._local: dict[int, int] = {}

    def next_step(self, rid: int) -> int:
        """The step of this evaluation of ``rid``; the next one gets the step after it."""
        if not 0 <= rid < self.size:
            step = self._local.get(rid, 0)
            self._local[rid] = step + 1
            return step
        self._win.Fetch_and_op(self._one, self._out, 0, rid, self._mpi.SUM)
        self._win.Flush(0)
        return int(self._out[0])

    def close(self) -> None:
        """Collective: every rank ends the window's access epoch and frees it."""
        self._win.Unlock_all()
        self._win.Free()
