"""Model deviation as LAMMPS's ``pair_style deepmd`` computes it. Pure NumPy, no I/O.

Definitions (deepmd-kit ``source/lmp/pair_deepmd.cpp`` and ``source/api_cc/src/
DeepBaseModel.cc``; the same as ``deepmd/infer/model_devi.py`` except for relative_v),
with n_m models, model 0 included, and the population standard deviation (1/n_m):

- force, per atom i: ``e_i = sqrt( 1/n_m sum_k |F_i^k - <F_i>|^2 )``;
  with ``relative nu``: ``e_i / (|<F_i>| + nu)``; max/min/avg over atoms;
- virial: each model's 3x3 virial divided by the atom count N, then the per-component
  std ``d_ab``; with ``relative_v nu``: ``d_ab / (|<W_ab>|/N + nu)``, per component (as
  LAMMPS; ``dp model-devi`` divides by the norm of all nine instead);
  max and min over the nine components, ``avg = sqrt( sum_ab d_ab^2 / 9 )``.

Units are those of the inputs: eV/Angstrom and eV.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ConfigError


@dataclass(frozen=True)
class DeviationKind:
    """What a deviation row holds: LAMMPS's ``pair_style deepmd`` keywords ``atomic``
    (the per-atom force deviations as extra columns), ``relative`` and ``relative_v``
    (the nu of the relative deviations). The one record of them for ``run`` and ``devi``
    (their options: ``arguments.add_deviation_kind_options``)."""

    atomic: bool = False
    relative: float | None = None
    relative_v: float | None = None

    def validated(self) -> DeviationKind:
        for name, value in (("--relative", self.relative), ("--relative-v", self.relative_v)):
            if value is not None and not value >= 0:
                raise ConfigError(f"{name} must be >= 0, got {value}")
        return self

    def row(self, forces: np.ndarray, virials: np.ndarray, *, per_atom: bool = True) -> Deviation:
        """The row of one structure (see :func:`model_deviation`)."""
        return model_deviation(
            forces, virials, relative=self.relative, relative_v=self.relative_v, atomic=self.atomic, per_atom=per_atom
        )


@dataclass(frozen=True)
class Deviation:
    """One deviation row. ``atomic`` holds e_i per atom (after ``relative``) when the row's
    file has the per-atom columns (``--atomic``), else None; ``per_atom`` holds them always
    (for the per-atom ``devi_f`` of candidate files, dumps and extras)."""

    max_devi_v: float
    min_devi_v: float
    avg_devi_v: float
    max_devi_f: float
    min_devi_f: float
    avg_devi_f: float
    atomic: np.ndarray | None = None
    per_atom: np.ndarray | None = None

    def columns(self) -> tuple[float, float, float, float, float, float]:
        """The six values in the order of the model_devi.out columns 1-6."""
        return (self.max_devi_v, self.min_devi_v, self.avg_devi_v, self.max_devi_f, self.min_devi_f, self.avg_devi_f)


def force_deviation(forces: np.ndarray, relative: float | None = None) -> np.ndarray:
    """Per-atom force deviation e_i.

    forces: (n_models, nat, 3). Returns (nat,).
    """
    forces = np.asarray(forces, dtype=np.float64)
    mean = forces.mean(axis=0)
    e = np.sqrt(np.mean(np.sum((forces - mean) ** 2, axis=-1), axis=0))
    if relative is not None:
        e = e / (np.linalg.norm(mean, axis=-1) + relative)
    return e


def virial_deviation(virials: np.ndarray, natoms: int, relative_v: float | None = None) -> np.ndarray:
    """Per-component deviation d_ab of the virial per atom.

    virials: (n_models, 3, 3) or (n_models, 9), not divided by the atom count.
    Returns (9,).
    """
    v = np.asarray(virials, dtype=np.float64).reshape(-1, 9) / natoms
    d = v.std(axis=0)
    if relative_v is not None:
        d = d / (np.abs(v.mean(axis=0)) + relative_v)
    return d


def model_deviation(
    forces: np.ndarray,
    virials: np.ndarray,
    *,
    relative: float | None = None,
    relative_v: float | None = None,
    atomic: bool = False,
    per_atom: bool = True,
) -> Deviation:
    """The deviation row of one structure from every model's forces (n_models, nat, 3)
    and virials (n_models, 3, 3); ``per_atom``: keep e_i in the row (a caller that holds
    many rows and writes no per-atom value leaves it out)."""
    forces = np.asarray(forces, dtype=np.float64)
    if forces.ndim != 3 or forces.shape[2] != 3 or forces.shape[0] < 1:
        raise ValueError(f"forces must be (n_models, nat, 3), got {forces.shape}")
    e = force_deviation(forces, relative)
    d = virial_deviation(virials, forces.shape[1], relative_v)
    return Deviation(
        max_devi_v=float(d.max()),
        min_devi_v=float(d.min()),
        avg_devi_v=float(np.sqrt(np.mean(d**2))),
        max_devi_f=float(e.max()),
        min_devi_f=float(e.min()),
        avg_devi_f=float(e.mean()),
        atomic=e if atomic else None,
        per_atom=e if per_atom else None,
    )


def rescale_committee(values: np.ndarray, alpha: float) -> np.ndarray:
    """The members moved to ``mean + alpha (member - mean)`` (axis 0: the members), as
    i-PI's ``<ffcommittee>`` applies its calibration ``alpha`` (ipi/engine/forcefields.py,
    FFCommittee.gather): the mean stays, every spread is multiplied by alpha (Musil et
    al., J. Chem. Theory Comput. 15, 906 (2019); Imbalzano et al., J. Chem. Phys. 154,
    074102 (2021))."""
    values = np.asarray(values, dtype=np.float64)
    if alpha == 1.0:
        return values
    mean = values.mean(axis=0)
    return mean + alpha * (values - mean)


def uncertainty_bias(
    energies: np.ndarray, forces: np.ndarray, virials: np.ndarray, tau: float, alpha: float = 1.0
) -> tuple[float, np.ndarray, np.ndarray, float]:
    """Uncertainty-biased energy (Kulichenko et al., Nat. Comput. Sci. 3, 230 (2023);
    Zaverkin et al., npj Comput. Mater. 10, 83 (2024)): E = E_0 - tau * sigma_E, with
    sigma_E = sqrt(sum_i (E_i - mean)^2 / M) over the M models (population form), and its
    exact forces and virial: grad sigma_E = (1 / (M sigma_E)) sum_i (E_i - mean) grad E_i,
    so F = F_0 - tau sum_i w_i F_i and W = W_0 - tau sum_i w_i W_i with
    w_i = (E_i - mean) / (M sigma_E) (forces and virials are linear in the energy).

    ``alpha``: the committee's calibration, applied as i-PI applies it (``rescale_committee``:
    the members moved away from their mean by alpha), so the spread, and with it the bias
    and its gradient, is alpha times the models' own: the same as ``tau * alpha``. E_0 is
    model 0's own energy.

    energies (M,), forces (M, nat, 3), virials (M, 3, 3), model 0 first; tau in eV.
    Returns (energy, forces, virial, sigma_E), sigma_E with alpha applied; sigma_E = 0
    (identical models) or tau = 0 gives model 0's answer, never NaN."""
    energies = np.asarray(energies, dtype=np.float64)
    forces = np.asarray(forces, dtype=np.float64)
    virials = np.asarray(virials, dtype=np.float64)
    deviations = energies - energies.mean()
    sigma = float(np.sqrt(np.mean(deviations**2)))
    if sigma == 0.0 or tau == 0.0:
        return float(energies[0]), forces[0], virials[0], alpha * sigma
    weights = deviations / (len(energies) * sigma)
    scale = tau * alpha
    biased_forces = forces[0] - scale * np.tensordot(weights, forces, axes=1)
    biased_virial = virials[0] - scale * np.tensordot(weights, virials, axes=1)
    return float(energies[0] - scale * sigma), biased_forces, biased_virial, alpha * sigma
