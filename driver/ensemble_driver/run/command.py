"""Wiring: settings -> checked inputs -> loaded models on every rank -> connection.

Start-up is collective and ordered for the user: everything that can be checked without
models (settings, ranks versus models, socket address, template, model files, output
files) is checked first, then every rank loads its models and matches the template's
elements. A failure on any rank ends every rank before anything connects, with one line
on rank 0 naming the rank, the file and the reason.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import numpy as np

from .. import ranks
from ..ensemble.layout import Layout, deal_models
from ..ensemble.workers import follower_loop, replica_loop
from ..errors import ConfigError, DriverError, ReportedError, one_line
from ..logs import setup_logging
from ..models import devices
from ..models.deepmd import DeepPotModel, check_model_file
from ..models.local import LocalModel
from ..models.parameters import Parameters
from ..signals import Stopped, StopSignals
from ..wire.ipi_input import IpiInput, read_ipi_input
from ..wire.template import Template, read_template, read_template_array
from ..wire.transport import make_address
from .checkpoint import Start, describe, plan_start
from .config import RunConfig
from .ipi_process import EXIT_RESTARTABLE, IpiFailed, IpiProcess, clear_socket
from .outputs import close_outputs, open_outputs
from .serving import Served, serve_connection, serve_rank0

log = logging.getLogger(__name__)
T = TypeVar("T")


def collective(comm, step: Callable[[], T]) -> T:
    """Run ``step`` on every rank. If it fails on any rank, raise the failure of the
    lowest such rank on every rank (rank 0 prints it, naming the rank)."""
    failure = None
    result = None
    try:
        result = step()
    except DriverError as exc:
        failure = (str(exc), exc.exit_status)
    except Exception as exc:  # a bug or an unexpected backend failure: still collective
        failure = (f"internal error: {one_line(exc)}", 1)
    failures = comm.allgather(failure)
    for rank, f in enumerate(failures):
        if f is not None:
            message = f[0] if rank == 0 else f"rank {rank}: {f[0]}"
            raise ReportedError(message, f[1], print_here=comm.rank == 0)
    return result  # type: ignore[return-value]


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


def model_parameters(config: RunConfig) -> Parameters:
    """The frame and atomic parameters of every model: --fparam, and --aparam (the same
    for every atom) or --aparam-array (per atom, a column of the extended-XYZ template);
    and --charge-spin."""
    options = config.parameters
    if options.aparam_array is None:
        return options.parameters()
    per_atom = read_template_array(config.template, options.aparam_array)
    return options.parameters(per_atom, f"template {config.template}")


def warm_up(members: Sequence[LocalModel], template: Template, periodic: bool) -> None:
    """Evaluate every model of this rank on the template's structure until it is warm.

    Not collective: a model that fails here is only logged, and fails again, with the
    step and the bead named, on the server's first structure."""
    if template.positions is None:
        return
    cell = template.cell if periodic else None
    if cell is not None and abs(np.linalg.det(cell)) < 1e-6:
        cell = None  # periodic by --pbc but the template has no cell: warm up without one
    for member in members:
        try:
            times = member.model.warm_up(template.positions, cell, member.atom_types)
        except Stopped:
            raise
        except Exception as exc:
            log.warning(
                "model %d (%s): warm-up on the template failed: %s", member.index, member.model.path, one_line(exc)
            )
            continue
        log.debug(
            "model %d warmed up on the template: calls of %s s", member.index, ", ".join(f"{t:.3f}" for t in times)
        )


def log_layout(comm, layout: Layout, models: Sequence[str], placement: devices.Placement) -> list[str]:
    """Rank 0 logs where every rank runs, which models it holds and its role (collective);
    every rank gets the host of every rank."""
    where = comm.allgather((ranks.host_name(), str(placement)))
    if comm.rank != 0:
        return [host for host, _ in where]
    for rank, (host, device) in enumerate(where):
        held = ", ".join(f"model {i} {models[i]}" for i in layout.models_of[rank])
        role = f" ({layout.role(rank)})" if layout.model0_ranks > 1 else ""
        log.info("rank %d on %s (%s): %s%s", rank, host, device, held, role)
    return [host for host, _ in where]


