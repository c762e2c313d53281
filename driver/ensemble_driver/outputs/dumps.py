"""Trajectory frames beside the deviation rows: LAMMPS text dumps, laid out as DP-GEN's and
dpgen2's own LAMMPS inputs make them (``--traj-files``), so that a directory the driver
wrote is a task directory their readers take unchanged.

Each frame is the structure of one deviation row, written just before that row (one
``write`` each), so every bead's k-th row and k-th frame describe the same structure and
a row never lands without its frame. The layouts:

- ``dpgen`` (DP-GEN 0.14, ``dpgen/generator/lib/lammps.py``: ``dump 1 all custom
  ${DUMP_FREQ} traj/*.lammpstrj id type x y z fx fy fz``, with ``${ibead}`` appended for
  path integrals): one file per frame, ``traj/<step>.lammpstrj``, or
  ``traj/<step>.lammpstrj<bead>`` with the bead counted from 1 and zero-padded to the
  digits of P, as ``_read_model_devi_file`` in ``dpgen/generator/run.py`` globs them;
- ``dpgen2`` (dpgen2 0.1, ``dpgen2/constants.py``: ``traj.dump``, ``traj.%s.dump`` for
  path integrals, paired with ``model_devi.out`` / ``model_devi.%s.out``): every frame of
  a bead appended to one file, ``traj.dump``, or ``traj.<bead>.dump`` named like the
  ``--bead-files dpgen2`` deviation files;
- a pattern with ``{bead}`` (from 0; not needed for one bead) and optionally ``{step}``:
  with ``{step}`` one file per frame, otherwise each bead's frames appended to one file.

The files go in the directory of the deviation files (``--out-file``'s); the types are
model 0's type indices counted from 1; the box is LAMMPS's restricted triclinic form (see
:func:`lammps_box`), the positions as the server sent them, expressed in that box's frame.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError

PRESETS = ("dpgen", "dpgen2")


def lammps_box(cell: np.ndarray) -> np.ndarray:
    """The lower-triangular cell (rows a, b, c; a along x, b in the xy plane) with the
    same lengths and angles: LAMMPS's restricted triclinic box (LAMMPS manual, "Triclinic
    (non-orthogonal) simulation boxes": ax = |A|, bx = B.A/|A|, by = |A x B|/|A|,
    cx = C.A/|A|, cy = (B.C - bx cx)/by, cz = sqrt(|C|^2 - cx^2 - cy^2))."""
    a, b, c = cell
    ax = np.linalg.norm(a)
    bx = b @ a / ax
    by = np.linalg.norm(np.cross(a, b)) / ax
    cx = c @ a / ax
    cy = (b @ c - bx * cx) / by
    cz = np.sqrt(max(c @ c - cx * cx - cy * cy, 0.0))
    return np.array([[ax, 0.0, 0.0], [bx, by, 0.0], [cx, cy, cz]])


def lammps_frame(
    step: int,
    positions: np.ndarray,
    cell: np.ndarray | None,
    types: np.ndarray,
    forces: np.ndarray,
    devi_f: np.ndarray | None = None,
) -> str:
    """One frame of ``dump custom ... id type x y z fx fy fz`` (LAMMPS's ``dump`` manual:
    the box bounds of a triclinic box are its bounding box, with the tilt factors); with
    ``devi_f``, each atom's force deviation in a last column of that name."""
    if cell is None:  # not periodic: a box around the atoms, with fixed boundaries
        lo, hi = positions.min(axis=0) - 1.0, positions.max(axis=0) + 1.0
        xyz, rotation = positions, None
        bounds = "ff ff ff"
        lines = [f"{lo[k]:.10f} {hi[k]:.10f}" for k in range(3)]
    else:
        box = lammps_box(cell)
        if np.allclose(cell, np.tril(cell), rtol=0, atol=0) and np.all(np.diag(cell) > 0):
            xyz, rotation = positions, None  # already LAMMPS's orientation: positions as sent
        else:
            rotation = np.linalg.solve(cell, box)  # fractional coordinates kept
            xyz = positions @ rotation
        xy, xz, yz = box[1, 0], box[2, 0], box[2, 1]
        tilted = bool(xy or xz or yz)
        xlo_b = min(0.0, xy, xz, xy + xz)
        xhi_b = box[0, 0] + max(0.0, xy, xz, xy + xz)
        ylo_b, yhi_b = min(0.0, yz), box[1, 1] + max(0.0, yz)
        extents = [(xlo_b, xhi_b), (ylo_b, yhi_b), (0.0, box[2, 2])]
        bounds = "xy xz yz pp pp pp" if tilted else "pp pp pp"
        tilt = (xy, xz, yz)
        lines = [f"{lo:.10f} {hi:.10f}" + (f" {tilt[k]:.10f}" if tilted else "") for k, (lo, hi) in enumerate(extents)]
    fxyz = forces if rotation is None else forces @ rotation
    out = [
        "ITEM: TIMESTEP",
        str(step),
        "ITEM: NUMBER OF ATOMS",
        str(len(positions)),
        f"ITEM: BOX BOUNDS {bounds}",
        *lines,
        "ITEM: ATOMS id type x y z fx fy fz" + (" devi_f" if devi_f is not None else ""),
    ]
    out.extend(
        f"{i + 1} {int(t) + 1} {p[0]:.10f} {p[1]:.10f} {p[2]:.10f} {f[0]:.10g} {f[1]:.10g} {f[2]:.10g}"
        + ("" if devi_f is None else f" {devi_f[i]:.10g}")
        for i, (t, p, f) in enumerate(zip(types, xyz, fxyz))
    )
    return "\n".join(out) + "\n"


