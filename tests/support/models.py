"""deepmd-kit's own evaluation of the shipped models, the ground truth the driver is
compared with, and its conversions to the other backends' formats."""

from __future__ import annotations

import subprocess
from pathlib import Path

from support.paths import tool


class Reference:
    """In-process DeepPot evaluation, the ground truth the driver is compared with."""

    def __init__(self):
        self._cache: dict[str, object] = {}

    def deeppot(self, path: Path):
        key = str(path)
        if key not in self._cache:
            from deepmd.infer import DeepPot

            self._cache[key] = DeepPot(key)
        return self._cache[key]

    def eval(self, path: Path, atoms, periodic: bool = True):
        """(energy eV, forces (nat,3), virial (3,3) DeePMD layout) of an ASE Atoms."""
        import numpy as np

        dp = self.deeppot(path)
        type_map = dp.get_type_map()
        atype = [type_map.index(s) for s in atoms.get_chemical_symbols()]
        cell = atoms.cell.array.reshape(1, 9) if periodic else None
        e, f, v = dp.eval(atoms.positions.reshape(1, -1), cell, atype)[:3]
        return float(np.ravel(e)[0]), np.asarray(f).reshape(-1, 3), np.asarray(v).reshape(3, 3)


def convert_backend(tmp_path_factory, source: Path, name: str) -> Path:
    """``source`` converted by deepmd-kit's `dp convert-backend` to ``name`` (its suffix
    picks the backend), in a directory of its own."""
    out = tmp_path_factory.mktemp(Path(name).suffix.lstrip(".")) / name
    proc = subprocess.run(
        [tool("dp"), "convert-backend", str(source), str(out)],
        cwd=out.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0 and out.is_file(), proc.stdout[-2000:] + proc.stderr[-3000:]
    return out
