"""``ensemble-driver`` with one model that fails mid-run, for tests/peers/test_start_ipi.py: the
model file named by FAIL_MODEL returns NaN forces from its (FAIL_AFTER + 1)-th evaluation
on, as a real model does on a structure it cannot handle."""

from __future__ import annotations

import os
import sys

import numpy as np

from ensemble_driver.models import deepmd
from ensemble_driver.models.results import Evaluation

FAIL_MODEL = os.environ["FAIL_MODEL"]
FAIL_AFTER = int(os.environ["FAIL_AFTER"])
_evaluate = deepmd.DeepPotModel.evaluate
_count = [0]


def evaluate(self, positions, cell, atom_types, *rest, **named):
    result = _evaluate(self, positions, cell, atom_types, *rest, **named)
    if str(self.path) == FAIL_MODEL:
        _count[0] += 1
        if _count[0] > FAIL_AFTER:
            return Evaluation(result.energy, np.full_like(result.forces, np.nan), result.virial)
    return result


deepmd.DeepPotModel.evaluate = evaluate

if __name__ == "__main__":
    from ensemble_driver.cli import main

    sys.exit(main())
