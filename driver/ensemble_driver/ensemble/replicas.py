"""Model 0 on several ranks for i-PI's batched transport (``--model0-ranks R0`` with one
connection): rank 0 splits the distinct structures of each batch into R0 slices, sends
R0-1 of them to the batch replicas (ranks 1..R0-1, each holding its own copy of model 0),
evaluates the first slice itself meanwhile, and joins the answers into one reply. The
deviation jobs of the batch's beads go to the ensemble ranks as with one model-0 rank.

The slices are the same structures evaluated by the same model, so the forces are model
0's to the last bits a smaller batch may change (deepmd evaluates the frames of a batch
together; see tests/peers/test_scale.py for the bound). The messages: see :mod:`messages`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np

from .. import ranks
from ..errors import ModelError, RankLost
from ..models.local import LocalModel
from ..models.results import BatchEvaluation
from . import messages

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
        self.talk = messages.Conversation(comm)
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
                sent.append((rank, self.talk.send_work(rank, buf), self.talk.expect_result(rank, result), result, buf))
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
        if (message := self.talk.error_from(rank)) is not None:
            raise ModelError(f"rank {rank}: {message}")
        return False
