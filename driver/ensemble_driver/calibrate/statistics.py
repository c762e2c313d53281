"""The numbers of ``ensemble-driver calibrate``, pure NumPy, no I/O.

Per frame (:func:`frame_numbers`), from every model's energy and forces and the reference
labels: model 0's largest atomic force error ``max_i |F0_i - Fref_i|``, its force RMSE
over the 3N components, its energy error per atom; the ensemble's ``max_devi_f`` and
``avg_devi_f`` exactly as the deviation rows compute them (:mod:`deviation`: population
standard deviation over the models), and the energy spread per atom ``devi_e``, the
population standard deviation of ``E_k / N`` over the models (as ``dp model-devi``'s
``devi_e``).

Over all frames:

- :func:`spearman`: the rank correlation of max_devi_f with model 0's largest force error
  (ties take their average rank);
- :func:`musil_alpha`: the calibration of the committee's spread. Musil et al., J. Chem.
  Theory Comput. 15, 906 (2019), eq. (9), and Imbalzano et al., J. Chem. Phys. 154, 074102
  (2021): for a committee of M members with mean ``ybar`` and variance ``sigma^2`` taken
  with ddof=1, ``alpha^2 = -1/M + (M-3)/(M-1) * mean((y - ybar)^2 / sigma^2)`` over the
  samples (the frames' energies; every force component of every atom of every frame),
  so that ``alpha * sigma`` is the error of the committee mean. i-PI's ``<ffcommittee>``
  (ipi/engine/forcefields.py, FFCommittee) applies it by moving each member to
  ``ybar + alpha (y_k - ybar)`` and reports ``std(ddof=1)`` of the moved members, i.e.
  ``alpha * sigma``; the estimator needs M >= 4 (with M = 3 its second term vanishes);
- :func:`propose_trust_lo`, :func:`propose_trust_hi` and :func:`window`: the trust levels
  for a target force error E and a miss rate m, and what they do to these frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..deviation import force_deviation

#: slack on "at most a fraction m of n": m * n in floating point (0.57 * 100 = 56.99999999999999)
FRACTION_SLACK = 1e-9


@dataclass(frozen=True)
class FrameNumbers:
    """One labelled frame against the models (eV, eV/Angstrom)."""

    natoms: int
    max_force_error: float  # model 0: max_i |F0_i - Fref_i|
    force_rmse: float  # model 0: sqrt(mean over the 3N components of (F0 - Fref)^2)
    energy_error: float  # model 0: (E0 - Eref) / N, signed
    max_devi_f: float
    avg_devi_f: float
    devi_e: float  # population std of E_k / N over the models
    # for alpha and the reliability panel: the committee mean's error and the members'
    # variance (ddof=1), of the energy per atom and of every force component
    energy_residual: float  # (Eref - mean_k E_k) / N
    energy_variance: float  # var_k(E_k / N), ddof=1
    force_residuals: np.ndarray  # (3N,) Fref - mean_k F_k
    force_variances: np.ndarray  # (3N,) var_k(F_k), ddof=1


def frame_numbers(energies, forces, ref_energy: float, ref_forces) -> FrameNumbers:
    """energies (M,), forces (M, nat, 3), model 0 first; the reference's energy and forces (nat, 3)."""
    energies = np.asarray(energies, dtype=np.float64)
    forces = np.asarray(forces, dtype=np.float64)
    ref_forces = np.asarray(ref_forces, dtype=np.float64)
    nat = forces.shape[1]
    diff = forces[0] - ref_forces
    e = force_deviation(forces)
    per_atom = energies / nat
    return FrameNumbers(
        natoms=nat,
        max_force_error=float(np.sqrt(np.sum(diff**2, axis=-1)).max()),
        force_rmse=float(np.sqrt(np.mean(diff**2))),
        energy_error=float((energies[0] - ref_energy) / nat),
        max_devi_f=float(e.max()),
        avg_devi_f=float(e.mean()),
        devi_e=float(per_atom.std()),
        energy_residual=float(ref_energy / nat - per_atom.mean()),
        energy_variance=float(per_atom.var(ddof=1)),
        force_residuals=(ref_forces - forces.mean(axis=0)).ravel(),
        force_variances=forces.var(axis=0, ddof=1).ravel(),
    )


def rank_average(x) -> np.ndarray:
    """Ranks from 1, ties given their average rank."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x))
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def spearman(x, y) -> float | None:
    """Spearman's rank correlation (Pearson's of the average ranks); None if either is constant."""
    rx, ry = rank_average(x), rank_average(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    norm = np.sqrt(np.sum(rx**2) * np.sum(ry**2))
    return float(np.sum(rx * ry) / norm) if norm > 0 else None


@dataclass(frozen=True)
class Alpha:
    """Musil's estimator on one kind of sample."""

    members: int
    samples: int  # samples used (those with a non-zero spread)
    mean_z2: float  # mean((y - ybar)^2 / sigma^2)
    alpha2: float | None  # None when M < 4
    alpha: float | None  # None when M < 4 or alpha2 <= 0

    def as_dict(self) -> dict:
        return {
            "members": self.members,
            "samples": self.samples,
            "mean_z2": self.mean_z2,
            "alpha2": self.alpha2,
            "alpha": self.alpha,
        }


