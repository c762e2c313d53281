"""``ensemble-driver run``'s parser: its option groups, each with its help (the options
it shares with ``devi`` and ``plot`` are in :mod:`ensemble_driver.arguments`)."""

from __future__ import annotations

import argparse

from ..arguments import (
    ParagraphFormatter,
    add_deviation_kind_options,
    add_head_option,
    add_parameter_options,
    add_trust_options,
)
from .config import DEFAULT_SOCKETS_PREFIX

RUN_EPILOG = """\
examples:
  # one command runs i-PI too: its own input gives the atoms, the socket and which request
  # is which bead; the same command continues the run after any stop
  ensemble-driver run --models m0.pth --ipi-input input.xml --start-ipi

  # i-PI started by hand instead:
  i-pi input.xml &
  ensemble-driver run --models m0.pth --ipi-input input.xml

  # the same told by hand (i-PI input with <ffsocket mode='unix'><address>cuau</address>):
  ensemble-driver run --models m0.pth --template init.xyz --unix --address cuau

  # the same over TCP (i-PI <ffsocket mode='inet'> with <port>31415</port>):
  ensemble-driver run --models m0.pth --template init.xyz --address localhost --port 31415

  # a deepmd-kit dp_ipi input file works as it is:
  ensemble-driver run --config dp_ipi.json

  # a model trained with numb_fparam 1 (LAMMPS: pair_style deepmd m.pth fparam 0.6), and
  # one with numb_aparam 1 taking each atom's value from the column 'q' of an extxyz template:
  ensemble-driver run --models m.pth --template init.xyz --unix --address cuau --fparam 0.6
  ensemble-driver run --models a.pth --template init.extxyz --unix --address cuau --aparam-array q

  # an ensemble of 4 models on 4 MPI ranks, path integrals with 8 beads: the deviation
  # of every bead every 10 steps in model_devi1.out .. model_devi8.out; stopped (status
  # 75), the same command continues it
  mpiexec -n 4 ensemble-driver run --models m0.pth m1.pth m2.pth m3.pth \\
      --ipi-input input.xml --start-ipi --out-freq 10

what it does:
  Connects to the server (i-PI, ASE's SocketIOCalculator, or any i-PI protocol server),
  and for every structure it receives answers with the energy, forces and virial of the
  first model. Atoms are matched to each model's types by the element names of the
  template (same atom order as the server's), whatever order the model lists them in.
  With several models, every OUT_FREQ steps all of them evaluate the same structure and
  the model deviation is written as LAMMPS's pair_style deepmd writes it; model 0's
  answer never waits for the others.

  With two or more models the driver answers NEEDINIT after every evaluation, so that
  every structure comes with its request id (--init-each). With --ipi-input the driver
  knows which system, bead and i-PI step each id and evaluation is; without it, request
  id r is taken for bead r and its k-th evaluation for step k, which holds for one
  <force> of one <system> (docs/running.md, "How i-PI numbers its requests").

exit status:
  0 the server ended the run (EXIT, or closed the connection between requests)
  2 bad option, configuration file, template or path    3 could not connect
  4 the server broke the protocol                         5 a model failed
  6 i-PI started by --start-ipi failed (its own message quoted)
  75 stopped restartably (--start-ipi: a signal, i-PI's soft exit): run the same command
"""


