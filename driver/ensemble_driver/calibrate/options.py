"""The parser of ``ensemble-driver calibrate``, each option with its help (docs/options.md
lists them all, checked by tests/unit/project/test_docs.py)."""

from __future__ import annotations

import argparse

from ..arguments import ParagraphFormatter, add_head_option

DESCRIPTION = (
    "Measure how far the model deviation can be trusted, on labelled data: structures with "
    "reference energies and forces (deepmd/npy systems, found below each directory given, so a "
    "DP-GEN or dpgen2 iteration's labelled data works as it is; deepmd/hdf5 files; extended XYZ "
    "or anything ASE reads with an energy and forces). For every frame: model 0's largest atomic "
    "force error and force RMSE, its energy error per atom, and the ensemble's max_devi_f, "
    "avg_devi_f and energy spread per atom. The report, printed and as JSON: the Spearman rank "
    "correlation of max_devi_f with model 0's largest force error; the committee's calibration "
    "alpha for energies and forces (Musil et al. 2019, as i-PI's <ffcommittee> takes it; needs "
    "4 or more models); with --error-target, the proposed trust_lo and trust_hi and what that "
    "window does to these frames (precision and recall). Under mpiexec the models and the frames "
    "are split over the ranks, as for devi."
)

EPILOG = (
    "examples:\n"
    "  # a DP-GEN iteration's labelled data, 4 models, levels for a force error of 0.2 eV/A:\n"
    "  ensemble-driver calibrate iter.000002/02.fp --models m0.pth m1.pth m2.pth m3.pth \\\n"
    "      --error-target 0.2 -o calib.png\n"
    "  # extended XYZ with energy and forces, the models split over 4 ranks:\n"
    "  mpiexec -n 4 ensemble-driver calibrate labelled.extxyz --models m*.pth --error-target 0.15\n"
    "trust_lo is the largest level below which at most a fraction --miss-rate of the frames has a "
    "force error (model 0's largest atomic one) above the target; trust_hi is the (1 - miss-rate) "
    "quantile of max_devi_f over the frames above the target, never below trust_lo."
)


def add_calibrate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="measure the deviation against labelled data and propose trust levels",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=ParagraphFormatter,
    )
    p.add_argument(
        "data",
        nargs="+",
        metavar="DATA",
        help="labelled data: deepmd/npy directories (every system below them), deepmd/hdf5 files, "
        "or files ASE reads with energy and forces",
    )
    p.add_argument(
        "--models", nargs="+", required=True, metavar="FILE", help="two or more DeePMD models; model 0 first"
    )
    p.add_argument(
        "--format",
        dest="fmt",
        metavar="FMT",
        help="the format of every DATA: deepmd/npy, deepmd/npy/mixed, deepmd/hdf5 or an ASE format name "
        "(default: a directory is deepmd/npy, .hdf5 and .h5 files deepmd/hdf5, other files by ASE from "
        "their suffix)",
    )
    p.add_argument("--type-map", nargs="+", metavar="NAME", help="element names of the models' types")
    add_head_option(p)
    p.add_argument(
        "--batch",
        type=int,
        help="frames per model call (default: as devi, about 128 atoms a call on the CPU, 8 frames on a GPU)",
    )
    p.add_argument(
        "--error-target",
        type=float,
        metavar="E",
        help="the force error, eV/Angstrom, that model 0's largest atomic force error should not exceed "
        "below trust_lo: with it, trust levels are proposed (default: none, no proposal)",
    )
    p.add_argument(
        "--miss-rate",
        type=float,
        default=0.05,
        metavar="M",
        help="the fraction of frames below trust_lo allowed a force error above the target, and of the "
        "frames above the target allowed past trust_hi (default: %(default)s)",
    )
    p.add_argument(
        "--json",
        default="calibration.json",
        metavar="FILE",
        help="the report as JSON, with every frame's numbers (default: %(default)s)",
    )
    p.add_argument(
        "-o",
        "--output",
        metavar="IMAGE",
        help="also draw model 0's largest force error against max_devi_f, and the reliability of the "
        "alpha-scaled spread; the suffix picks the format: .png, .pdf, .svg (default: none)",
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="more output")
