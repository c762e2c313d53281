"""What an i-PI input says i-PI will send (``--ipi-input``): the socket of the forcefield
the driver serves, the atoms in i-PI's order, and which request id is which bead.

i-PI's request id is ``ForceBead.uid`` (ipi/engine/forces.py), a process-wide counter
handed out as i-PI binds its force evaluators: each ``<force>`` component of each system
takes one id per bead that component sees (fewer under ring-polymer contraction), in the
order the components and systems are listed, and each system binds clones for its
estimators after its own. Rather than copy that rule, the input (an input.xml, or a
RESTART file: the same format) is read and bound by i-PI's own code,
``Simulation.load_from_xml(..., read_only=True)``, which binds every system, and so
hands out every id, without opening a socket or writing a file; the ids are then read off
the bound force components. So the layout follows the installed i-PI, whatever version.

A geometry optimiser (``<motion mode='minimize'>``) evaluates through a clone of the
forces that its bind makes (``dforces`` in ipi/engine/motion/geop.py), so the clone's ids
are bound too and are read off the same way; the system's own forces are evaluated once,
on the first structure. Nothing on the wire says where one of the optimiser's steps ends
(a line search evaluates a varying number of times per step): :class:`OptimiserSteps`
tells it from the structures themselves (see there).

The input's relative paths (``<initialize>``'s file) are taken from the input's own
directory, where i-PI is normally started.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, one_line
from . import units
from .optimiser import OptimiserSteps
from .template import Template

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Series:
    """One bead of one system as the served forcefield sees it: one deviation file."""

    system: int  # index of the system in the input
    prefix: str  # the system's prefix ('' when it has none)
    bead: int  # the bead of the forcefield's (possibly contracted) ring polymer
    per_step: int = 1  # evaluations of its request id per i-PI step (MTS inner levels: more)
    # a geometry optimiser's line search ('approx', 'brent', 'single': see OptimiserSteps;
    # 'unknown': one whose steps are not told apart): the system's own request id is
    # evaluated on the first structure only, the optimiser's clone (RequestIds.clones) on
    # every structure after it
    optimiser: str = ""


@dataclass(frozen=True, eq=False)
class Clone:
    """A bead of an optimiser's clone of the forces: the series it files its rows in, and
    the bead's positions at the first step (Angstrom; where the first line search starts)."""

    series: int
    start: np.ndarray


@dataclass(frozen=True)
class RequestIds:
    """Request id -> series, and i-PI's step of each evaluation."""

    series: tuple[Series, ...]
    index: Mapping[int, int]  # request id -> index into series
    first_step: int = 0  # i-PI's step of the first evaluation (a RESTART's <step>)
    clones: Mapping[int, Clone] = field(default_factory=dict)  # an optimiser's clone's request ids
    _lines: dict = field(default_factory=dict, compare=False, repr=False)  # request id -> OptimiserSteps
    _said: set = field(default_factory=set, compare=False, repr=False)  # what has been logged once

    def locate(self, rid: int, evaluation: int, positions: np.ndarray | None = None) -> tuple[int, int] | None:
        """(series, i-PI step) of the ``evaluation``-th structure of request ``rid`` (from
        0), or None when it is no bead of a system's trajectory (an estimator's clone; said
        once in the log) or falls inside a step (an MTS inner level's intermediate
        positions). An optimiser's clone is labelled from its ``positions`` (Angstrom),
        so every evaluation of its request ids is located once, in order."""
        k = self.index.get(rid)
        if k is not None:
            series = self.series[k]
            if series.optimiser:  # the structure the optimiser starts from; later ones come through its clone
                return (k, self.first_step) if evaluation == 0 else None
            if evaluation % series.per_step:
                return None
            return k, self.first_step + evaluation // series.per_step
        clone = self.clones.get(rid)
        if clone is None:
            self._say_once(
                logging.INFO,
                "unfiled",
                "request id %d is no bead of a system's trajectory (a clone of the forces that i-PI evaluates for an "
                "estimator, or for a motion other than dynamics and the bfgs, lbfgs, cg, sd and damped_bfgs "
                "optimisers): no rows for it, nor for any other such id",
                rid,
            )
            return None
        if positions is None:
            raise ValueError(f"request id {rid} is an optimiser's clone: its step is told from its positions")
        line = self._lines.get(rid)
        if line is None:
            line = self._lines[rid] = OptimiserSteps(self.series[clone.series].optimiser, clone.start, self.first_step)
        if evaluation != line.count:  # evaluations this process did not see (a replaced driver)
            self._say_once(
                logging.WARNING,
                ("lost", rid),
                "request id %d (the geometry optimiser's): evaluation %d, but %d were seen here; where its line "
                "searches stand is unknown, so its structures get no rows from now on",
                rid,
                evaluation,
                line.count,
            )
            return None
        return clone.series, line.place(positions)

    def _say_once(self, level: int, key, message: str, *args) -> None:
        if key not in self._said:
            self._said.add(key)
            log.log(level, message, *args)

    def batch_beads(self, first: int, size: int) -> int:
        """How many structures of a batch starting at request id ``first`` are beads: the
        ids from ``first`` on of the same forces (a system's, or an optimiser's clone);
        at least one."""
        ids = self.index if first in self.index else self.clones
        real = 0
        while real < size and first + real in ids:
            real += 1
        return max(real, 1)

    @property
    def size(self) -> int:
        """One more than the highest request id filed (a system's bead or an optimiser's clone)."""
        return max([*self.index, *self.clones]) + 1

    def beads_per_system(self) -> list[int]:
        """How many series each served system has, in order."""
        counts: dict[int, int] = {}
        for s in self.series:
            counts[s.system] = counts.get(s.system, 0) + 1
        return list(counts.values())

    @property
    def systems(self) -> list[str]:
        """The prefix of every system the forcefield serves, in order."""
        seen: dict[int, str] = {}
        for s in self.series:
            seen.setdefault(s.system, s.prefix)
        return list(seen.values())


