"""The extras of rank 0's answers (the JSON string after FORCEREADY's forces and virial):
the committee for i-PI's ``<ffcommittee>`` (``--committee-json``), or the step's model
deviation (``--extras``), or the uncertainty bias (``--bias-uncertainty``). The rank roles: see :mod:`layout`.
"""

from __future__ import annotations

import json

from ..deviation import Deviation, rescale_committee
from ..wire import units
from .jobs import Job

#: Keys of the FORCEREADY extras with --extras; -1 on steps without a deviation.
EXTRAS_KEYS = ("max_devi_v", "min_devi_v", "avg_devi_v", "max_devi_f", "min_devi_f", "avg_devi_f")
EXTRAS_SENTINEL = -1.0
SENTINEL_EXTRAS = json.dumps(dict.fromkeys(EXTRAS_KEYS, EXTRAS_SENTINEL)).encode()  # made once, sent most steps


def deviation_values(row: Deviation | None, natoms: int = 0, atomic: bool = False) -> dict:
    """The --extras keys: the step's deviation, or EXTRAS_SENTINEL for every key; with
    ``atomic`` also ``devi_f_atoms``, each atom's force deviation in atom order (on steps
    without a deviation a list of EXTRAS_SENTINEL of the same length: i-PI stops when a
    bead's extras lack a key another's have)."""
    values = dict.fromkeys(EXTRAS_KEYS, EXTRAS_SENTINEL) if row is None else dict(zip(EXTRAS_KEYS, row.columns()))
    if atomic:
        values["devi_f_atoms"] = [EXTRAS_SENTINEL] * natoms if row is None else [float(x) for x in row.per_atom]
    return values


def deviation_extras(row: Deviation | None, natoms: int = 0, atomic: bool = False) -> bytes:
    """The --extras JSON (see :func:`deviation_values`)."""
    if row is None and not atomic:
        return SENTINEL_EXTRAS
    return json.dumps(deviation_values(row, natoms, atomic)).encode()


def bias_extras(sigma_e: float, bias_energy: float, deviation: dict | None = None) -> bytes:
    """--bias-uncertainty's extras: ``sigma_e`` (eV), the ensemble's energy spread, and
    ``bias_energy`` (eV), -TAU sigma_e, the energy added to model 0's (for reweighting),
    beside the --extras keys (``deviation``) when the run has them."""
    return json.dumps({**(deviation or {}), "sigma_e": sigma_e, "bias_energy": bias_energy}).encode()


def committee_extras(job: Job, alpha: float = 1.0) -> bytes:
    """i-PI's committee JSON (``<ffcommittee>`` with ``<parse_json>``, ipi/engine/
    forcefields.py FFCommittee.gather): every model's energy, forces (3N, flat) and virial
    (9, flat, i-PI's orientation), in atomic units, which i-PI takes as they are; with
    ``alpha`` (--alpha) the members moved away from their mean as i-PI's own ``<alpha>``
    moves them (the mean, and so i-PI's dynamics, unchanged)."""
    n = len(job.energies)
    energies, forces, virials = (rescale_committee(x, alpha) for x in (job.energies, job.forces, job.virials))
    return json.dumps(
        {
            "committee_pot": units.energy_to_wire(energies).tolist(),
            "committee_force": units.forces_to_wire(forces).reshape(n, -1).tolist(),
            "committee_virial": units.virial_to_wire(virials).reshape(n, 9).tolist(),
        }
    ).encode()
