"""Run under mpiexec by tests/peers/test_hosts.py: rank 0 sends SIZE bytes to the last rank;
rank 0 prints, for every rank, its host name and how many ranks share its node (JSON)."""

import json
import socket
import sys

import numpy as np
from mpi4py import MPI

world = MPI.COMM_WORLD
node = world.Split_type(MPI.COMM_TYPE_SHARED)
size = int(sys.argv[1])
buffer = np.zeros(size, np.uint8)
if world.rank == 0:
    buffer[:] = 7
    world.Send(buffer, dest=world.size - 1)
elif world.rank == world.size - 1:
    world.Recv(buffer, source=0)
    assert (buffer == 7).all()
ranks = world.gather([world.rank, socket.gethostname(), node.size])
if world.rank == 0:
    print(json.dumps(ranks), flush=True)