@dataclass(frozen=True)
class Socket:
    """An ``<ffsocket>``: i-PI's ``mode``, ``address``, ``port`` and ``sockets_prefix``."""

    name: str
    mode: str  # 'unix' or 'inet'
    address: str
    port: int
    sockets_prefix: str
    batch_size: int = 1


@dataclass(frozen=True)
class IpiInput:
    path: str
    socket: Socket
    ids: RequestIds
    template: Template  # i-PI's atom names in its order, and its first system's structure
    total_steps: int


def read_ipi_input(path: str | Path, forcefield: str | None = None) -> IpiInput:
    """Read and bind an i-PI input (or RESTART) with i-PI's own code; ``forcefield`` names
    the ``<ffsocket>`` served when the input has several."""
    path = Path(path)
    where = f"--ipi-input {path}"
    if not path.is_file():
        raise ConfigError(f"{where}: no such file")
    simulation, base = _bind(path, where)
    socket, forces_name = _socket(simulation, forcefield, where)
    ids, systems = _request_ids(simulation, forces_name, base, where)
    names = [tuple(str(n) for n in s.beads.names) for s in systems]
    if any(n != names[0] for n in names[1:]):
        raise ConfigError(f"{where}: the systems on forcefield {socket.name!r} have different atoms")
    first = systems[0]
    template = Template(
        path=str(path),
        labels=names[0],
        periodic=True,
        positions=units.positions_from_wire(np.array(first.beads.q[0])),
        cell=units.cell_from_wire(np.array(first.cell.h)),
    )
    return IpiInput(str(path), socket, ids, template, int(simulation.tsteps))


def _bind(path: Path, where: str):
    """i-PI's Simulation for the input, bound read-only (no socket, no output file), with
    the input's directory as the working directory while it reads its files; and the
    first request id it handed out (ids bound earlier in this process are not i-PI's)."""
    try:
        import ipi.engine.forces as forces
        from ipi.engine.simulation import Simulation
    except ImportError as exc:
        raise ConfigError(f"{where}: cannot import i-PI to read it ({one_line(exc)})") from None
    text = path.read_text()
    here = os.getcwd()
    base = forces.fbuid
    said = io.StringIO()
    try:
        os.chdir(path.resolve().parent)
        with contextlib.redirect_stdout(said):  # i-PI's warnings, printed even when quiet
            simulation = Simulation.load_from_xml(text, custom_verbosity="quiet", read_only=True)
    except SystemExit:
        raise ConfigError(f"{where}: i-PI cannot read it") from None
    except Exception as exc:  # i-PI raises many kinds on a bad input
        raise ConfigError(f"{where}: i-PI cannot read it: {one_line(exc)}") from None
    finally:
        os.chdir(here)
        for line in said.getvalue().splitlines():
            log.debug("i-PI reading %s: %s", path, line.strip())
    return simulation, base


def _socket_forcefields(simulation) -> dict[str, tuple[object, str]]:
    """Every socket forcefield by name, with the forcefield the <force>s name for it: itself,
    or the <ffcommittee> it is a member of (whose requests carry the committee's ids,
    FFCommittee.queue in ipi/engine/forcefields.py)."""
    found = {}
    for name, ff in simulation.fflist.items():
        if hasattr(ff, "socket"):
            found[name] = (ff, name)
        for member in getattr(ff, "fflist", None) or []:
            if hasattr(member, "socket"):
                found[str(member.name)] = (member, name)
    return found


