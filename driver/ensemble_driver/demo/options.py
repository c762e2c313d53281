"""The parser of ``ensemble-driver demo``."""

from __future__ import annotations

import argparse


def add_demo_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run a short i-PI path-integral simulation on the shipped models",
        description="Run a short i-PI path-integral (PIMD) simulation of a 32-atom Cu-Au "
        "alloy with the four shipped example models, driven by ensemble-driver under mpiexec "
        "(model 0 drives the dynamics; the deviation of the ensemble is written per bead), "
        "and print where the outputs are. Needs a source checkout (ipi_inputs/ and examples/models/).",
    )
    p.add_argument("--outdir", default="demo_output", help="output directory (default: %(default)s)")
    p.add_argument("--steps", type=int, default=20, help="i-PI steps (default: %(default)s)")
    p.add_argument("--beads", type=int, default=4, help="path-integral beads (default: %(default)s)")
    p.add_argument("--ranks", type=int, default=2, help="MPI ranks for the 4 models (default: %(default)s)")
    p.add_argument("--out-freq", type=int, default=5, help="deviation every N steps (default: %(default)s)")
    p.add_argument(
        "--timeout", type=float, default=600.0, help="give up after this many seconds (default: %(default)s)"
    )