def the_template(config: RunConfig, ipi: IpiInput | None) -> Template:
    """The atoms in the server's order: --template, or the i-PI input's; both given, the
    template must list i-PI's atoms in i-PI's order."""
    if ipi is None:
        return read_template(config.template)
    if config.template is None:
        return ipi.template
    template = read_template(config.template)
    if template.labels != ipi.template.labels:
        same = sorted(template.labels) == sorted(ipi.template.labels)
        raise ConfigError(
            f"--template {config.template} and --ipi-input {ipi.path} disagree on the atoms"
            + (" (the same atoms in another order: i-PI's order is the one that counts)" if same else "")
            + "; leave --template out"
        )
    return template


def run(config: RunConfig | Callable[[], RunConfig], comm=None, signals: StopSignals | None = None) -> int:
    """Run the driver on this rank until the server ends the run. Returns 0.

    ``config`` may be a function that builds the settings (from a file, say): it is
    then called on every rank inside the first collective step, so that a bad setting
    is reported once, by rank 0, like every other start-up failure.
    SIGTERM and SIGINT are handled for the whole run (see :mod:`signals`) unless
    ``signals`` is given (tests pass NoSignals)."""
    own_signals = signals is None
    signals = StopSignals().install() if own_signals else signals
    try:
        with signals.interruptible():  # nothing is half done before the connection
            comm = comm if comm is not None else ranks.world()
        return _run(config, comm, signals)
    finally:
        if own_signals:
            signals.restore()


def _run(config_source, comm, signals: StopSignals) -> int:
    started: list[IpiProcess] = []
    try:
        return _run_inputs(config_source, comm, signals, started)
    finally:
        for ipi in started:  # whatever ended the run, i-PI ends restartably and never outlives it
            if ipi.returncode is None:
                ipi.stop()


def _restartable(exc: DriverError) -> DriverError:
    """With --start-ipi, a stop by a signal exits with the status that says 'run the same
    command again' (75), on every rank."""
    if exc.exit_status in tuple(128 + s for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)):
        exc.exit_status = EXIT_RESTARTABLE
    return exc


def _run_inputs(config_source, comm, signals: StopSignals, started: list[IpiProcess]) -> int:
    rank = comm.rank
    node_rank = ranks.node_share(comm)[0]  # collective, so before anything can fail
    start_ipi = [False]

    def check_inputs():
        config = config_source() if callable(config_source) else config_source
        config.validated()
        if config.verbose:
            setup_logging(config.verbose)
        start: Start | None = None
        if config.start_ipi:
            if config.resume:
                raise ConfigError(
                    "--start-ipi continues a stopped run by itself, from i-PI's newest checkpoint, and cuts the "
                    "outputs to match: leave out --resume, --overwrite and --append"
                )
            start_ipi[0] = True
            signals.handle(signal.SIGUSR1)
            start = plan_start(config.ipi_input)
            if start.complete:
                return start
            # i-PI's checkpoint is the input, and the outputs are continued from its step
            config = replace(config, ipi_input=str(start.input), resume=True).validated()
        layout = deal_models(len(config.models), comm.size, config.model0_rank_count, config.connections)
        placement = devices.place(config.device, node_rank, devices.visible_gpus(), ranks.host_name())
        devices.bind(placement)  # before any backend is imported
        ipi = None
        if config.ipi_input is not None:
            try:
                ipi = read_ipi_input(config.ipi_input, config.forcefield)
            except ConfigError as exc:
                if start is not None and "i-PI cannot read it" in str(exc):
                    raise IpiFailed(str(exc)) from None  # i-PI's own failure, before it is started: status 6
                raise
            config = config.with_ipi_input(ipi).validated()
            if start is not None and rank == 0:
                clear_socket(ipi.socket)
        addresses = [make_address(config.unix, a, config.port, config.sockets_prefix) for a in config.addresses]
        address = addresses[rank] if len(addresses) > 1 and rank < len(addresses) else addresses[0]
        template = the_template(config, ipi)
        for index in layout.models_of[rank]:
            check_model_file(config.models[index])
        ids = ipi.ids if ipi is not None else None
        batch = ipi.socket.batch_size if ipi is not None else 1
        outputs = open_outputs(config, ids, address, template.natoms, batch) if rank == 0 else None
        opened.append(outputs)
        total = ipi.total_steps if ipi is not None else None
        return config, layout, address, template, outputs, placement, ids, total, start

    opened: list = []  # rank 0's outputs, to discard if another rank fails its checks
    try:
        checked = collective(comm, check_inputs)
    except BaseException as exc:
        for sink in opened:
            if sink is not None:
                sink.discard_unused()
                close_outputs(sink)
        if isinstance(exc, DriverError):
            raise (_restartable(exc) if start_ipi[0] else exc) from None
        raise
    if isinstance(checked, Start):
        if rank == 0:
            chk = checked.checkpoint
            log.info(
                "the run is complete: i-PI's %s is at step %d of %d; nothing to do",
                chk.path.name,  # type: ignore[union-attr]
                chk.step,  # type: ignore[union-attr]
                chk.total_steps,  # type: ignore[union-attr]
            )
        return 0
    config, layout, address, template, outputs, placement, ids, total, start = checked
    if rank == 0 and start is not None:
        for skipped in start.skipped:
            log.warning("i-PI checkpoint not usable, skipped: %s", skipped)
        log.info("%s", describe(start))
    hosts = log_layout(comm, layout, config.models, placement)
    try:
        return _run_checked(
            config, comm, layout, address, template, outputs, signals, hosts, ids, total, start, started
        )
    except BaseException as exc:
        if outputs is not None:
            outputs.discard_unused()
        if isinstance(exc, DriverError) and start is not None:
            raise _restartable(exc) from None
        raise
    finally:
        close_outputs(outputs)


