"""The template structure: the atom labels (and whether the system is periodic).

The i-PI protocol carries positions but no element names, so the driver reads them,
once, from a template file in the server's atom order: any file ASE reads, or an i-PI
xyz file whose comment line carries ``# CELL(abcABC): ...`` (or ``CELL(H)``/``CELL(GENH)``),
which ASE does not understand and this module reads itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

# The cell tags i-PI writes and reads in xyz comments (ipi/utils/io/backends/io_xyz.py).
_IPI_CELL = re.compile(r"CELL[\(\[\{](abcABC|H|GENH)[\)\]\}]:")


@dataclass(frozen=True)
class Template:
    path: str
    labels: tuple[str, ...]
    periodic: bool

    @property
    def natoms(self) -> int:
        return len(self.labels)


def _read_ipi_xyz(path: Path, lines: list[str]) -> Template:
    try:
        nat = int(lines[0].split()[0])
    except (IndexError, ValueError):
        raise ConfigError(f"template {path}: the first line must be the number of atoms") from None
    body = lines[2 : 2 + nat]
    if nat <= 0 or len(body) < nat:
        raise ConfigError(f"template {path}: announces {nat} atoms but has {len(body)} atom lines")
    labels = []
    for lineno, line in enumerate(body, start=3):
        fields = line.split()
        if len(fields) < 4:
            raise ConfigError(f"template {path}, line {lineno}: expected 'label x y z', got {line.strip()!r}")
        labels.append(fields[0])
    return Template(str(path), tuple(labels), periodic=True)


def read_template(path: str | Path) -> Template:
    """Read the first frame of ``path``. Raises ConfigError with the file name on failure."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"template {path}: no such file")
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            head = [handle.readline() for _ in range(2)]
    except OSError as exc:
        raise ConfigError(f"template {path}: {exc.strerror}") from None
    if len(head) == 2 and _IPI_CELL.search(head[1]):
        with open(path, encoding="utf-8", errors="replace") as handle:
            return _read_ipi_xyz(path, handle.read().splitlines())

    import ase.io  # only here: ASE's io pulls in a lot

    try:
        atoms = ase.io.read(path, index=0)
    except Exception as exc:  # ASE raises many types; each means "cannot read this file"
        raise ConfigError(f"template {path}: ASE cannot read it ({type(exc).__name__}: {exc})") from None
    if len(atoms) == 0:
        raise ConfigError(f"template {path}: contains no atoms")
    periodic = bool(atoms.pbc.any()) and atoms.cell.rank == 3
    return Template(str(path), tuple(atoms.get_chemical_symbols()), periodic=periodic)
