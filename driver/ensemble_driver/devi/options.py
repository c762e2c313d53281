"""The parsers of ``ensemble-driver devi`` and ``ensemble-driver plot``, each option with
its help (docs/options.md lists them all, checked by tests/unit/project/test_docs.py)."""

from __future__ import annotations

import argparse

from ..arguments import (
    ParagraphFormatter,
    add_deviation_kind_options,
    add_head_option,
    add_parameter_options,
    add_trust_options,
)


def add_devi_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "devi",
        help="model deviation of existing trajectories (i-PI's xyz, pdb or extxyz, or anything ASE reads)",
        description="Compute the model deviation of existing trajectories, for runs made without "
        "the driver or to re-check a run with other models. Each trajectory file is one series "
        "(one bead): its rows go to one deviation file written as a live run writes it, with the "
        "same options and candidate selection. i-PI's xyz and pdb files, found by their content whatever "
        "--format says, are read with their cell, units, steps and beads from their comment or TITLE lines; "
        "any other file goes through ase.io.read. Under "
        "mpiexec the models and the frames are split over the ranks (a rank loads only its models).",
        epilog="examples:\n"
        "  # the 8 beads of an i-PI PIMD run, as DP-GEN names them (model_devi1.out ..):\n"
        "  ensemble-driver devi sim.pos_*.xyz --models m0.pth m1.pth m2.pth m3.pth\n"
        "  # a LAMMPS dump, every frame 10 steps apart, with candidates:\n"
        "  mpiexec -n 4 ensemble-driver devi traj.dump --format lammps-dump-text --stride 10 \\\n"
        "      --models m*.pth --trust-lo 0.05 --trust-hi 0.15",
        formatter_class=ParagraphFormatter,
    )
    p.add_argument("trajectories", nargs="+", metavar="TRAJ", help="trajectory files, one per bead, in bead order")
    p.add_argument("--models", nargs="+", required=True, metavar="FILE", help="two or more DeePMD models")
    p.add_argument(
        "--format",
        dest="fmt",
        help="ASE format name when the suffix does not tell (e.g. lammps-dump-text; pdb for proteindatabank); "
        "'ipi' insists on a file of i-PI's. i-PI's xyz, pdb and extxyz are found by their content and read "
        "in the units of their words (positions{atomic_unit}) whatever the format says",
    )
    p.add_argument(
        "--stride",
        type=int,
        default=1,
        help="steps between frames, for trajectories that do not carry their steps (default: 1)",
    )
    p.add_argument("--type-map", nargs="+", metavar="NAME", help="element names of the models' types")
    add_head_option(p)
    p.add_argument(
        "--batch",
        type=int,
        help="frames per model call (default: about 128 atoms a call on the CPU, i.e. one frame of 256 "
        "atoms or four of 32; 8 frames on a GPU)",
    )
    add_parameter_options(p, "every frame of the trajectories (extended XYZ)")
    p.add_argument(
        "--out-file",
        default="model_devi.out",
        help="deviation file for one trajectory; with "
        "several, its directory holds the per-bead files (default: %(default)s)",
    )
    p.add_argument(
        "--bead-files", default="dpgen", metavar="NAMING", help="per-bead names, as for run (default: dpgen)"
    )
    p.add_argument(
        "--traj-files",
        metavar="NAMING",
        help="also write every row's frame as a LAMMPS dump, as run does: 'dpgen', 'dpgen2' or a pattern "
        "(default: none)",
    )
    add_deviation_kind_options(p)
    add_trust_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--append", action="store_true", help="append to existing output files")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more output")


def add_plot_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot",
        help="plot deviation files: max_devi_f per bead against step, and its histogram",
        description="Plot one or more deviation files (model_devi.out as LAMMPS, DP-GEN or this "
        "driver write them): max_devi_f against step, one line per file (per bead), and the "
        "histogram of max_devi_f over all rows. With trust levels, the accurate, candidate and "
        "failed ranges are shaded and the share of rows in each is printed.",
        epilog="example:\n  ensemble-driver plot model_devi*.out --trust-lo 0.05 --trust-hi 0.15 -o devi.png",
        formatter_class=ParagraphFormatter,
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="deviation files (one per bead)")
    p.add_argument(
        "-o",
        "--output",
        default="devi.png",
        help="image to write; the suffix picks the format: .png, .pdf, .svg (default: %(default)s)",
    )
    add_trust_options(p, virial=False)
    p.add_argument("--title", help="title of the left panel")
