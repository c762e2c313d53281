"""Wiring: settings -> checked inputs -> loaded model -> connection -> session.

Order matters for the user: everything that can be checked without the server
(address, template, model files, then the models themselves and their elements) is
checked before connecting, so a bad input fails in seconds with one line instead of
after the server has started a long run.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

import numpy as np

from .client import Reply, Request, Session
from .config import RunConfig
from .errors import ConfigError, ModelError, ProtocolError
from .model import DeepPotModel, check_model_file
from .protocol import Wire
from .template import Template, read_template
from .transport import connect, make_address

log = logging.getLogger(__name__)


def template_elements(template: Template, atom_type: dict[str, int] | None, type_map: Sequence[str]) -> list[str]:
    """The element name of every template atom.

    Without ``atom_type`` the template labels are the element names. With it (the
    ``dp_ipi`` key ``{"label": type index}``), each label is mapped to the name that
    ``type_map`` (model 0's) gives that index, so every model of the ensemble can then
    match atoms by name.
    """
    if atom_type is None:
        return list(template.labels)
    missing = sorted(set(template.labels) - set(atom_type))
    if missing:
        raise ConfigError(f"atom_type does not map label(s) {', '.join(missing)} of template {template.path}")
    elements = []
    for label in template.labels:
        index = atom_type[label]
        if index >= len(type_map):
            raise ConfigError(
                f"atom_type maps {label!r} to type {index}, but the model has only "
                f"{len(type_map)} types ({', '.join(type_map)})"
            )
        elements.append(type_map[index])
    return elements


class SingleModelHandler:
    """Evaluate model 0 on every request and return its energy, forces and virial."""

    def __init__(self, model: DeepPotModel, atom_types: np.ndarray, periodic: bool):
        self.model = model
        self.atom_types = atom_types
        self.periodic = periodic

    def __call__(self, request: Request) -> Reply:
        cell = request.cell if self.periodic else None
        if cell is not None and abs(np.linalg.det(cell)) < 1e-8:
            raise ProtocolError(
                f"the server sent a cell of zero volume (bead {request.rid}, step {request.step}) "
                "for a periodic system; if the system is not periodic, run with --no-pbc"
            )
        result = self.model.evaluate(request.positions, cell, self.atom_types)
        if not (
            np.isfinite(result.energy) and np.isfinite(result.forces).all() and np.isfinite(result.virial).all()
        ):
            raise ModelError(
                f"model {self.model.path} returned non-finite energy, forces or virial at "
                f"step {request.step} of bead {request.rid}; nothing was sent to the server"
            )
        return Reply(result.energy, result.forces, result.virial)


def run(config: RunConfig) -> int:
    """Run the driver until the server ends the run. Returns the exit status (0)."""
    config.validated()
    address = make_address(config.unix, config.address, config.port, config.sockets_prefix)
    template = read_template(config.template)
    for path in config.models:
        check_model_file(path)
    if len(config.models) > 1:
        raise ConfigError(
            f"{len(config.models)} models given: the MPI ensemble is not implemented yet; "
            "pass one model"
        )
    model = DeepPotModel(config.models[0], type_map=config.type_map)
    elements = template_elements(template, config.atom_type, model.type_map)
    atom_types = model.atom_types(elements, template=f"template {template.path}")
    periodic = template.periodic if config.pbc is None else config.pbc
    log.info(
        "model %s on %d atoms (%s), %s",
        model.path,
        template.natoms,
        ", ".join(f"{n} {e}" for e, n in sorted(Counter(elements).items())),
        "periodic" if periodic else "not periodic",
    )
    handler = SingleModelHandler(model, atom_types, periodic)
    sock = connect(address, config.connect_timeout)
    with sock:
        session = Session(Wire(sock, template.natoms), handler, init_every_step=config.init_every_step)
        reason = session.run()
    steps = dict(sorted(session.stats.steps_by_rid.items()))
    log.info("run ended: %s; evaluations per request id: %s", reason.value, steps)
    return 0
