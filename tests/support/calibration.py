"""The trust levels' definitions, literally (the brute force the proposal of ``calibrate``
is checked against), and DP-GEN's classification counted by hand: for
tests/unit/calibrate/test_calibrate.py and tests/peers/test_calibrate_command.py."""

from __future__ import annotations

import numpy as np

from ensemble_driver.calibrate.statistics import FRACTION_SLACK
from ensemble_driver.outputs.selection import TrustLevels


def brute_trust_lo(d, err, target, miss):
    """The definition, literally: the largest of the frames' deviations t such that of the
    frames below t at most the fraction ``miss`` has an error above the target."""
    best = None
    for t in sorted(set(d.tolist())):
        below = d < t
        if np.sum(below & (err > target)) <= miss * np.sum(below) + FRACTION_SLACK:
            best = t
    return best


def brute_trust_hi(d, err, target, miss, lo):
    bad = d[err > target]
    if not len(bad):
        return lo
    fits = [t for t in sorted(set(bad.tolist())) if np.sum(bad > t) <= miss * len(bad) + FRACTION_SLACK]
    return max(min(fits), lo)


def recount(d, err, target, lo, hi):
    """Precision and recall by hand, each frame classified by DP-GEN's rule (selection.TrustLevels)."""
    levels = TrustLevels(lo, hi)
    cls = [levels.classify(x, 0.0) for x in d]
    bad = [e > target for e in err]
    candidates = [b for c, b in zip(cls, bad) if c == "candidate"]
    return {
        "frames": {c: cls.count(c) for c in ("accurate", "candidate", "failed")},
        "above": {c: sum(b for k, b in zip(cls, bad) if k == c) for c in ("accurate", "candidate", "failed")},
        "precision": sum(candidates) / len(candidates) if candidates else None,
        "recall": sum(candidates) / sum(bad) if sum(bad) else None,
    }