def _run_checked(
    config, comm, layout, address, template, outputs, signals: StopSignals, hosts, ids, total, start, started
) -> int:
    rank = comm.rank
    mine = layout.models_of[rank]
    if rank == 0 and len(config.models) > 1 and config.out_freq == 0:
        log.warning("--out-freq 0: the ensemble is loaded but no deviation is computed")

    def load():
        parameters = model_parameters(config)
        with signals.interruptible():
            models = [
                DeepPotModel(config.models[i], type_map=config.type_map, parameters=parameters, head=config.head)
                for i in mine
            ]
        elements = None
        if rank == 0:
            elements = template_elements(template, config.atom_type, models[0].type_map)
        return models, elements

    models, elements = collective(comm, load)
    elements = comm.bcast(elements, root=0)

    def match():
        return [
            LocalModel(i, m, m.atom_types(elements, template=f"template {template.path}")) for i, m in zip(mine, models)
        ]

    members = collective(comm, match)
    ipi_process = None
    if start is not None:  # rank 0 starts i-PI now: it reads its input while the models warm up

        def start_ipi():
            if rank != 0:
                return None
            with signals.interruptible():
                process = IpiProcess.start(start.input, Path(start.input).resolve().parent)
            started.append(process)
            signals.on_signal = lambda signum: process.stop_soon()
            return process

        ipi_process = collective(comm, start_ipi)
    periodic = template.periodic if config.pbc is None else config.pbc
    with signals.interruptible():
        warm_up(members, template, periodic)
    ids_size = ids.size if ids is not None else config.nbeads  # the request ids counted
    counter = ranks.StepCounter(comm, ids_size) if config.connections > 1 else None  # collective
    served = Served(
        config, comm, layout, address, template, members, periodic, signals, counter, hosts, ids, total, ipi_process
    )
    if rank in layout.ensemble_ranks:
        status = follower_loop(
            comm, members, natoms=template.natoms, signals=signals, dispatchers=layout.connection_ranks
        )
    elif rank in layout.batch_replicas:
        status = replica_loop(comm, members[0], natoms=template.natoms, signals=signals)
    elif rank != 0:
        status = serve_connection(served)
    else:
        status = serve_rank0(served, elements, outputs)
    if counter is not None:
        counter.close()  # collective: every rank ends cleanly here (a failure raised above)
    return status


def run_command(args) -> int:
    """``ensemble-driver run``: its options (parsed by :mod:`options`) to a run."""
    from .settings import build_config, load_config_file, settings_from_options

    cli_settings = settings_from_options(args)
    setup_logging(args.verbose or 0, args.quiet)

    def load_config():  # called by run() on every rank, once MPI is up
        return build_config(load_config_file(args.config) if args.config else {}, cli_settings)

    return run(load_config)
