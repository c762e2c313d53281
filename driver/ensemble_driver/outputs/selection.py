"""Which structures to label next: DP-GEN's trust levels, the candidates' files, the counts.

Classification of one deviation row, as DP-GEN's ``_select_by_model_devi_standard``
(dpgen/generator/run.py) does it, in its order:

1. candidate if ``f_lo <= max_devi_f < f_hi`` or ``v_lo <= max_devi_v < v_hi``;
2. otherwise failed if ``max_devi_f >= f_hi`` or ``max_devi_v >= v_hi``;
3. otherwise accurate (both below their low level).

So a row with its force deviation in the candidate band is a candidate even when its
virial deviation is past ``v_hi``. Without virial levels the virial plays no part (DP-GEN's
default levels are 1e10).

Candidate structures are appended, per bead, to an extended XYZ file that ASE
(``ase.io.read(..., index=":")``) and dpdata (``dpdata.MultiSystems.from_file(f,
fmt="ase/structure", ase_fmt="extxyz", labeled=False)``) read: element symbols, positions in Angstrom as the server sent them (17 significant
digits, so they read back bit for bit), the cell, and in each frame's comment line the
step, the bead (0-based, as i-PI counts), the class and the six deviation values.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..deviation import Deviation
from ..errors import ConfigError
from .model_devi import COLUMNS

ACCURATE, CANDIDATE, FAILED = "accurate", "candidate", "failed"
CLASSES = (ACCURATE, CANDIDATE, FAILED)


@dataclass(frozen=True)
class TrustLevels:
    """DP-GEN's model_devi_f_trust_lo/hi and model_devi_v_trust_lo/hi (eV/Angstrom, eV
    per atom). Virial levels None: the virial is not used."""

    f_lo: float
    f_hi: float
    v_lo: float | None = None
    v_hi: float | None = None

    def __post_init__(self):
        for name, lo, hi in (
            ("--trust-lo/--trust-hi", self.f_lo, self.f_hi),
            ("--trust-lo-v/--trust-hi-v", self.v_lo, self.v_hi),
        ):
            if (lo is None) != (hi is None):
                raise ConfigError(f"{name}: give both levels or neither")
            if lo is None:
                continue
            if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0 or hi < lo:
                raise ConfigError(f"{name}: need 0 <= low <= high, got {lo} and {hi}")

    def classify(self, max_devi_f: float, max_devi_v: float) -> str:
        v_lo = math.inf if self.v_lo is None else self.v_lo
        v_hi = math.inf if self.v_hi is None else self.v_hi
        if self.f_lo <= max_devi_f < self.f_hi or v_lo <= max_devi_v < v_hi:
            return CANDIDATE
        if max_devi_f >= self.f_hi or max_devi_v >= v_hi:
            return FAILED
        return ACCURATE

    def describe(self) -> str:
        text = f"force {self.f_lo:g}-{self.f_hi:g} eV/A"
        if self.v_lo is not None:
            text += f", virial {self.v_lo:g}-{self.v_hi:g} eV/atom"
        return text

    def as_dict(self) -> dict:
        return {"f_lo": self.f_lo, "f_hi": self.f_hi, "v_lo": self.v_lo, "v_hi": self.v_hi}


def trust_levels(lo: float | None, hi: float | None, lo_v: float | None, hi_v: float | None) -> TrustLevels | None:
    """The trust levels of ``--trust-lo``, ``--trust-hi``, ``--trust-lo-v`` and
    ``--trust-hi-v`` (run and devi alike), or None when candidates are not selected."""
    if lo is None and hi is None:
        if lo_v is not None or hi_v is not None:
            raise ConfigError("--trust-lo-v/--trust-hi-v need --trust-lo and --trust-hi as well")
        return None
    return TrustLevels(lo, hi, lo_v, hi_v)


def extxyz_frame(
    symbols: Sequence[str], positions: np.ndarray, cell: np.ndarray | None, info: dict, devi_f=None
) -> str:
    """One extended-XYZ frame: ``Lattice`` (rows = lattice vectors), ``Properties``,
    ``pbc`` and ``info`` as key=value pairs; numbers with 17 significant digits; with
    ``devi_f``, each atom's force deviation as the per-atom array ``devi_f`` (ASE:
    ``atoms.arrays["devi_f"]``; OVITO colours by it)."""
    parts = []
    if cell is not None:
        parts.append('Lattice="' + " ".join(f"{x:.17g}" for x in np.asarray(cell).ravel()) + '"')
    parts.append("Properties=species:S:1:pos:R:3" + (":devi_f:R:1" if devi_f is not None else ""))
    for key, value in info.items():
        if isinstance(value, float):
            value = f"{value:.17g}"
        parts.append(f"{key}={value}")
    parts.append('pbc="T T T"' if cell is not None else 'pbc="F F F"')
    lines = [str(len(symbols)), " ".join(parts)]
    for k, (s, p) in enumerate(zip(symbols, positions)):
        extra = "" if devi_f is None else f" {devi_f[k]:.17g}"
        lines.append(f"{s:<2s} {p[0]:.17g} {p[1]:.17g} {p[2]:.17g}{extra}")
    return "\n".join(lines) + "\n"


class Selection:
    """Classifies every deviation row, appends candidates to per-bead extxyz files (opened
    when the first candidate of a bead comes), counts the classes per bead, and writes
    the counts as JSON at the end."""

    def __init__(
        self,
        levels: TrustLevels,
        candidate_files: Sequence[str],
        summary_file: str,
        *,
        mode: str = "new",
        step_offset: int = 0,
        counts: Sequence[dict[str, int]] | None = None,
    ):
        """``mode`` as the deviation files': "new" refuses existing candidate files,
        "overwrite" removes them now (a bead without candidates this run keeps no old
        file), "append" adds to them. ``counts``: each bead's counts to start from (the
        rows kept by --resume)."""
        self.levels = levels
        self.symbols: list[str] = []
        self.names = list(candidate_files)
        self.summary_file = summary_file
        self.step_offset = step_offset
        self.counts = (
            [dict(c) for c in counts] if counts is not None else [dict.fromkeys(CLASSES, 0) for _ in self.names]
        )
        # --out-freq-near: the rows each bead got beyond --out-freq's (the bead steps count them)
        self.extra_rows: dict[int, int] | None = None
        self._fds: dict[int, int] = {}
        self._flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        for name in self.names:
            if mode == "new" and os.path.exists(name):
                raise ConfigError(f"candidate file {name} exists; pass --overwrite to replace it, or --append")
            if mode == "overwrite":
                Path(name).unlink(missing_ok=True)

    def add(self, bead: int, step: int, row: Deviation, positions: np.ndarray, cell: np.ndarray | None) -> str:
        """Classify one row (of a bead < the number of files); a candidate's structure is
        appended to its bead's file in one write. Returns the class."""
        kind = self.levels.classify(row.max_devi_f, row.max_devi_v)
        self.counts[bead][kind] += 1
        if kind == CANDIDATE:
            info = {"step": step + self.step_offset, "bead": bead, "devi_class": kind}
            info.update(zip(COLUMNS, map(float, row.columns())))
            data = extxyz_frame(self.symbols, positions, cell, info, row.per_atom).encode("ascii")
            fd = self._fds.get(bead)
            if fd is None:
                try:
                    fd = self._fds[bead] = os.open(self.names[bead], self._flags, 0o644)
                except OSError as exc:
                    raise ConfigError(f"cannot open candidate file {self.names[bead]}: {exc.strerror}") from None
            if os.write(fd, data) != len(data):
                raise OSError(f"short write to {self.names[bead]} (disk full?)")
        return kind

    def summary(self) -> dict:
        total = dict.fromkeys(CLASSES, 0)
        for c in self.counts:
            for k in CLASSES:
                total[k] += c[k]
        summary = {
            "trust_levels": self.levels.as_dict(),
            "beads": [
                {"bead": b, **c, "candidate_file": self.names[b] if c[CANDIDATE] else None}
                for b, c in enumerate(self.counts)
            ],
            "total": total,
        }
        if self.extra_rows is not None:
            for b, bead in enumerate(summary["beads"]):
                bead["extra_rows_out_freq_near"] = self.extra_rows.get(b, 0)
            total["extra_rows_out_freq_near"] = sum(self.extra_rows.get(b, 0) for b in range(len(self.counts)))
        return summary

    def report(self) -> str:
        """The counts as a small table: one line per bead, and the total."""
        s = self.summary()
        lines = [f"{'bead':>6s} {'accurate':>9s} {'candidate':>9s} {'failed':>9s}"]
        rows = s["beads"] if len(s["beads"]) > 1 else []
        for b in rows:
            lines.append(f"{b['bead']:>6d} {b[ACCURATE]:>9d} {b[CANDIDATE]:>9d} {b[FAILED]:>9d}")
        t = s["total"]
        lines.append(f"{'all':>6s} {t[ACCURATE]:>9d} {t[CANDIDATE]:>9d} {t[FAILED]:>9d}")
        if "extra_rows_out_freq_near" in t:
            lines.append(f"{t['extra_rows_out_freq_near']} of these rows came from --out-freq-near")
        return "\n".join(lines)

    @property
    def rows(self) -> int:
        """How many rows were classified."""
        return sum(sum(c.values()) for c in self.counts)

    def close(self) -> None:
        """Close the candidate files and write the JSON summary (whole, or not at all);
        a run that classified no row (it stopped before its first) writes none."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
        if not self.rows:
            return
        tmp = Path(self.summary_file + ".tmp")
        tmp.write_text(json.dumps(self.summary(), indent=1) + "\n")
        tmp.replace(self.summary_file)


def candidate_file_names(deviation_files: Sequence[str]) -> list[str]:
    """Candidate files beside the deviation files: ``model_devi`` in each name becomes
    ``candidates`` and the suffix ``.xyz`` (``model_devi1.out`` -> ``candidates1.xyz``);
    a name without ``model_devi`` gets ``.candidates.xyz`` in place of its suffix."""
    names = []
    for name in deviation_files:
        path = Path(name)
        if "model_devi" in path.name:
            new = path.with_name(path.name.replace("model_devi", "candidates", 1)).with_suffix(".xyz")
        else:
            new = path.with_suffix(".candidates.xyz")
        names.append(str(new))
    return names


def summary_file_name(deviation_files: Sequence[str]) -> str:
    """``devi_summary.json`` in the directory of the deviation files (not matching DP-GEN's
    ``model_devi*.out`` glob)."""
    return str(Path(deviation_files[0]).parent / "devi_summary.json")
