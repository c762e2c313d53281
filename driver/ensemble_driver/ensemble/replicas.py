"""Model 0 on several ranks for i-PI's batched transport (``--model0-ranks R0`` with one
connection): rank 0 splits the distinct structures of each batch into R0 slices, sends
R0-1 of them to the batch replicas (ranks 1..R0-1, each holding its own copy of model 0),
evaluates the first slice itself meanwhile, and joins the answers into one reply. The
deviation jobs of the batch's beads go to the ensemble ranks as with one model-0 rank.

The slices are the same structures evaluated by the same model, so the forces are model
0's to the last bits a smaller batch may change (deepmd evaluates the frames of a batch
together; see tests/test_scale.py for the bound). The messages: see :mod:`messages`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np

from .. import ranks
from ..errors import ModelError, RankLost, ReportedError, failure_text
from ..models.results import BatchEvaluation
from ..signals import NoSignals, Stopped, StopSignals
from . import messages
from .jobs import LocalModel

log = logging.getLogger(__name__)

#: The longest a replica sleeps between looks for its next slice: a slice is on the
#: critical path of the step (rank 0 waits for it), so a replica looks often (a look is
#: an MPI_Iprobe of a few microseconds), where followers, off the critical path, sleep up
#: to 2 ms (ranks.wait_for).
REPLICA_MAX_SLEEP_S = 1e-4


class Model0Replicas:
    """Rank 0's side: one batch evaluated over rank 0 and the replicas. A replica that
    has not answered its slice within ``deadline_s`` (--server-timeout; a slice takes as
    long as rank 0's own) is lost."""

    def __init__(
        self,
        comm,
        model0: LocalModel,
        replicas: Sequence[int],
        natoms: int,
        *,
        deadline_s: float | None = None,
        hosts: Sequence[str] = (),
    ):
        self.comm = comm
        self.model0 = model0
        self.replicas = list(replicas)
        self.natoms = natoms
        self.deadline_s = deadline_s
        self.hosts = list(hosts)

    def evaluate_batch(self, positions: np.ndarray, cells: np.ndarray | None) -> BatchEvaluation:
        slices = np.array_split(np.arange(len(positions)), 1 + len(self.replicas))
        sent = []
        for rank, part in zip(self.replicas, slices[1:]):
            if len(part):
                buf = messages.pack_batch(None if cells is None else cells[part], positions[part])
                result = np.empty(messages.batch_result_size(self.natoms, len(part)))
                send = self.comm.Isend(buf, dest=rank, tag=messages.TAG_CONTROL)
                sent.append((rank, send, self.comm.Irecv(result, source=rank, tag=messages.TAG_RESULT), result, buf))
        mine = slices[0]
        own = self.model0.model.evaluate_batch(
            positions[mine], None if cells is None else cells[mine], self.model0.atom_types
        )
        parts = [(own.energy, own.forces, own.virial)]
        for rank, send, recv, result, _ in sent:
            deadline = None if self.deadline_s is None else time.monotonic() + self.deadline_s
            if not ranks.wait_for(lambda r=rank, q=recv: q.Test() or self._failed(r), deadline=deadline):
                host = f" on {self.hosts[rank]}" if rank < len(self.hosts) else ""
                raise RankLost(
                    f"rank {rank}{host} (a replica of model 0) has not answered for {self.deadline_s:g} s "
                    f"(--server-timeout {self.deadline_s:g}): its host or the network is gone"
                )
            ranks.wait_for(send.Test)
            parts.append(messages.unpack_batch_result(result, self.natoms))
        energy, forces, virial = (np.concatenate(x) for x in zip(*parts))
        return BatchEvaluation(energy, forces, virial)

    def _failed(self, rank: int) -> bool:
        if self.comm.Iprobe(source=rank, tag=messages.TAG_ERROR):
            raise ModelError(f"rank {rank}: {self.comm.recv(source=rank, tag=messages.TAG_ERROR)}")
        return False


def replica_loop(comm, model0: LocalModel, *, natoms: int, signals: StopSignals | None = None) -> int:
    """A batch replica: evaluate the slices rank 0 sends until its STOP (as
    :func:`followers.follower_loop`: 0 after a clean run, ReportedError after a failed one)."""
    signals = signals if signals is not None else NoSignals()
    failed = False
    structures = slices = 0
    while True:
        count = None
        pause = 1e-5
        while count is None:
            count = ranks.probe_count(comm, 0, messages.TAG_CONTROL)
            if count is None:
                if signals.grace_over():
                    raise Stopped(signals.received)
                time.sleep(pause)
                pause = min(2 * pause, REPLICA_MAX_SLEEP_S)
        buf = np.empty(count)
        comm.Recv(buf, source=0, tag=messages.TAG_CONTROL)
        status = messages.stop_status(buf)
        if status is not None:
            log.info("rank %d (batch replica of model 0): %d structures in %d slices", comm.rank, structures, slices)
            if status:
                raise ReportedError("", status, print_here=False)
            return 0
        if failed:
            continue
        cells, positions = messages.unpack_batch(buf, natoms)
        try:
            result = model0.model.evaluate_batch(positions, cells, model0.atom_types)
            if not (np.isfinite(result.energy).all() and np.isfinite(result.forces).all()):
                raise ModelError(f"model 0 ({model0.model.path}) returned non-finite energy or forces in a batch slice")
        except Exception as exc:
            failed = True
            message = failure_text(exc)
            comm.send(message, dest=0, tag=messages.TAG_ERROR)
            continue
        structures += len(positions)
        slices += 1
        answer = messages.pack_batch_result(result.energy, result.forces, result.virial)
        ranks.wait_for(comm.Isend(answer, dest=0, tag=messages.TAG_RESULT).Test)
