"""Which run the files in the output directory continue, decided before anything connects.

With ``--ipi-input`` and one connection, rank 0 keeps a journal (:mod:`ensemble.journal`)
beside the deviation files. When the same command runs again in the same directory
while the i-PI it served is still running (a driver replaced mid-run: a node lost, a job
killed, an allocation ended), the replacement continues every file exactly: each bead is
cut to the first row its predecessor left unwritten, those rows are recomputed from the
journal's structures, and each request id's count goes on from the journal. It does so
only when it can be sure: the process that listens on i-PI's socket now is the very one
the journal names. Otherwise it refuses in one line that says what to do; it never
labels from 0 and never deletes rows it cannot rewrite.

``--resume`` (i-PI restarted from its RESTART or checkpoint) cuts every file at the
restart's step and starts a new journal; it is refused when the input is no restart (step
0) and rows exist.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from ..ensemble.journal import Journal, Pending, path_for
from ..errors import ConfigError
from ..outputs.model_devi import has_rows
from ..outputs.resume import resume_outputs
from ..wire.ipi_input import RequestIds
from ..wire.peer import listener
from ..wire.transport import Address
from .config import RunConfig

log = logging.getLogger(__name__)

#: Row-due structures a journal keeps at once: the deviation jobs in flight
#: (ensemble.jobs.MAX_PENDING_JOBS, 16) and the one in hand, with room to spare.
RING = 24

GUIDE = "docs/ensemble.md, 'Restarts and replacements'"


@dataclass
class Continuation:
    """What rank 0's outputs continue from: a journal (None without one), the rows to
    recompute, each bead's last row kept, the counts per class of the rows kept."""

    journal: Journal | None = None
    replay: list[Pending] = field(default_factory=list)
    last_steps: dict[int, int] = field(default_factory=dict)
    counts: list[dict[str, int]] | None = None
    mode: str | None = None  # the files' mode when it is not the options' ("append": continued)


def journal_kept(config: RunConfig, ids: RequestIds | None, batch_size: int = 1) -> bool:
    """A journal is kept with --ipi-input, one connection and one structure a message
    (i-PI's <batch_size> 1)."""
    return ids is not None and config.connections == 1 and batch_size == 1


def continuation(
    config: RunConfig,
    ids: RequestIds | None,
    address: Address | None,
    names: list[str],
    natoms: int,
    batch_size: int = 1,
    **cut,
) -> Continuation:
    """Decide (see the module); ``batch_size``: i-PI's, from its input; ``cut``:
    resume_outputs' candidate_files, traj, levels."""
    kept = journal_kept(config, ids, batch_size)
    written = [name for name in names if has_rows(name)]
    if config.resume and ids is not None:
        # (--start-ipi restarts i-PI itself: from its input at step 0 when no checkpoint exists)
        if ids.first_step == 0 and written and not config.start_ipi:
            raise ConfigError(
                f"--resume: --ipi-input {config.ipi_input} starts at step 0 (it is no RESTART), and {written[0]} "
                "holds rows: give the RESTART or checkpoint i-PI restarts from, or --overwrite to start over"
            )
        counts = resume_outputs(ids.first_step, names, **cut).counts
        return Continuation(_new_journal(config, ids, natoms) if kept else None, counts=counts)
    if not kept:
        return Continuation()
    assert ids is not None
    path = path_for(config.out_file)
    if config.overwrite or not path.exists():
        if written and not config.overwrite:
            raise ConfigError(
                f"deviation file {written[0]} has rows and no journal ({path.name}) of the driver that wrote them "
                "is beside it, so this driver cannot know i-PI's step: if i-PI was restarted from its RESTART or "
                f"checkpoint, run with --ipi-input that file --resume; to start over, --overwrite ({GUIDE})"
            )
        return Continuation(_new_journal(config, ids, natoms))
    return _replace(config, ids, address, names, natoms, path, cut)


def _new_journal(config: RunConfig, ids: RequestIds, natoms: int) -> Journal:
    return Journal.create(path_for(config.out_file), natoms=natoms, ids=ids.size, ring=RING, first_step=ids.first_step)


def _replace(config, ids: RequestIds, address, names, natoms, path: Path, cut) -> Continuation:
    """The same command again beside a journal: a replacement, if it can be sure."""
    journal = Journal.reopen(path, natoms=natoms, ids=ids.size)
    try:
        _check_same_run(config, ids, address, journal)
    except ConfigError:
        journal.close()
        raise
    replay = journal.pending()
    first: dict[int, int] = {}
    for p in replay:
        first.setdefault(p.series, p.step)
    steps = [first.get(k) for k in range(len(names))]
    kept = resume_outputs(steps, names, **cut)
    received = journal.received()
    log.info(
        "continuing the rows of the driver that stopped: i-PI (%s) had sent %d structures; %d rows to recompute%s",
        address.describe() if address is not None else "",
        sum(received.values()),
        len(replay),
        "" if not replay else " (" + ", ".join(f"bead {p.series} step {p.step}" for p in replay) + ")",
    )
    return Continuation(journal, replay, kept.last_steps(), kept.counts, mode="append")


def _check_same_run(config, ids: RequestIds, address, journal: Journal) -> None:
    if journal.first_step != ids.first_step:
        raise ConfigError(
            f"{journal.path} was written for i-PI's step {journal.first_step} onwards and --ipi-input "
            f"{config.ipi_input} starts at step {ids.first_step}: a replacement driver takes the same input "
            f"as the one it replaces; after an i-PI restart use --resume ({GUIDE})"
        )
    if not journal.exact:
        raise ConfigError(
            f"{journal.path}: the driver that stopped had more rows in flight than it could keep, so they cannot "
            f"all be recomputed: restart i-PI from its checkpoint and run with --resume ({GUIDE})"
        )
    if not journal.received():
        return  # it stopped before i-PI sent anything: nothing to continue, nothing to check
    now = listener(address) if address is not None else None
    where = address.describe() if address is not None else "i-PI's socket"
    if journal.peer is None:
        raise ConfigError(
            f"{journal.path}: the driver that stopped could not name the i-PI process it served (on another "
            f"host?), so a replacement cannot be sure of i-PI's step: restart i-PI from its checkpoint and run "
            f"with --resume, or run the replacement on i-PI's host ({GUIDE})"
        )
    if now is None:
        raise ConfigError(
            f"no process on this host listens on {where}: the i-PI that {journal.path.parent or '.'}'s rows were "
            f"written for is gone (or on another host); restart it from its RESTART or checkpoint and run with "
            f"--ipi-input that file --resume; to start over, --overwrite ({GUIDE})"
        )
    if (now.pid, now.start) != journal.peer:
        raise ConfigError(
            f"{where} is served by another i-PI process ({now.describe()}) than the one these rows were written "
            f"for (pid {journal.peer[0]}): if i-PI was restarted, run with --ipi-input its RESTART or checkpoint "
            f"--resume; to start over, --overwrite ({GUIDE})"
        )


def record_peer(journal: Journal | None, address: Address) -> None:
    """Once connected: name the i-PI process in the journal (a replacement checks it)."""
    if journal is None:
        return
    found = listener(address)
    if found is None:
        log.info(
            "%s: the server is not on this host, so a driver replacing this one could not check that it serves "
            "the same i-PI; after a failure, restart i-PI from its checkpoint and use --resume",
            address.describe(),
        )
        return
    journal.set_peer(found.pid, found.start)
