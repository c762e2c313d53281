"""Rank 0's outputs of ``run``: which files (per bead, per system with several i-PI
systems), opened before anything connects, cut first by ``--resume`` or a replacement
(:mod:`continuation`), and closed with the counts printed."""

from __future__ import annotations

import os
from dataclasses import replace

from ..errors import ConfigError
from ..outputs.dumps import TrajLayout, traj_layout
from ..outputs.model_devi import bead_file_names
from ..outputs.selection import candidate_file_names, summary_file_name
from ..outputs.sink import RowSink
from ..wire.ipi_input import RequestIds, system_names
from ..wire.transport import Address
from .config import RunConfig
from .continuation import continuation


def system_outputs(config: RunConfig, ids: RequestIds | None) -> list[tuple[str, int]]:
    """(deviation file, beads) of every system served: --out-file for one; with several
    (--ipi-input), each in a directory of its own named by its prefix, beside --out-file."""
    if ids is None or len(ids.systems) == 1:
        return [(config.out_file, config.nbeads)]
    directory, name = os.path.split(config.out_file)
    return [
        (os.path.join(directory, system, name), beads)
        for system, beads in zip(system_names(ids), ids.beads_per_system())
    ]


def deviation_file_names(config: RunConfig, systems: list[tuple[str, int]]) -> list[str]:
    """Every bead's deviation file, system by system (``systems``: :func:`system_outputs`)."""
    return [name for out, beads in systems for name in bead_file_names(out, config.bead_files, beads)]


def traj_file_layout(config: RunConfig, systems: list[tuple[str, int]]) -> TrajLayout:
    """Where --traj-files puts every bead's frames, system by system."""
    layouts = [traj_layout(config.traj_files, out, beads) for out, beads in systems]
    patterns = tuple(p for layout in layouts for p in layout.patterns)
    if len(set(patterns)) != len(patterns):
        raise ConfigError(
            f"--traj-files {config.traj_files!r} gives several systems the same file names: use dpgen or dpgen2 "
            "(a directory per system)"
        )
    return TrajLayout(patterns, layouts[0].per_frame)


def open_outputs(
    config: RunConfig,
    ids: RequestIds | None = None,
    address: Address | None = None,
    natoms: int = 0,
    batch_size: int = 1,
) -> RowSink | None:
    """Rank 0's outputs, None when no deviation is written. The checks that can fail come
    before the deviation files are made; --resume, or a driver replacing one that stopped,
    cuts the files first (:mod:`continuation`); the sink holds the journal, if one is kept."""
    if config.out_freq == 0 or len(config.models) < 2:
        return None
    options = config.deviation_options()
    systems = system_outputs(config, ids)
    if len(systems) > 1:  # a directory per system, made by the driver
        for out, _ in systems:
            os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    names = deviation_file_names(config, systems)
    traj = traj_file_layout(config, systems) if config.traj_files is not None else None
    if config.exit_file is not None and not os.path.isdir(os.path.dirname(config.exit_file) or "."):
        raise ConfigError(
            f"--exit-file {config.exit_file}: directory {os.path.dirname(config.exit_file)} does not exist"
        )
    candidates = candidate_file_names(names) if options.trust is not None else ()
    going_on = continuation(
        config, ids, address, names, natoms, batch_size, candidate_files=candidates, traj=traj, levels=options.trust
    )
    if going_on.mode is not None:
        options = replace(options, append=True, overwrite=False)
    summary = summary_file_name([config.out_file] if len(systems) > 1 else names)
    try:
        sink = RowSink.open(
            options,
            names,
            summary=summary,
            traj=traj,
            step_offset=config.step_offset,
            counts=going_on.counts,
            stop_after_failed=config.stop_after_failed,
            exit_file=config.exit_file,
        )
    except BaseException:
        if going_on.journal is not None:
            going_on.journal.close()
        raise
    sink.continuation = going_on
    return sink


def close_outputs(sink: RowSink | None) -> None:
    """Close rank 0's outputs and print the counts of the rows by class."""
    report = sink.close() if sink is not None else None
    journal = sink.continuation.journal if sink is not None and sink.continuation is not None else None
    if journal is not None:
        journal.close()
    if report is not None:
        print(report, flush=True)