def _socket(simulation, forcefield: str | None, where: str) -> tuple[Socket, str]:
    """The socket served, and the forcefield name its <force> components carry."""
    found = _socket_forcefields(simulation)
    sockets = {name: ff for name, (ff, _) in found.items()}
    if forcefield is not None:
        if forcefield not in sockets:
            known = ", ".join(sorted(sockets)) or "none"
            raise ConfigError(f"{where}: no socket forcefield named {forcefield!r} (socket forcefields: {known})")
        name = forcefield
    elif len(sockets) == 1:
        name = next(iter(sockets))
    elif not sockets:
        raise ConfigError(f"{where}: no <ffsocket> (or other socket forcefield) for the driver to serve")
    else:
        raise ConfigError(
            f"{where}: {len(sockets)} socket forcefields ({', '.join(sorted(sockets))}): name the one this driver "
            "serves with --forcefield NAME"
        )
    s = sockets[name].socket
    socket = Socket(name, s.mode, s.address, int(s.port), s.sockets_prefix, int(getattr(s, "batch_size", 1)))
    return socket, found[name][1]


def _request_ids(simulation, forcefield: str, base: int, where: str) -> tuple[RequestIds, list]:
    """The ids i-PI bound for ``forcefield``'s components, system by system (``base``: the
    process's first id for this input)."""
    series: list[Series] = []
    index: dict[int, int] = {}
    clones: dict[int, Clone] = {}
    systems = []
    for k, system in enumerate(simulation.syslist):
        components = [c for c in system.forces.mforces if c.ffield == forcefield]
        if not components:
            continue
        if len(components) > 1:
            raise ConfigError(
                f"{where}: forcefield {forcefield!r} is in {len(components)} <force> components of system "
                f"{k} ({system.prefix or 'no prefix'}): one component per system is supported"
            )
        component = components[0]
        per_step = _evaluations_per_step(system, component)
        search, clone = _optimiser(system, k, forcefield, where)
        systems.append(system)
        for bead, force_bead in enumerate(component._forces):
            index[int(force_bead.uid) - base] = len(series)
            if clone is not None:
                copy = clone._forces[bead]
                start = units.positions_from_wire(np.array(copy.atoms.q)).reshape(-1)
                clones[int(copy.uid) - base] = Clone(len(series), start)
            series.append(Series(k, str(system.prefix or ""), bead, per_step, search))
    if not series:
        raise ConfigError(f"{where}: no <force forcefield='{forcefield}'> in any system")
    return RequestIds(tuple(series), index, int(simulation.step), clones), systems


#: i-PI's optimisers (<optimizer mode=...>) whose steps OptimiserSteps tells apart, by
#: their line search; and the mapper (GradientMapper, LineMapper) whose clone they evaluate
OPTIMISERS = {"bfgs": ("approx", "gm"), "lbfgs": ("approx", "gm"), "sd": ("brent", "lm"), "cg": ("brent", "lm")}
OPTIMISERS["damped_bfgs"] = ("single", "gm")


def _optimiser(system, k: int, forcefield: str, where: str) -> tuple[str, object | None]:
    """A geometry optimiser's line search and its clone of the ``forcefield`` component,
    bound with the system (ipi/engine/motion/geop.py: ``dforces``); ('', None) for any
    other motion; ('unknown', None), said once, for an optimiser whose steps cannot be
    told apart."""
    motion = system.motion
    optimizer = getattr(motion, "optimizer", None)
    if type(motion).__name__ != "GeopMotion" or optimizer is None:
        return "", None
    mode = str(motion.mode)
    if mode not in OPTIMISERS:
        log.warning(
            "%s: system %d%s minimises with <optimizer mode='%s'>, whose steps the driver cannot tell apart: "
            "rows for its first structure only (supported: %s)",
            where,
            k,
            f" ({system.prefix})" if system.prefix else "",
            mode,
            ", ".join(OPTIMISERS),
        )
        return "unknown", None
    search, mapper = OPTIMISERS[mode]
    forces = getattr(getattr(optimizer, mapper), "dforces", None)
    clones = [c for c in getattr(forces, "mforces", []) if c.ffield == forcefield]
    if len(clones) != 1:  # not bound as i-PI 3.3 binds it
        raise ConfigError(f"{where}: cannot find the clone of forcefield {forcefield!r} that its optimiser evaluates")
    return search, clones[0]


def _evaluations_per_step(system, component) -> int:
    """How many structures of each bead a component is evaluated on per step: one, or
    with multiple time stepping (``<nmts>``) the product of the sub-steps down to the
    component's innermost level (its last nonzero ``mts_weights``), where the positions
    move that many times per step."""
    nmts = np.atleast_1d(getattr(system.motion, "nmts", [1]))
    weights = np.atleast_1d(component.mts_weights)
    levels = np.flatnonzero(weights)
    deepest = int(levels[-1]) if levels.size else 0
    return int(np.prod(nmts[: deepest + 1]))


def system_names(ids: RequestIds) -> list[str]:
    """A name per served system for its directory of outputs: i-PI's prefix, or
    ``system<k>`` where it has none."""
    return [p or f"system{k}" for k, p in enumerate(ids.systems)]