def run_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="serve an i-PI protocol server with DeePMD models",
        description="Serve an i-PI protocol server with DeePMD models.",
        epilog=RUN_EPILOG,
        formatter_class=ParagraphFormatter,
    )
    p.add_argument(
        "--models",
        nargs="+",
        metavar="FILE",
        help="DeePMD model files (.pth, .pb, ...); the first drives the dynamics",
    )
    p.add_argument(
        "--template",
        metavar="FILE",
        help="structure with the element of every atom, in the server's atom order: any "
        "file ASE reads, or i-PI's xyz with a '# CELL(abcABC):' comment",
    )
    p.add_argument(
        "--ipi-input",
        metavar="FILE",
        help="i-PI's own input (input.xml, or its RESTART), read with i-PI's code: it gives the atoms in "
        "i-PI's order (no --template), the socket (no --unix/--address/--port), each system's beads as "
        "the forcefield sees them (no --nbeads; contraction, several forces or systems, MTS) and which "
        "request id is which bead, so rows carry i-PI's steps; options given as well win, a contradiction "
        "is an error (default: none)",
    )
    p.add_argument(
        "--forcefield",
        metavar="NAME",
        help="with --ipi-input: the name of the <ffsocket> this driver serves, when the input has several "
        "(default: the only one)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        default=None,
        help="with --ipi-input naming i-PI's RESTART: cut the deviation files, dumps, candidates and summary "
        "to the steps before the RESTART's step (each file replaced whole), then append the new rows from "
        "that step on: every step once in every file, as DP-GEN needs",
    )
    p.add_argument(
        "--start-ipi",
        action="store_true",
        default=None,
        help="with --ipi-input INPUT: rank 0 starts i-PI on INPUT, in INPUT's directory (its output in ipi.log "
        "there), and ends it restartably whenever the run stops; run the same command again after any stop "
        "(SIGTERM, SIGUSR1, a kill, a failure) and it continues from i-PI's newest checkpoint, every output "
        "continued as --resume does; a finished run is left as it is (exit status 0) (default: off)",
    )
    p.add_argument(
        "--status-every",
        type=float,
        metavar="SECONDS",
        help="rank 0 logs a status line this often: i-PI's step and total steps, steps per second, the time "
        "left, the largest max_devi_f since the last line and the candidate and failed rows so far; 0: none "
        "(default: 60)",
    )
    p.add_argument(
        "--config",
        metavar="FILE.json",
        help="JSON file with these settings; also "
        "accepts deepmd-kit dp_ipi's keys (graph_file, coord_file, use_unix, host, port, "
        "atom_type); options given on the command line win",
    )
    _connection_options(p.add_argument_group("connection"))
    _system_options(p.add_argument_group("system"))
    dev = p.add_argument_group(
        "ensemble and deviation",
        "With several --models, run under mpiexec: rank 0 talks to the server and evaluates "
        "model 0, which alone drives the dynamics; the other ranks hold the other models. "
        "Every OUT_FREQ steps all models evaluate the same structure and the deviation is "
        "written as LAMMPS's pair_style deepmd writes it.",
    )
    _deviation_output_options(dev)
    _deviation_kind_options(dev)
    sel = p.add_argument_group(
        "candidate selection",
        "With trust levels, every deviation row is classified as DP-GEN does it: candidate if "
        "TRUST_LO <= max_devi_f < TRUST_HI (or the same for the virial), else failed if at or above "
        "a high level, else accurate. Candidate structures are appended, per bead, to extended XYZ "
        "files beside the deviation files (model_devi1.out -> candidates1.xyz), which ASE and dpdata "
        "read; the counts per class and bead are printed at the end and written to devi_summary.json.",
    )
    _selection_options(sel)
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=None,
        help="more output (-v: every message and evaluation; default: start and end lines)",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")


def _connection_options(conn) -> None:
    """run's options for the server connection and the layout of connections and model-0 ranks."""
    conn.add_argument(
        "--unix",
        action="store_true",
        default=None,
        help="use a UNIX socket named SOCKETS_PREFIX + ADDRESS (default: INET)",
    )
    conn.add_argument(
        "--address",
        nargs="+",
        metavar="NAME",
        help="UNIX socket name, or INET host name; with --connections K, K of them serve one connection "
        "each (e.g. two i-PI force fields that differ in their <parameters>) (default: localhost)",
    )
    conn.add_argument("--port", type=int, help="INET port (required for INET; i-PI's default is 65535, ASE's 31415)")
    conn.add_argument(
        "--sockets-prefix",
        metavar="PREFIX",
        help=f"prefix of UNIX socket paths, as i-PI's sockets_prefix (default: {DEFAULT_SOCKETS_PREFIX})",
    )
    conn.add_argument(
        "--connect-timeout", type=float, metavar="SECONDS", help="keep retrying to connect for this long (default: 60)"
    )
    conn.add_argument(
        "--server-timeout",
        type=float,
        metavar="SECONDS",
        help="end the run (status 4, rows whole) if the server sends nothing for this long while the driver "
        "waits for it (a stopped server, a lost host or network), or another rank of the job does not answer "
        "for this long; 0: wait forever (default: 3600, far beyond a live i-PI's silence between requests)",
    )
    conn.add_argument(
        "--init-each",
        dest="init_every_step",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="ask for INIT after every evaluation, so that every structure comes with "
        "its request id (the bead index): needed for per-bead deviation files and "
        "counts; costs ~0.3 ms per step under i-PI (default: on with two or more "
        "models, off with one)",
    )
    conn.add_argument(
        "--connections",
        type=int,
        metavar="K",
        help="open K connections to the server from one MPI job, each served by a model-0 rank of its "
        "own (ranks 0..K-1), so that K beads are evaluated at once; each bead's steps and rows stay "
        "exact whichever connection carries it (i-PI: any 'matching'; needs K + models - 1 ranks) "
        "(default: 1)",
    )
    conn.add_argument(
        "--model0-ranks",
        type=int,
        metavar="R0",
        help="ranks holding model 0: with one connection and i-PI's <batch_size>, each batch is split "
        "over these R0 ranks and evaluated at once; the other models go to the ranks after them "
        "(default: one per connection)",
    )


def _system_options(sysg) -> None:
    """run's options describing the system: types, device, parameters, periodicity."""
    sysg.add_argument(
        "--type-map",
        nargs="+",
        metavar="NAME",
        help="element names of the model's types, in type-index order, replacing the type map stored in the model(s)",
    )
    add_head_option(sysg)
    sysg.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        help="where the models run: 'cuda' binds each rank one GPU of its node, round-robin by "
        "its rank on the node; 'auto' does so when the node has GPUs, else the CPU (default: auto)",
    )
    add_parameter_options(sysg, "a column of the template (extended XYZ, its Properties= line)")
    sysg.add_argument(
        "--pbc",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="periodic system or not (default: periodic if the template has a cell; i-PI xyz templates are periodic)",
    )


