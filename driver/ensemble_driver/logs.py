"""Log lines: one format for every rank, with the rank under MPI."""

from __future__ import annotations

import logging
import sys

from .ranks import launch_rank, launched_by_mpi

PROG = "ensemble-driver"


def setup_logging(verbose: int, quiet: bool = False) -> None:
    """Log to stderr; under MPI the rank is in every line, and followers (ranks >= 1)
    only log warnings unless verbose. Calling it again changes the level."""
    rank = launch_rank()
    level = logging.WARNING if quiet or (rank and not verbose) else (logging.DEBUG if verbose else logging.INFO)
    name = f"{PROG}[{rank}]" if launched_by_mpi() else PROG
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            format=f"%(asctime)s {name} %(levelname)s: %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
        )
    root.setLevel(level)
