"""ASE's SocketClient with deepmd-kit's ASE calculator: the usual Python alternative.

    python ase_client.py MODEL STRUCTURE ADDRESS

STRUCTURE is any file ASE reads (the same atoms as the server's). deepmd.calculator.DP
stores an extra "virial" result that ASE's client does not expect (KeyError), so it is
dropped; ASE then sends -V * stress as the virial.
"""

import sys

import ase.io
from ase.calculators.socketio import SocketClient
from deepmd.calculator import DP


class DPForSocket(DP):
    def calculate(self, *args, **kwargs):
        super().calculate(*args, **kwargs)
        self.results.pop("virial", None)


def main() -> int:
    if len(sys.argv) != 4 or sys.argv[1] in ("-h", "--help"):
        print(__doc__, file=sys.stderr)
        return 2
    model, structure, address = sys.argv[1:4]
    atoms = ase.io.read(structure)
    atoms.calc = DPForSocket(model)
    SocketClient(unixsocket=address).run(atoms, use_stress=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