def musil_alpha(residuals, variances, members: int) -> Alpha:
    """alpha^2 = -1/M + (M-3)/(M-1) * mean(r^2 / sigma^2) over the samples with
    sigma^2 > 0 (residual r = y - ybar; sigma^2 ddof=1 over the M members)."""
    r = np.asarray(residuals, dtype=np.float64).ravel()
    v = np.asarray(variances, dtype=np.float64).ravel()
    used = v > 0
    mean_z2 = float(np.mean(r[used] ** 2 / v[used])) if used.any() else float("nan")
    if members < 4 or not used.any():
        return Alpha(members, int(used.sum()), mean_z2, None, None)
    alpha2 = -1.0 / members + (members - 3) / (members - 1) * mean_z2
    return Alpha(members, int(used.sum()), mean_z2, alpha2, float(np.sqrt(alpha2)) if alpha2 > 0 else None)


def propose_trust_lo(devi, error, target: float, miss_rate: float) -> float:
    """The largest threshold t, among the frames' max_devi_f, such that of the frames
    with max_devi_f < t (those DP-GEN calls accurate) at most a fraction ``miss_rate``
    has a force error above ``target``. The set below t changes only at the frames' own
    values, and is the same for every t in (d_(k), d_(k+1)]: so the largest threshold of
    the definition is always one of them (the smallest always qualifies: nothing is below it)."""
    d = np.asarray(devi, dtype=np.float64)
    bad = np.asarray(error, dtype=np.float64) > target
    order = np.argsort(d, kind="stable")
    values, first = np.unique(d[order], return_index=True)  # first: how many frames lie below each value
    bad_below = np.r_[0, np.cumsum(bad[order])][first]
    ok = bad_below <= miss_rate * first + FRACTION_SLACK
    return float(values[ok].max())


def propose_trust_hi(devi, error, target: float, miss_rate: float, trust_lo: float) -> float:
    """The (1 - miss_rate) quantile of max_devi_f over the frames whose force error is
    above ``target`` (the smallest of their values with at most a fraction ``miss_rate``
    of them strictly above it), never below ``trust_lo``; ``trust_lo`` when no frame is
    above the target. The rule: the candidate window reaches far enough to take all but
    the fraction ``miss_rate`` of the frames the model is known to get wrong, and no
    further (beyond it lie structures DP-GEN discards as failed)."""
    d = np.asarray(devi, dtype=np.float64)
    b = np.sort(d[np.asarray(error, dtype=np.float64) > target])
    if not len(b):
        return float(trust_lo)
    above = len(b) - np.searchsorted(b, b, side="right")  # how many lie strictly above each
    quantile = b[above <= miss_rate * len(b) + FRACTION_SLACK].min()
    return float(max(quantile, trust_lo))


def classes(devi, trust_lo: float, trust_hi: float) -> np.ndarray:
    """DP-GEN's class of every frame by max_devi_f: 0 accurate (< trust_lo), 1 candidate,
    2 failed (>= trust_hi)."""
    d = np.asarray(devi, dtype=np.float64)
    return np.where(d < trust_lo, 0, np.where(d < trust_hi, 1, 2))


def window(devi, error, target: float, trust_lo: float, trust_hi: float) -> dict:
    """What the window does to these frames: the frames in each class, and of them those
    with a force error above ``target``; precision (the share of candidates above the
    target) and recall (the share of the frames above the target that are candidates),
    None where there is nothing to divide by."""
    cls = classes(devi, trust_lo, trust_hi)
    bad = np.asarray(error, dtype=np.float64) > target
    names = ("accurate", "candidate", "failed")
    counts = {n: int(np.sum(cls == k)) for k, n in enumerate(names)}
    above = {n: int(np.sum(bad & (cls == k))) for k, n in enumerate(names)}
    n_bad = int(bad.sum())
    return {
        "trust_lo": trust_lo,
        "trust_hi": trust_hi,
        "frames": counts,
        "above_target": above,
        "precision": above["candidate"] / counts["candidate"] if counts["candidate"] else None,
        "recall": above["candidate"] / n_bad if n_bad else None,
    }


def reliability(predicted, observed, bins: int = 10) -> list[dict]:
    """Observed error against predicted error in bins of the predicted one (equal counts,
    by quantile): per bin its sample count, the RMS predicted and the RMS observed error.
    A calibrated committee has the two equal (Musil et al., Fig. 2)."""
    p = np.abs(np.asarray(predicted, dtype=np.float64).ravel())
    o = np.abs(np.asarray(observed, dtype=np.float64).ravel())
    keep = p > 0
    p, o = p[keep], o[keep]
    if not len(p):
        return []
    order = np.argsort(p, kind="stable")
    out = []
    for part in np.array_split(order, min(bins, len(p))):
        out.append(
            {
                "samples": len(part),
                "predicted": float(np.sqrt(np.mean(p[part] ** 2))),
                "observed": float(np.sqrt(np.mean(o[part] ** 2))),
            }
        )
    return out
