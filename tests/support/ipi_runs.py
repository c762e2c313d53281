"""What i-PI's binary trajectories say of an ensemble run: the output that writes every
bead's positions at full precision, its frames, each bead's deviation file and the rows
deepmd-kit makes of those positions (shared by tests/peers/test_ensemble.py and the other
peer tests that run the ensemble under i-PI)."""

from __future__ import annotations

import numpy as np

from ensemble_driver.deviation import Deviation
from ensemble_driver.outputs.model_devi import format_row
from ensemble_driver.wire import units

#: the run of tests/peers/test_ensemble.py, expected_rows' defaults
STEPS = 7
OUT_FREQ = 3  # rows at steps 0, 3, 6; none at 7
#: every bead's positions, every step, as i-PI sent them (float64, Bohr): read_ipi_binary's input
BIN_OUTPUT = "<trajectory filename='bin' stride='1' format='bin'> positions </trajectory>"


def read_ipi_binary(path, nframes: int):
    """Frames of an i-PI format='bin' trajectory: [(step, h (3x3, columns, Bohr), q (3N,))].

    Each frame: h float64[9], int64 nat, float64[3 nat], int64 len, names (UTF-32),
    then a title of unannounced length (i-PI ipi/utils/io/backends/io_binary.py); the
    frames of one file have the same size."""
    raw = open(path, "rb").read()
    assert len(raw) % nframes == 0, (len(raw), nframes)
    size = len(raw) // nframes
    frames = []
    for k in range(nframes):
        frame = raw[k * size : (k + 1) * size]
        h = np.frombuffer(frame, np.float64, 9).reshape(3, 3)
        nat = int(np.frombuffer(frame, np.int64, 1, offset=72)[0])
        q = np.frombuffer(frame, np.float64, 3 * nat, offset=80)
        off = 80 + 24 * nat
        nlen = int(np.frombuffer(frame, np.int64, 1, offset=off)[0])
        title = frame[off + 8 + 4 * nlen :].decode("utf-32-le")
        frames.append((int(title.split()[1]), h, q))
    return frames


def expected_rows(
    run,
    model_paths,
    reference,
    symbols,
    *,
    steps=STEPS,
    out_freq=OUT_FREQ,
    relative=None,
    relative_v=None,
    atomic=False,
) -> dict[int, list[str]]:
    """Every bead's rows recomputed from i-PI's binary positions: forces with deepmd's
    calc_model_devi_f; the virial with calc_model_devi_v, or, with relative_v, with the
    LAMMPS per-component definition d_ab / (|<W_ab>|/N + nu) written out here."""
    from deepmd.infer.model_devi import calc_model_devi_f, calc_model_devi_v

    rows = {}
    for bead in range(run.nbeads):
        rows[bead] = []
        for step, h, q in read_ipi_binary(run.workdir / f"{run.prefix}.bin_{bead}.bin", steps + 1):
            if step % out_freq:
                continue
            # exactly the driver's conversion of what it received
            cell, positions = units.cell_from_wire(h), units.positions_from_wire(q)
            forces, virials = [], []
            for path in model_paths:
                dp = reference.deeppot(path)
                tmap = dp.get_type_map()
                atype = [tmap.index(s) for s in symbols]
                _, f, v = dp.eval(positions.reshape(1, -1), cell.reshape(1, 9), atype)[:3]
                forces.append(np.asarray(f).reshape(-1, 3))
                virials.append(np.asarray(v).reshape(9))
            fmax, fmin, favg, fatom = calc_model_devi_f(np.array(forces)[:, None], relative=relative, atomic=True)
            per_atom = np.array(virials) / len(positions)
            if relative_v is None:
                vmax, vmin, vavg = (x[0] for x in calc_model_devi_v(per_atom[:, None]))
            else:
                d = per_atom.std(axis=0) / (np.abs(per_atom.mean(axis=0)) + relative_v)
                vmax, vmin, vavg = d.max(), d.min(), np.sqrt(np.mean(d**2))
            row = Deviation(vmax, vmin, vavg, fmax[0], fmin[0], favg[0], atomic=fatom[0] if atomic else None)
            rows[bead].append(format_row(step, row))
    return rows


def bead_file(workdir, bead: int):
    return workdir / f"model_devi{bead + 1}.out"  # --bead-files dpgen, P < 10