@dataclass(frozen=True)
class TrajLayout:
    """Where each bead's frames go: ``pattern`` formatted with ``bead`` (and ``step``)."""

    patterns: tuple[str, ...]  # one per bead
    per_frame: bool  # one file per frame (the pattern has {step})


def traj_layout(naming: str, out_file: str, nbeads: int) -> TrajLayout:
    """The files of ``--traj-files NAMING`` for ``nbeads`` beads, in ``out_file``'s directory."""
    directory = os.path.dirname(out_file)
    width = len(str(nbeads))
    if naming == "dpgen":
        suffix = [""] if nbeads == 1 else [str(b + 1).zfill(width) for b in range(nbeads)]
        return TrajLayout(tuple(os.path.join(directory, "traj", "{step}.lammpstrj" + s) for s in suffix), True)
    if naming == "dpgen2":
        if nbeads == 1:
            return TrajLayout((os.path.join(directory, "traj.dump"),), False)
        names = [os.path.join(directory, f"traj.{str(b + 1).zfill(width)}.dump") for b in range(nbeads)]
        return TrajLayout(tuple(names), False)
    if nbeads > 1 and "{bead" not in naming:
        raise ConfigError(
            f"--traj-files pattern {naming!r} has no {{bead}}: with --nbeads {nbeads} every bead needs its own "
            "files (or use dpgen or dpgen2)"
        )
    try:
        patterns = tuple(naming.format(bead=b, step="{step}") for b in range(nbeads))
        [p.format(step=0) for p in patterns]
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"--traj-files pattern {naming!r}: {exc} (it may use {{bead}} and {{step}})") from None
    if len(set(patterns)) != nbeads:
        raise ConfigError(f"--traj-files pattern {naming!r} gives the same name to different beads")
    return TrajLayout(patterns, "{step}" in patterns[0])


class TrajFiles:
    """Every bead's trajectory files; ``write`` appends one frame (one ``write`` call)."""

    def __init__(self, layout: TrajLayout, *, mode: str, step_offset: int = 0):
        self.layout = layout
        self.mode = mode
        self.step_offset = step_offset
        self.frames = [0] * len(layout.patterns)
        self._fds: dict[int, int] = {}
        self._latest: dict[int, str] = {}  # per bead, the per-frame file written last (an optimiser repeats a step)
        for pattern in layout.patterns:
            parent = Path(pattern.format(step=0)).parent
            if layout.per_frame and parent.name == "traj" and not parent.exists():
                parent.mkdir()  # DP-GEN's task directories have it: LAMMPS needs it made
            if not parent.is_dir():
                raise ConfigError(f"trajectory file {pattern}: directory {parent} does not exist")
            if mode == "new":
                existing = sorted(parent.glob(Path(pattern).name.replace("{step}", "*")))
                if existing:
                    raise ConfigError(
                        f"trajectory file {existing[0]} exists; pass --overwrite to replace it, or --append to add to it "
                        "(to continue a run: docs/ensemble.md, 'Restarts and replacements')"
                    )

    def _flags(self, again: bool = False) -> int:
        if self.layout.per_frame:  # a file per frame: written whole; a step again (``again``) replaces it
            return os.O_WRONLY | os.O_CREAT | os.O_TRUNC | (os.O_EXCL if self.mode == "new" and not again else 0)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        if self.mode == "new":
            flags |= os.O_EXCL
        elif self.mode == "overwrite":
            flags |= os.O_TRUNC
        return flags

    def write(self, bead: int, step: int, frame_of) -> bool:
        """Write bead ``bead``'s frame of ``step`` (``frame_of(labelled_step)`` makes
        the text); False for a bead without files."""
        if bead >= len(self.layout.patterns):
            return False
        labelled = step + self.step_offset
        pattern = self.layout.patterns[bead]
        data = frame_of(labelled).encode("ascii")
        if self.layout.per_frame:
            path = pattern.format(step=labelled)
            # an optimiser's line search repeats a step: its last structure stays, as DP-GEN keeps its last row
            fd = os.open(path, self._flags(again=self._latest.get(bead) == path), 0o644)
            self._latest[bead] = path
            try:
                _write_all(fd, data, path)
            finally:
                os.close(fd)
        else:
            fd = self._fds.get(bead)
            if fd is None:
                fd = self._fds[bead] = os.open(pattern, self._flags(), 0o644)
            _write_all(fd, data, pattern)
        self.frames[bead] += 1
        return True

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


def _write_all(fd: int, data: bytes, path: str) -> None:
    written = os.write(fd, data)
    if written != len(data):
        raise OSError(f"short write to {path}: {written} of {len(data)} bytes (disk full?)")
