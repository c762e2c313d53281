"""The extras of rank 0's answers (the JSON string after FORCEREADY's forces and virial):
the committee for i-PI's ``<ffcommittee>`` (``--committee-json``), or the step's model
deviation (``--extras``). The rank roles: see :mod:`layout`.
"""

from __future__ import annotations

import json

from ..deviation import Deviation
from ..wire import units
from .jobs import Job

#: Keys of the FORCEREADY extras with --extras; -1 on steps without a deviation.
EXTRAS_KEYS = ("max_devi_v", "min_devi_v", "avg_devi_v", "max_devi_f", "min_devi_f", "avg_devi_f")
EXTRAS_SENTINEL = -1.0
SENTINEL_EXTRAS = json.dumps(dict.fromkeys(EXTRAS_KEYS, EXTRAS_SENTINEL)).encode()


def deviation_extras(row: Deviation | None) -> bytes:
    """The --extras JSON: the step's deviation, or EXTRAS_SENTINEL for every key."""
    if row is None:
        return SENTINEL_EXTRAS
    return json.dumps(dict(zip(EXTRAS_KEYS, row.columns()))).encode()


def committee_extras(job: Job) -> bytes:
    """i-PI's committee JSON (``<ffcommittee>`` with ``<parse_json>``, ipi/engine/
    forcefields.py FFCommittee.gather): every model's energy, forces (3N, flat) and virial
    (9, flat, i-PI's orientation), in atomic units, which i-PI takes as they are."""
    n = len(job.energies)
    return json.dumps(
        {
            "committee_pot": units.energy_to_wire(job.energies).tolist(),
            "committee_force": units.forces_to_wire(job.forces).reshape(n, -1).tolist(),
            "committee_virial": units.virial_to_wire(job.virials).reshape(n, 9).tolist(),
        }
    ).encode()
