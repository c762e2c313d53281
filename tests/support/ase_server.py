"""ASE's real socket server in a process of its own, so that a test can kill it.

    python ase_server.py STRUCTURE UNIXSOCKET NCALC

Evaluates NCALC rattled copies of STRUCTURE (standard deviation $ASE_SERVER_RATTLE
Angstrom, default 0.02) through the client, printing "done k" after each, then "idle" and waits (blocked, as a server between requests) until it is killed.
Exits 0 if the client closed the connection early without sending NaN, 3 if it did send
non-finite numbers (ASE asserts every array it receives is finite).
"""

import os
import sys
import threading

import ase.io
from ase.calculators.socketio import SocketClosed, SocketIOCalculator


def main() -> int:
    structure, unixsocket, ncalc = sys.argv[1], sys.argv[2], int(sys.argv[3])
    atoms = ase.io.read(structure)
    stdev = float(os.environ.get("ASE_SERVER_RATTLE", "0.02"))
    with SocketIOCalculator(unixsocket=unixsocket, timeout=300) as calc:
        atoms.calc = calc
        for k in range(ncalc):
            copy = atoms.copy()
            copy.rattle(stdev=stdev, seed=k)
            atoms.positions = copy.positions
            try:
                atoms.get_forces()
            except AssertionError:
                print("client sent non-finite numbers", flush=True)
                return 3
            except (SocketClosed, OSError) as exc:
                print(f"client closed the connection: {type(exc).__name__}", flush=True)
                return 0
            print(f"done {k}", flush=True)
        print("idle", flush=True)
        threading.Event().wait()  # blocked until killed
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
