"""A model a rank holds, as the ensemble uses it: its index in the ensemble, the model
(anything with :class:`results.Model`'s methods; :class:`deepmd.DeepPotModel` is the one
there is) and the type of every atom; its results checked finite."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ModelError
from .parameters import Parameters
from .results import Evaluation, Model


@dataclass
class LocalModel:
    index: int  # the model's place in --models (0: the one that drives the dynamics)
    model: Model
    atom_types: np.ndarray  # the model's type index of every atom

    def evaluate(
        self, positions: np.ndarray, cell: np.ndarray | None, rid: int, step: int, parameters: Parameters | None = None
    ) -> Evaluation:
        """The model on one structure (its own parameters unless ``parameters``); a
        non-finite result is a :class:`errors.ModelError` naming the model, step and bead."""
        if parameters is None:  # the model's own
            result = self.model.evaluate(positions, cell, self.atom_types)
        else:
            result = self.model.evaluate(positions, cell, self.atom_types, parameters)
        if not (np.isfinite(result.energy) and np.isfinite(result.forces).all() and np.isfinite(result.virial).all()):
            raise ModelError(
                f"model {self.index} ({self.model.path}) returned non-finite energy, forces or virial "
                f"at step {step} of bead {rid}"
            )
        return result
