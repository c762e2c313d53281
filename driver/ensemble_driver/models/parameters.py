"""Frame and atomic parameters (``numb_fparam``/``numb_aparam`` models): the values every
model of a run is evaluated with, and their check against a model's dimensions, as
LAMMPS's ``pair_style deepmd ... fparam V aparam V`` takes them. The models get them at
construction (:class:`models.deepmd.DeepPotModel`) and pass them to deepmd-kit on every call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError, ModelError


def _numbers(values: np.ndarray) -> str:
    return " ".join(f"{v:g}" for v in np.ravel(values))


@dataclass(frozen=True)
class Parameters:
    """The frame and atomic parameters every model of a run is evaluated with.

    As LAMMPS's ``pair_style deepmd`` (deepmd-kit ``source/lmp/pair_deepmd.cpp``,
    ``settings``): ``fparam`` is the model's ``dim_fparam`` values for every frame;
    ``aparam`` is either ``dim_aparam`` values for every atom (LAMMPS's ``aparam``
    keyword) or one row of ``dim_aparam`` values per atom, in the template's atom order.
    ``*_from`` says where the values came from, for error messages."""

    fparam: np.ndarray | None = field(default=None, compare=False)  # (dim_fparam,)
    aparam: np.ndarray | None = field(default=None, compare=False)  # (dim_aparam,) or (natoms, dim_aparam)
    fparam_from: str = "--fparam"
    aparam_from: str = "--aparam"
    # a charge/spin-conditioned model's (DPA-3 add_chg_spin_ebd) total charge and spin
    # multiplicity, as LAMMPS's pair_style deepmd ... charge_spin Q S
    charge_spin: tuple[float, float] | None = None

    @property
    def aparam_per_atom(self) -> bool:
        return self.aparam is not None and self.aparam.ndim == 2

    def describe(self) -> str:
        """The parameters for a log line ('' when none)."""
        parts = []
        if self.fparam is not None:
            parts.append(f"fparam {_numbers(self.fparam)} ({self.fparam_from})")
        if self.aparam is not None:
            if self.aparam_per_atom:
                parts.append(f"aparam per atom, {self.aparam.shape[1]} value(s) each ({self.aparam_from})")
            else:
                parts.append(f"aparam {_numbers(self.aparam)} for every atom ({self.aparam_from})")
        if self.charge_spin is not None:
            parts.append(f"charge and spin {_numbers(self.charge_spin)} (--charge-spin)")
        return ", ".join(parts)

    def check(
        self,
        path: str,
        dim_fparam: int,
        dim_aparam: int,
        default_fparam: bool,
        chg_spin: tuple[bool, bool] = (False, False),
    ) -> None:
        """One ConfigError line naming the model and the values if they do not fit it;
        ``chg_spin``: whether the model has a charge/spin embedding, and a default for it."""
        self._check_charge_spin(path, *chg_spin)
        if self.fparam is None:
            if dim_fparam and not default_fparam:
                raise ConfigError(
                    f"model {path} needs {dim_fparam} frame parameter(s) (numb_fparam {dim_fparam}): "
                    f"give them with --fparam"
                )
        elif not dim_fparam:
            raise ConfigError(
                f"model {path} takes no frame parameters, but {self.fparam_from} gives {_numbers(self.fparam)}"
            )
        elif self.fparam.size != dim_fparam:
            raise ConfigError(
                f"model {path} takes {dim_fparam} frame parameter(s), but {self.fparam_from} gives "
                f"{self.fparam.size} ({_numbers(self.fparam)})"
            )
        if self.aparam is None:
            if dim_aparam:
                raise ConfigError(
                    f"model {path} needs {dim_aparam} atomic parameter(s) per atom (numb_aparam {dim_aparam}): "
                    "give them with --aparam (the same for every atom) or --aparam-array (per atom, an extended-XYZ column)"
                )
        elif not dim_aparam:
            raise ConfigError(
                f"model {path} takes no atomic parameters, but {self.aparam_from} gives "
                + (f"{self.aparam.shape[1]} per atom" if self.aparam_per_atom else _numbers(self.aparam))
            )
        elif self.aparam.shape[-1] != dim_aparam:
            given = (
                f"{self.aparam.shape[1]} value(s) per atom"
                if self.aparam_per_atom
                else f"{self.aparam.size} ({_numbers(self.aparam)})"
            )
            raise ConfigError(
                f"model {path} takes {dim_aparam} atomic parameter(s) per atom, but {self.aparam_from} gives {given}"
            )

    def _check_charge_spin(self, path: str, embedding: bool, default: bool) -> None:
        if self.charge_spin is None and embedding and not default:
            raise ConfigError(
                f"model {path} is conditioned on charge and spin (add_chg_spin_ebd) and has no default "
                "(default_chg_spin): give them with --charge-spin Q S"
            )
        if self.charge_spin is not None and not embedding:
            raise ConfigError(
                f"model {path} has no charge/spin embedding, but --charge-spin gives {_numbers(self.charge_spin)}"
            )

    def arrays(self, nframes: int, natoms: int, aparam: np.ndarray | None = None):
        """(fparam (nframes, dim_fparam) or None, aparam (nframes, natoms, dim_aparam) or
        None, charge_spin (nframes, 2) or None) for a call on ``nframes`` structures;
        ``aparam`` (nframes, natoms, dim) replaces the run's own (``devi`` reads them from
        every frame)."""
        fparam = None if self.fparam is None else np.tile(np.asarray(self.fparam, dtype=np.float64), (nframes, 1))
        chg = None if self.charge_spin is None else np.tile(np.asarray(self.charge_spin, np.float64), (nframes, 1))
        return (fparam, self._aparam(nframes, natoms, aparam), chg)

    def _aparam(self, nframes: int, natoms: int, aparam: np.ndarray | None) -> np.ndarray | None:
        if aparam is not None:
            return np.asarray(aparam, dtype=np.float64).reshape(nframes, natoms, -1)
        if self.aparam is None:
            return None
        if self.aparam_per_atom:
            if self.aparam.shape[0] != natoms:
                raise ModelError(
                    f"{self.aparam_from} has values for {self.aparam.shape[0]} atoms, the structure has {natoms}"
                )
            per_frame = self.aparam
        else:
            per_frame = np.tile(self.aparam, (natoms, 1))
        return np.tile(np.asarray(per_frame, dtype=np.float64)[None], (nframes, 1, 1))


def check_charge_spin(values) -> None:
    """--charge-spin Q S: whole numbers in the ranges deepmd-kit embeds (charge -100..99,
    spin 0..99: deepmd/pt/model/descriptor/dpa3.py's embedding tables)."""
    if values is None:
        return
    if len(values) != 2 or not all(float(v).is_integer() for v in values):
        raise ConfigError(f"--charge-spin takes two whole numbers, Q and S, got {' '.join(map(str, values))}")
    charge, spin = values
    if not (-100 <= charge <= 99 and 0 <= spin <= 99):
        raise ConfigError(f"--charge-spin {charge:g} {spin:g}: the charge must be -100..99 and the spin 0..99")


NO_PARAMETERS = Parameters()


@dataclass(frozen=True)
class ParameterOptions:
    """The parameters as a user gives them to ``run`` and ``devi``: ``--fparam``,
    ``--aparam`` (the same for every atom) or ``--aparam-array`` (per atom, an
    extended-XYZ array: of ``run``'s template, of each ``devi`` frame), and
    ``--charge-spin``. The one record of them for both commands (their options:
    ``arguments.add_parameter_options``)."""

    fparam: tuple[float, ...] | None = None
    aparam: tuple[float, ...] | None = None
    aparam_array: str | None = None  # per-atom values: this extended-XYZ array
    charge_spin: tuple[float, ...] | None = None  # (charge, spin) of a charge/spin-conditioned model

    def validated(self) -> ParameterOptions:
        if self.aparam is not None and self.aparam_array is not None:
            raise ConfigError("--aparam and --aparam-array exclude each other (both give the atomic parameters)")
        for name, values in (("--fparam", self.fparam), ("--aparam", self.aparam)):
            if values is not None and not np.isfinite(values).all():
                raise ConfigError(f"{name} must be finite numbers, got {' '.join(map(str, values))}")
        check_charge_spin(self.charge_spin)
        return self

    def parameters(self, per_atom: np.ndarray | None = None, source: str = "") -> Parameters:
        """The values every model is made with; ``per_atom``: the ``--aparam-array``
        values read from ``source`` (a template or a trajectory)."""
        fparam = None if self.fparam is None else np.array(self.fparam, dtype=np.float64)
        charge_spin = None if self.charge_spin is None else (self.charge_spin[0], self.charge_spin[1])
        if per_atom is not None:
            source = f"--aparam-array {self.aparam_array} of {source}"
            return Parameters(fparam=fparam, aparam=per_atom, aparam_from=source, charge_spin=charge_spin)
        aparam = None if self.aparam is None else np.array(self.aparam, dtype=np.float64)
        return Parameters(fparam=fparam, aparam=aparam, charge_spin=charge_spin)


def _init_numbers(key: str, text: str | None) -> np.ndarray | None:
    if text is None:
        return None
    try:
        values = np.array([float(x) for x in text.replace("[", " ").replace("]", " ").split()], dtype=np.float64)
    except ValueError:
        values = np.array([])
    if not values.size or not np.isfinite(values).all():
        raise ConfigError(
            f"i-PI's <parameters> give {key} {text!r}: expected numbers separated by spaces, "
            f"as <parameters>{{{key}: 0.5}}</parameters> or {{{key}: 0.5 1.0}}"
        )
    return values


#: the keys of i-PI's <parameters> the models take, in the order of a WORK's slots
SERVER_KEYS = ("fparam", "aparam", "charge_spin")


def from_server(
    own: Parameters, fparam_text: str | None, aparam_text: str | None, charge_spin_text: str | None = None
) -> Parameters:
    """The run's parameters with the server's ``fparam``/``aparam``/``charge_spin`` (i-PI's
    ``<parameters>`` of a force field, in its INIT) in place of the run's own where given;
    ``aparam`` is then the same for every atom, as LAMMPS's ``aparam``."""
    charge_spin = _init_numbers("charge_spin", charge_spin_text)
    if charge_spin is not None:
        if charge_spin.size != 2:
            raise ConfigError(f"i-PI's <parameters> give charge_spin {charge_spin_text!r}: expected two numbers, Q S")
        check_charge_spin(tuple(charge_spin))
    return merged(own, _init_numbers("fparam", fparam_text), _init_numbers("aparam", aparam_text), charge_spin)


def merged(
    own: Parameters, fparam: np.ndarray | None, aparam: np.ndarray | None, charge_spin: np.ndarray | None = None
) -> Parameters:
    """``own`` with the server's ``fparam``, ``aparam`` and ``charge_spin`` in place where
    not None."""
    return Parameters(
        fparam=own.fparam if fparam is None else fparam,
        aparam=own.aparam if aparam is None else aparam,
        fparam_from=own.fparam_from if fparam is None else "i-PI's <parameters> fparam",
        aparam_from=own.aparam_from if aparam is None else "i-PI's <parameters> aparam",
        charge_spin=own.charge_spin if charge_spin is None else (float(charge_spin[0]), float(charge_spin[1])),
    )
