"""The journal: what rank 0 must know for a replacement driver to continue exactly.

i-PI outlives its clients: when a driver dies, i-PI sends the request it had in hand to
the next client and goes on (docs/ensemble.md, "Replacing a driver"). No step travels on
the wire, so a replacement can label its rows only from what its predecessor left. The
journal, ``ensemble-driver.journal`` beside the deviation files, holds it in a file
mapped into memory (``mmap``, shared), so that what is stored survives the process however
it ends, SIGKILL included (the pages live in the kernel's page cache):

- per request id, how many structures of it were received and a hash (BLAKE2b, 16
  bytes) of the last one as it came off the wire. The pair is written to the spare of
  two records, then the record index flips in one aligned 8-byte store, so a process
  killed at any instant leaves one whole pair. A replacement's first structure of a
  request id is the lost driver's last one sent again exactly when the hashes agree
  (i-PI resends the very bytes); otherwise it is the next one;
- every structure whose deviation row is due, from when it is dispatched to the other
  models until its row, frame and candidate are written: those left are the rows the
  lost driver never wrote, recomputed by the replacement;
- which process the driver served (:class:`wire.peer.Process`), and i-PI's first step.

An exclusive ``flock`` on the journal keeps a second driver from writing the same files
while the first runs (the kernel drops it when a process dies, however it dies).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError

log = logging.getLogger(__name__)

NAME = "ensemble-driver.journal"
_MAGIC = 0x4A52_4E4C_4544_0001  # "ED" "JRNL", format 1
_HEADER = 8  # int64: magic, natoms, ids, ring, peer pid, peer start, first step, exact


@dataclass(frozen=True)
class Pending:
    """A structure whose row was due and not written when the driver stopped."""

    series: int
    step: int
    cell: np.ndarray  # (3, 3), Angstrom, rows are lattice vectors
    positions: np.ndarray  # (natoms, 3), Angstrom
    slot: int  # its place in the journal, released once its row is written


def path_for(out_file: str) -> Path:
    return Path(os.path.dirname(out_file) or ".") / NAME


def _size(natoms: int, ids: int, ring: int) -> int:
    words = _HEADER + ids * (1 + 2 * 3) + ring * (4 + 9 + 3 * natoms)
    return 8 * words


class Journal:
    """The journal file of one run, open and locked (see the module)."""

    def __init__(self, path: Path, fd: int, natoms: int, ids: int, ring: int):
        self.path = path
        self._fd = fd
        self.natoms, self.ids, self.ring = natoms, ids, ring
        self._map = mmap.mmap(fd, _size(natoms, ids, ring))
        words = np.frombuffer(self._map, dtype=np.int64)
        self.header = words[:_HEADER]
        at = _HEADER
        self._which = words[at : at + ids]  # per request id: which of its two records holds
        at += ids
        # per request id, two records of (count, hash, hash): the count received, the last one's hash
        self._records = words[at : at + 6 * ids].reshape(ids, 2, 3)
        at += 6 * ids
        self._meta = words[at : at + 4 * ring].reshape(ring, 4)  # (state, series, step, spare)
        at += 4 * ring
        floats = np.frombuffer(self._map, dtype=np.float64)
        self._cells = floats[at : at + 9 * ring].reshape(ring, 3, 3)
        at += 9 * ring
        self._positions = floats[at : at + 3 * natoms * ring].reshape(ring, natoms, 3)
        self._fresh = set(range(ids))  # request ids not yet received by this process
        # ids beyond those the input files (an estimator's clone made as i-PI runs): they
        # get no rows, so they are counted here only, not kept for a replacement
        self._unfiled: dict[int, int] = {}

    # -- opening -----------------------------------------------------------------------
    @staticmethod
    def _open_locked(path: Path, flags: int) -> int:
        try:
            fd = os.open(path, flags, 0o644)
        except OSError as exc:
            raise ConfigError(f"cannot open {path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise ConfigError(
                f"another driver is writing rows in {path.parent} (it holds {path.name}): stop it first, or "
                "give this one another --out-file directory"
            ) from None
        return fd

    @classmethod
    def create(cls, path: Path, *, natoms: int, ids: int, ring: int, first_step: int) -> Journal:
        """A new journal (an old one is replaced): nothing received yet."""
        fd = cls._open_locked(path, os.O_RDWR | os.O_CREAT)
        os.ftruncate(fd, 0)
        os.ftruncate(fd, _size(natoms, ids, ring))
        journal = cls(path, fd, natoms, ids, ring)
        journal.header[:] = [_MAGIC, natoms, ids, ring, 0, 0, first_step, 1]
        return journal

    @classmethod
    def reopen(cls, path: Path, *, natoms: int, ids: int) -> Journal:
        """The journal a stopped driver left, for its replacement."""
        fd = cls._open_locked(path, os.O_RDWR)
        raw = os.pread(fd, 8 * _HEADER, 0)
        head = np.frombuffer(raw, dtype=np.int64) if len(raw) == 8 * _HEADER else np.zeros(_HEADER, np.int64)
        size = os.fstat(fd).st_size
        if head[0] != _MAGIC or size != _size(int(head[1]), int(head[2]), int(head[3])):
            os.close(fd)
            raise ConfigError(f"{path} is no journal of this version of ensemble-driver; remove it to start over")
        if (int(head[1]), int(head[2])) != (natoms, ids):
            os.close(fd)
            raise ConfigError(
                f"{path} was written for {int(head[1])} atoms and {int(head[2])} request ids, this run has "
                f"{natoms} and {ids}: give the i-PI input of the run these rows belong to"
            )
        return cls(path, fd, natoms, ids, int(head[3]))

    # -- what it says ------------------------------------------------------------------
    @property
    def first_step(self) -> int:
        return int(self.header[6])

    @property
    def exact(self) -> bool:
        """False once a row-due structure could not be kept (more pending than the ring holds)."""
        return bool(self.header[7])

    @property
    def peer(self) -> tuple[int, int] | None:
        pid, start = int(self.header[4]), int(self.header[5])
        return (pid, start) if pid else None

    def set_peer(self, pid: int, start: int) -> None:
        self.header[5] = start
        self.header[4] = pid

    def received(self) -> dict[int, int]:
        """Structures received per request id (those with any)."""
        counts = {rid: int(self._records[rid, self._which[rid], 0]) for rid in range(self.ids)}
        return {rid: n for rid, n in counts.items() if n}

    def pending(self) -> list[Pending]:
        """The row-due structures whose rows were not written, by series and step."""
        found = [
            Pending(int(m[1]), int(m[2]), self._cells[k].copy(), self._positions[k].copy(), k)
            for k, m in enumerate(self._meta)
            if m[0] == 1
        ]
        return sorted(found, key=lambda p: (p.series, p.step))

    # -- the run -----------------------------------------------------------------------
    def number(self, rid: int, h: np.ndarray, positions: np.ndarray) -> int:
        """The evaluation number of a structure of request ``rid`` as it came off the wire
        (from 0): the last one again when it is the lost driver's last structure resent."""
        if rid >= self.ids:
            count = self._unfiled.get(rid, 0)
            self._unfiled[rid] = count + 1
            return count
        digest = np.frombuffer(hashlib.blake2b(h.tobytes() + positions.tobytes(), digest_size=16).digest(), np.int64)
        which = int(self._which[rid])
        count = int(self._records[rid, which, 0])
        if rid in self._fresh:
            self._fresh.discard(rid)
            if count and np.array_equal(self._records[rid, which, 1:], digest):
                return count - 1  # resent: the lost driver had it in hand
        spare = 1 - which
        self._records[rid, spare, 1:] = digest
        self._records[rid, spare, 0] = count + 1
        self._which[rid] = spare  # the one store that makes the new pair current
        return count

    def hold(self, series: int, step: int, cell: np.ndarray | None, positions: np.ndarray) -> int | None:
        """Keep a row-due structure until its row is written; its slot, or None if the
        ring is full (the journal is then marked inexact, said once)."""
        free = np.flatnonzero(self._meta[:, 0] == 0)
        if not len(free):
            if self.exact:
                self.header[7] = 0
                log.warning(
                    "%s: more than %d rows in flight; a driver replacing this one could not recompute them all",
                    self.path,
                    self.ring,
                )
            return None
        k = int(free[0])
        self._cells[k] = 0.0 if cell is None else cell
        self._positions[k] = positions
        self._meta[k, 1:3] = series, step
        self._meta[k, 0] = 1  # last: the entry is whole before it counts
        return k

    def release(self, slot: int | None) -> None:
        """The row of a held structure is written (its frame and candidate too)."""
        if slot is not None:
            self._meta[slot, 0] = 0

    def close(self) -> None:
        if self._fd >= 0:
            self.header = self._which = self._records = self._meta = self._cells = self._positions = None  # type: ignore[assignment]
            try:
                self._map.close()
            except BufferError:  # a view still alive elsewhere: the mapping goes with the process
                pass
            os.close(self._fd)
            self._fd = -1

    def remove(self) -> None:
        self.close()
        self.path.unlink(missing_ok=True)
