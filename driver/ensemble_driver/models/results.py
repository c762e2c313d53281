"""What a model gives back, and what the rest of the driver asks of a model.

Units are DeePMD's: Angstrom, eV, eV/Angstrom; the virial is -V * stress (eV), 3x3,
indexed like the cell with lattice vectors as rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from .parameters import Parameters


@dataclass(frozen=True)
class Evaluation:
    """One model on one structure."""

    energy: float
    forces: np.ndarray  # (nat, 3) eV/Angstrom
    virial: np.ndarray  # (3, 3) eV


@dataclass(frozen=True)
class BatchEvaluation:
    """One model on ``nframes`` structures of the same atoms."""

    energy: np.ndarray  # (nframes,)
    forces: np.ndarray  # (nframes, nat, 3)
    virial: np.ndarray  # (nframes, 3, 3)


class Model(Protocol):
    """A model as the ranks use it (:class:`deepmd.DeepPotModel` is the one there is)."""

    path: str
    type_map: list[str]
    parameters: Parameters

    def atom_types(self, elements, template: str = "the template") -> np.ndarray: ...

    def evaluate(self, positions, cell, atom_types, parameters: Parameters | None = None) -> Evaluation: ...

    def evaluate_batch(
        self, positions, cells, atom_types, *, aparam=None, parameters: Parameters | None = None
    ) -> BatchEvaluation: ...