def _deviation_output_options(dev) -> None:
    """run's options for when and where deviation rows (and their dump frames) are written."""
    dev.add_argument(
        "--out-file",
        metavar="FILE",
        help="deviation file (default: model_devi.out); with --nbeads P > 1 and a preset --bead-files, its directory holds the per-bead files",
    )
    dev.add_argument(
        "--out-freq",
        type=int,
        metavar="N",
        help="deviation every N steps of each bead, step 0 included; 0: never (default: 100, as LAMMPS)",
    )
    dev.add_argument(
        "--out-freq-near",
        type=int,
        metavar="F",
        help="denser monitoring where it matters: a bead whose latest row reached --trust-lo gets a row "
        "every F steps (F < OUT_FREQ) until a row falls below it again; the extra rows are counted in the "
        "summary (default: off)",
    )
    dev.add_argument(
        "--nbeads",
        type=int,
        metavar="P",
        help="number of path-integral beads: one "
        "deviation file per bead; request ids >= P (estimator clones) get no rows (default: 1)",
    )
    dev.add_argument(
        "--bead-files",
        metavar="NAMING",
        help="per-bead file names: 'dpgen' "
        "(model_devi1.out .. for up to 9 beads, model_devi01.out .. for 10-99), 'dpgen2' (model_devi.1.out ..), or a pattern with "
        "{bead} counted from 0, e.g. 'devi/bead{bead:02d}.out' (default: dpgen)",
    )
    dev.add_argument(
        "--traj-files",
        metavar="NAMING",
        help="also write the structure of every deviation row, just before the row, as a LAMMPS dump frame "
        "(id type x y z fx fy fz; model 0's forces), laid out as DP-GEN's or dpgen2's own LAMMPS runs lay "
        "them out, beside the deviation files: 'dpgen' (traj/STEP.lammpstrj, "
        "traj/STEP.lammpstrjBEAD for beads), 'dpgen2' (traj.dump, traj.BEAD.dump), or a pattern "
        "with {bead} (from 0) and optionally {step} (default: none)",
    )


def _deviation_kind_options(dev) -> None:
    """run's options for what the deviation holds, what the server gets of it, and existing files."""
    add_deviation_kind_options(dev, atomic_default=None)  # None: a --config file may set it
    dev.add_argument(
        "--extras",
        action="store_true",
        default=None,
        help="send the deviation to the "
        "server in the FORCEREADY extras (JSON; -1 on other steps); makes deviation "
        "steps wait for all models",
    )
    dev.add_argument(
        "--committee-json",
        action="store_true",
        default=None,
        help="for i-PI's <ffcommittee> "
        "with <parse_json>true</parse_json>: every model evaluates every structure and the "
        "extras carry committee_pot, committee_force and committee_virial (atomic units), so "
        "that i-PI's committee (mean-driven dynamics, uncertainty) runs on this MPI ensemble",
    )
    dev.add_argument(
        "--bias-uncertainty",
        type=float,
        metavar="TAU",
        help="uncertainty-biased dynamics, for exploration in active learning (never for production "
        "averages): every model evaluates every structure and the answer is E_0 - TAU * sigma_E (TAU in eV; "
        "sigma_E the models' energy spread, population form) with its exact forces and virial; the rows "
        "stay the unbiased models'; sigma_e and bias_energy go to the extras (default: off)",
    )
    dev.add_argument(
        "--alpha",
        type=float,
        metavar="A",
        help="the committee's calibration (ensemble-driver calibrate's alpha), applied as i-PI's <ffcommittee> "
        "applies its own: the members moved to mean + A (member - mean) in the --committee-json extras (leave "
        "i-PI's <alpha> at 1), and the spread of --bias-uncertainty multiplied by A; the deviation rows never "
        "change (default: 1.0)",
    )
    dev.add_argument("--overwrite", action="store_true", default=None, help="replace existing deviation files")
    dev.add_argument(
        "--append", action="store_true", default=None, help="append to existing deviation files (a restarted run)"
    )
    dev.add_argument(
        "--step-offset",
        type=int,
        metavar="K",
        help="add K to the step of every row (with --append: the step i-PI restarted from)",
    )


def _selection_options(sel) -> None:
    """run's options for candidate selection and the stop rule."""
    add_trust_options(sel)
    sel.add_argument(
        "--stop-after-failed",
        type=int,
        metavar="N",
        help="stop paying for a run that has left the model's domain: after N rows classified failed (all "
        "beads together), create --exit-file, so that i-PI ends the run cleanly (its soft exit: checkpoint "
        "and outputs written, restartable) and every rank ends as on EXIT (default: off)",
    )
    sel.add_argument(
        "--exit-file",
        metavar="PATH",
        help="the file --stop-after-failed creates: EXIT in i-PI's working directory (e.g. ../EXIT when the "
        "driver runs elsewhere); its directory must exist",
    )
