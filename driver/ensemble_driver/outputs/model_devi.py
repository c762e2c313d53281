"""Deviation files, byte for byte as LAMMPS's ``pair_style deepmd ... out_file`` writes them.

Header (written when a file is created)::

    #       step         max_devi_v         min_devi_v         avg_devi_v         max_devi_f         min_devi_f         avg_devi_f

one row per deviation step: ``"%12d"`` for the step, then ``" %18.6e"`` for each value,
and with ``--atomic`` one more ``" %18.6e"`` per atom (the per-atom force deviation, in
the server's atom order). Units eV and eV/Angstrom. (deepmd-kit source/lmp/pair_deepmd.cpp.)

Each row reaches the file in one ``write`` system call on an O_APPEND descriptor: a row is
on disk whole or not at all, whatever happens to the process afterwards.

Path integrals: one file per bead, named by a preset or a pattern with ``{bead}``:

- ``dpgen``: ``model_devi{bead}.out`` with the bead counted from 1 and zero-padded to the
  digits of P, as DP-GEN's LAMMPS PIMD input names them (dpgen/generator/lib/lammps.py:
  ``variable ibead uloop <10^k - 1> pad`` with 10^k the first power of ten >= P, so
  ``model_devi1.out`` .. ``model_devi4.out`` for 4 beads, ``model_devi01.out`` .. for 32);
  DP-GEN reads them back sorted by that number (``_read_model_devi_file`` in
  dpgen/generator/run.py);
- ``dpgen2``: ``model_devi.{bead}.out``, likewise (dpgen2's ``lmp_pimd_model_devi_name``
  filled with the LAMMPS template's padded, 1-based ``${ibead}``); dpgen2 concatenates
  the bead files in lexicographic order, which the padding makes bead order;
- any pattern containing ``{bead}`` (a str.format field: ``{bead:03d}`` works), with the
  bead counted from 0 as i-PI counts it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..deviation import Deviation
from ..errors import ConfigError

COLUMNS = ("max_devi_v", "min_devi_v", "avg_devi_v", "max_devi_f", "min_devi_f", "avg_devi_f")


def header_line(atomic: bool) -> str:
    line = "#" + "%11s" % "step" + "".join("%19s" % c for c in COLUMNS)
    if atomic:
        line += "%19s" % "atm_devi_f(N)"
    return line + "\n"


def format_row(step: int, row: Deviation) -> str:
    line = "%12d" % step + "".join(" %18.6e" % x for x in row.columns())
    if row.atomic is not None:
        line += "".join(" %18.6e" % x for x in row.atomic)
    return line + "\n"


PRESETS = {"dpgen": "model_devi{bead}.out", "dpgen2": "model_devi.{bead}.out"}


def bead_file_names(out_file: str, naming: str, nbeads: int) -> list[str]:
    """The deviation file of each bead 0..nbeads-1.

    One bead: ``out_file`` itself. Presets count beads from 1, zero-padded to the number
    of digits of ``nbeads``, in ``out_file``'s directory; a pattern with ``{bead}`` counts
    from 0 and is used as given.
    """
    if nbeads < 1:
        raise ConfigError(f"--nbeads must be at least 1, got {nbeads}")
    if nbeads == 1:
        return [out_file]
    if naming in PRESETS:
        width = len(str(nbeads))
        directory = os.path.dirname(out_file)
        return [os.path.join(directory, PRESETS[naming].format(bead=str(b + 1).zfill(width))) for b in range(nbeads)]
    if "{bead" not in naming:
        raise ConfigError(f"--bead-files must be dpgen, dpgen2 or a pattern containing {{bead}}, got {naming!r}")
    try:
        names = [naming.format(bead=b) for b in range(nbeads)]
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"--bead-files pattern {naming!r}: {exc}") from None
    if len(set(names)) != nbeads:
        raise ConfigError(f"--bead-files pattern {naming!r} gives the same name to different beads")
    return names


def has_rows(path: str | Path) -> bool:
    """Whether the deviation file on disk holds a row (a line that is no header)."""
    try:
        with open(path) as f:
            return any(line.strip() and not line.startswith("#") for line in f)
    except OSError:
        return False


class DeviationFile:
    """One deviation file, opened for appending rows."""

    def __init__(self, path: str | Path, *, atomic: bool, mode: str):
        self.path = Path(path)
        self.atomic = atomic
        self.rows = 0
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        if mode == "new":
            flags |= os.O_EXCL
        elif mode == "overwrite":
            flags |= os.O_TRUNC
        elif mode != "append":
            raise ValueError(mode)
        try:
            self._fd = os.open(self.path, flags, 0o644)
        except FileExistsError:
            raise ConfigError(
                f"deviation file {self.path} exists; pass --overwrite to replace it, or --append to add to it "
                "(to continue a run: docs/ensemble.md, 'Restarts and replacements')"
            ) from None
        except OSError as exc:
            raise ConfigError(f"cannot open deviation file {self.path}: {exc.strerror}") from None
        if os.fstat(self._fd).st_size == 0:
            self._write(header_line(atomic))

    def _write(self, text: str) -> None:
        data = text.encode("ascii")
        written = os.write(self._fd, data)
        if written != len(data):  # a regular file takes it all unless the disk is full
            raise OSError(f"short write to {self.path}: {written} of {len(data)} bytes (disk full?)")

    def write_row(self, step: int, row: Deviation) -> None:
        self._write(format_row(step, row))
        self.rows += 1

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def has_rows(self) -> bool:
        return has_rows(self.path)


class BeadFiles:
    """The deviation files of all beads; rows for request ids >= nbeads are dropped."""

    def __init__(self, names: Iterable[str], *, atomic: bool, mode: str, step_offset: int = 0):
        self.names = list(names)
        self.mode = mode
        self.step_offset = step_offset
        self.files: list[DeviationFile] = []
        try:
            for name in self.names:
                parent = Path(name).parent
                if not parent.is_dir():
                    raise ConfigError(f"deviation file {name}: directory {parent} does not exist")
                self.files.append(DeviationFile(name, atomic=atomic, mode=mode))
        except BaseException:
            self.close()
            if mode == "new":  # leave no half set of files behind
                for f in self.files:
                    f.path.unlink(missing_ok=True)
            raise

    def write(self, rid: int, step: int, row: Deviation) -> bool:
        if rid >= len(self.files):
            return False
        self.files[rid].write_row(step + self.step_offset, row)
        return True

    def close(self) -> None:
        for f in self.files:
            f.close()

    def discard_unused(self) -> None:
        """Close; if no file of the set holds a row (the run failed before its first
        deviation step, whether it made the files or continued them), remove them all:
        no header-only file is left. Once any bead has a row, the whole set stays, as
        DP-GEN expects one file per bead."""
        self.close()
        if not any(f.rows or f.has_rows() for f in self.files):
            for f in self.files:
                f.path.unlink(missing_ok=True)
