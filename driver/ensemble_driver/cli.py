"""Command line: the top-level parser (each command's options are built in its wing:
``run/options``, ``devi/options``, ``demo/options``) and the commands: each runs its
work (``run.command``, ``devi.command``, ``devi.plot``, ``demo.command``) and ends with
its status, one line per error."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import fields

from . import __version__
from .arguments import folded, setting_fields
from .calibrate.options import add_calibrate_parser
from .demo.options import add_demo_parser
from .devi.options import add_devi_parser, add_plot_parser
from .errors import DriverError
from .logs import PROG, setup_logging
from .run.options import run_parser


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo.command import run_demo

    setup_logging(0)
    return run_demo(
        args.outdir, steps=args.steps, beads=args.beads, ranks=args.ranks, out_freq=args.out_freq, timeout=args.timeout
    )


#: How long a rank that knows the run failed waits for rank 0 to end the MPI job.
LEADER_ABORT_WAIT_S = 60.0
#: How long a rank that ends the MPI job waits for the launcher to forward its last output.
ABORT_DRAIN_S = 0.3


def exit_now(status: int, *, wait_for_leader: bool = False) -> None:
    """End the process at once with ``status``.

    Called when a run is over and everything it wrote is closed: the interpreter's own
    teardown with torch and deepmd loaded takes 1.5-4 s, which would keep mpiexec (and
    a batch job) waiting. After a clean run MPI is finalised and every rank exits 0.
    After a failure under MPI, rank 0 (or a rank that failed alone) ends the whole job
    with MPI_Abort(status): the one way to make the launcher return that status (with
    MPICH's mpiexec, ranks exiting with different statuses give a racy result), while
    ranks that know rank 0 will do it (``wait_for_leader``) wait to be ended.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        if status and mpi.COMM_WORLD.Get_size() > 1:
            if wait_for_leader:
                threading.Event().wait(LEADER_ABORT_WAIT_S)
            else:
                # MPICH's launcher kills every process on MPI_Abort and may drop what this
                # rank wrote to stderr just before (seen under load: the error line lost);
                # give it a moment to forward the output first
                time.sleep(ABORT_DRAIN_S)
                mpi.COMM_WORLD.Abort(status)
        else:
            mpi.Finalize()
    os._exit(status)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="An i-PI client for DeePMD-kit models. Start with 'ensemble-driver run --help'.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run_parser(sub)
    add_demo_parser(sub)
    add_plot_parser(sub)
    add_devi_parser(sub)
    add_calibrate_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "run":
        from .run.command import run_command

        status, error = _guarded(run_command, args)
        exit_now(status, wait_for_leader=getattr(error, "wait_for_leader", False))
    if args.command == "devi":
        status, _ = _guarded(_cmd_devi, args)
        exit_now(status)
    if args.command == "calibrate":
        exit_now(_guarded(_cmd_calibrate, args)[0])
    if args.command == "plot":
        return _guarded(_cmd_plot, args)[0]
    return _guarded(_cmd_demo, args)[0]


def _cmd_devi(args: argparse.Namespace) -> int:
    from .devi.command import run_devi
    from .devi.settings import DeviSettings
    from .outputs.selection import trust_levels

    setup_logging(args.verbose)
    levels = trust_levels(args.trust_lo, args.trust_hi, args.trust_lo_v, args.trust_hi_v)
    # the options of devi carry the names of DeviSettings' settings (argparse dest)
    given = {f.name: getattr(args, f.name) for f in setting_fields(DeviSettings) if hasattr(args, f.name)}
    given = {name: tuple(v) if isinstance(v, list) else v for name, v in given.items()}
    given.update(trust=levels, batch=None if args.batch is None else max(1, args.batch))
    settings = DeviSettings(**folded(DeviSettings, given))
    return run_devi(settings)


def _cmd_calibrate(args: argparse.Namespace) -> int:
    from .calibrate.command import CalibrateSettings, run_calibrate

    setup_logging(args.verbose)
    given = {f.name: getattr(args, f.name) for f in fields(CalibrateSettings) if hasattr(args, f.name)}
    return run_calibrate(CalibrateSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in given.items()}))


def _cmd_plot(args: argparse.Namespace) -> int:
    from .devi.plot import plot_deviation

    counts = plot_deviation(args.files, args.output, trust_lo=args.trust_lo, trust_hi=args.trust_hi, title=args.title)
    total = sum(counts.values())
    shares = ", ".join(f"{k} {v} ({100 * v / total:.0f}%)" for k, v in counts.items()) if total else ""
    print(f"wrote {args.output}" + (f": {shares}" if shares else ""))
    return 0


def _say(line: str) -> None:
    """One line to stderr in one write: print() writes the text and its newline
    separately, and under mpiexec another rank's log line can land between the two
    (seen in CI: 'Broken pipe)21:56:42 ensemble-driver[2] DEBUG: ...')."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def _guarded(command, args: argparse.Namespace) -> tuple[int, DriverError | None]:
    """Run a command; a DriverError becomes its one line and exit status."""
    try:
        return command(args), None
    except DriverError as exc:
        # Under MPI an error is either agreed by all ranks (printed by rank 0 only, and
        # naming the rank it came from) or met identically by every rank before the ranks
        # talk (bad options): rank 0 prints it for all.
        from .ranks import launch_rank

        if getattr(exc, "print_here", launch_rank() == 0):
            _say(f"{PROG}: error: {exc}")
        return exc.exit_status, exc
    except KeyboardInterrupt:
        _say(f"{PROG}: interrupted")
        return 130, None
