"""The command-line pieces several commands share: the help formatter, the model
parameter, head, trust and deviation-kind options of ``run``, ``devi`` and ``plot``
(each command's own parser is in its wing: ``run/options``, ``devi/options``,
``demo/command``), and the settings records' flat view (:func:`setting_fields`,
:func:`folded`): a record's group of settings, such as ``deviation.DeviationKind``, is
one field of the record but its options and ``--config`` keys are its own fields."""

from __future__ import annotations

import argparse
import dataclasses
import textwrap
from collections.abc import Mapping
from typing import Any


class ParagraphFormatter(argparse.RawDescriptionHelpFormatter):
    """Wraps each unindented line of a description or epilog as a paragraph to the
    terminal's width; indented lines (commands, tables) are kept as they are."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out = []
        for line in text.splitlines():
            if line and not line[0].isspace():
                out.append(textwrap.fill(line, width, initial_indent=indent, subsequent_indent=indent))
            else:
                out.append(indent + line if line else "")
        return "\n".join(out)


def add_parameter_options(group, array_from: str) -> None:
    """Frame and atomic parameters (LAMMPS's fparam and aparam), for run and devi."""
    group.add_argument(
        "--fparam",
        nargs="+",
        type=float,
        metavar="V",
        help="frame parameters of every model, for models trained with numb_fparam (LAMMPS's "
        "'fparam'): as many values as the models take (default: none)",
    )
    group.add_argument(
        "--aparam",
        nargs="+",
        type=float,
        metavar="V",
        help="atomic parameters, the same for every atom, for models trained with numb_aparam "
        "(LAMMPS's 'aparam'): as many values as the models take per atom (default: none)",
    )
    group.add_argument(
        "--aparam-array",
        metavar="NAME",
        help=f"atomic parameters per atom instead: the per-atom array NAME of {array_from} (default: none)",
    )
    group.add_argument(
        "--charge-spin",
        nargs=2,
        type=float,
        metavar=("Q", "S"),
        help="total charge and spin multiplicity, for models conditioned on them (DPA-3 with "
        "add_chg_spin_ebd; LAMMPS's 'charge_spin Q S'), the same for every model (default: the model's "
        "default_chg_spin)",
    )


def add_head_option(group) -> None:
    """--head, for run and devi alike."""
    group.add_argument(
        "--head",
        metavar="NAME",
        help="the head of every multi-task model given (a .pt checkpoint with several fitting heads, "
        "as deepmd-kit's DeepPot(model, head=NAME) and ASE's DP(..., head=NAME) take it; names are "
        "case-insensitive); single-task models ignore it (default: none; a multi-task model without it is "
        "refused with its heads listed)",
    )


def add_trust_options(group, virial: bool = True) -> None:
    """DP-GEN's trust levels, for run, devi and plot."""
    group.add_argument(
        "--trust-lo",
        type=float,
        metavar="F_LO",
        help="low force trust level, eV/Angstrom (DP-GEN's model_devi_f_trust_lo)",
    )
    group.add_argument(
        "--trust-hi",
        type=float,
        metavar="F_HI",
        help="high force trust level, eV/Angstrom (DP-GEN's model_devi_f_trust_hi)",
    )
    if virial:
        group.add_argument(
            "--trust-lo-v",
            type=float,
            metavar="V_LO",
            help="low virial trust level, eV per atom (default: the virial is not used)",
        )
        group.add_argument("--trust-hi-v", type=float, metavar="V_HI", help="high virial trust level, eV per atom")


def add_deviation_kind_options(group, *, atomic_default: bool | None = False) -> None:
    """What a deviation row holds (LAMMPS's 'atomic', 'relative', 'relative_v'), for run
    and devi alike."""
    group.add_argument(
        "--atomic",
        action="store_true",
        default=atomic_default,
        help="also write the force deviation of every atom (LAMMPS's 'atomic')",
    )
    group.add_argument(
        "--relative",
        type=float,
        metavar="NU",
        help="relative force deviation: e_i / (|<F_i>| + NU) (LAMMPS's 'relative')",
    )
    group.add_argument(
        "--relative-v",
        type=float,
        metavar="NU",
        help="relative virial deviation, per "
        "component: d_ab / (|<W_ab>|/N + NU) (LAMMPS's 'relative_v'; dp model-devi differs)",
    )


def _group(f: dataclasses.Field) -> type | None:
    """The record class of a field that groups settings (``field(default_factory=Record)``)."""
    factory = f.default_factory
    return factory if isinstance(factory, type) and dataclasses.is_dataclass(factory) else None


def setting_fields(record: type) -> list[dataclasses.Field]:
    """The settings of a record as its options name them: its fields, each group's
    fields in place of the group."""
    flat = []
    for f in dataclasses.fields(record):
        group = _group(f)
        flat += dataclasses.fields(group) if group is not None else [f]
    return flat


def folded(record: type, flat: Mapping[str, Any]) -> dict[str, Any]:
    """Flat settings (option or key names, as :func:`setting_fields`) as the record's
    keyword arguments: each group made of its fields' values (defaults where absent)."""
    out = dict(flat)
    for f in dataclasses.fields(record):
        group = _group(f)
        if group is not None:
            names = [g.name for g in dataclasses.fields(group)]
            out[f.name] = group(**{name: out.pop(name) for name in names if name in out})
    return out
