"""Ranks: the MPI world, and the moving of messages between ranks.

The only module that imports mpi4py, and only when the process was started by an MPI
launcher (a single process needs no MPI at all). :class:`SerialComm` stands in for it
with the same methods, so the rest of the driver has one code path. Which rank holds
which model is :mod:`ensemble.layout`'s; the messages (their tags and buffers) are
:mod:`ensemble.messages`'s; this module moves them, with mpi4py's upper-case
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
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from .errors import ConfigError

# what launchers announce: MPICH's and Intel's hydra and Slurm's PMI (PMI_SIZE), Open MPI
# (OMPI_COMM_WORLD_SIZE, also under PMIx), MVAPICH (MV2_COMM_WORLD_SIZE), srun
_LAUNCHER_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS")
_LAUNCHER_RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK", "SLURM_PROCID")


def launched_by_mpi() -> bool:
    """True when an MPI launcher started this process with more than one rank."""
    return launcher_size() is not None


def launcher_size() -> tuple[str, int] | None:
    """(variable, process count) of the first launcher variable that announces more than
    one process; None when no launcher did."""
    for name in _LAUNCHER_SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 1:
            return name, int(value)
    return None


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
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from mpi4py import MPI  # warns of a foreign launcher in several lines: said in one below

    announced = launcher_size()
    if announced is not None and MPI.COMM_WORLD.size == 1:
        raise ConfigError(_foreign_launcher(announced, MPI.Get_library_version()))
    for warning in caught:
        warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return MPI.COMM_WORLD


def _foreign_launcher(announced: tuple[str, int], library: str) -> str:
    """The one line for N lone processes: a launcher of another MPI than mpi4py's."""
    name, size = announced
    mpi = " ".join(library.split()[:3]).rstrip(":,") or "its MPI"
    beside = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "mpiexec")
    fix = f"start it with {beside}" if os.path.exists(beside) else "start it with that MPI's mpiexec"
    return (
        f"the launcher started {size} processes ({name}={size}) but each sees an MPI world of one: the "
        f"launcher is not of the MPI that mpi4py uses ({mpi}); {fix}, or rebuild mpi4py against "
        "the launcher's MPI"
    )


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
