"""Make the small Cu-Au models with frame and atomic parameters in ``examples/models/``.

``fparam0.pth``, ``fparam1.pth``: ``numb_fparam: 1`` (one frame parameter, like an
electronic temperature); ``aparam0.pth``, ``aparam1.pth``: ``numb_aparam: 1`` (one value
per atom). Each pair differs only in its random seed, so that each pair is an ensemble.
They exist to test ``--fparam``, ``--aparam`` and ``--aparam-array``; they are valid
models, not good ones (a few hundred training steps).

The reference data are the EMT frames of ``make_models.py`` (same alloy, same MD), with
made-up parameters that the labels do not depend on: the frame parameter is the
temperature of the MD run in units of 1000 K, the atomic parameter a random number in
[0, 1) per atom and frame. What matters to the tests is only that the trained networks
take the parameters as inputs (deepmd-kit's fitting net concatenates them to the
descriptor), so that forces change with them.

deepmd-kit reads the parameters of a system from ``set.*/fparam.npy`` (nframes,
numb_fparam) and ``set.*/aparam.npy`` (nframes, natoms * numb_aparam), atoms in the
order of ``type.raw`` (deepmd-kit docs, "Data": doc/data/system.md).

Run from anywhere (449 s, 250 steps per model, on 2 CPU cores shared with other work, measured
2026-12-02):

    python examples/models/make_param_models.py            # writes examples/models/{f,a}param{0,1}.pth
    python examples/models/make_param_models.py --steps 50 --out /tmp/quick
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from make_models import (  # noqa: E402  (the shipped models' own recipe, reused)
    TYPE_MAP_DATA,
    label_frames,
    run,
    training_input,
    write_deepmd_npy,
)

SEEDS = [11, 12]
TEMPERATURES = (300.0, 600.0, 900.0)  # the order label_frames runs them in
STRAINS = 3  # MD runs per temperature in label_frames


def attach_parameters(frames: list, n_per_run: int, seed: int) -> None:
    """Give every frame its frame parameter (run temperature / 1000 K) and atomic
    parameters (uniform in [0, 1), one per atom), in ``info``/``arrays``."""
    rng = np.random.default_rng(seed)
    for k, frame in enumerate(frames):
        temperature = TEMPERATURES[k // (n_per_run * STRAINS)]
        frame.info["fparam"] = np.array([temperature / 1000.0])
        frame.arrays["aparam"] = rng.uniform(size=len(frame))


def write_system(frames: list, directory: Path) -> None:
    """The system as make_models.py writes it, plus fparam.npy and aparam.npy with the
    atoms sorted the same way (write_deepmd_npy sorts them by type, stably)."""
    write_deepmd_npy(frames, directory)
    orders = [np.argsort([TYPE_MAP_DATA.index(s) for s in f.get_chemical_symbols()], kind="stable") for f in frames]
    setdir = directory / "set.000"
    np.save(setdir / "fparam.npy", np.array([f.info["fparam"] for f in frames]))
    np.save(setdir / "aparam.npy", np.array([f.arrays["aparam"][o] for f, o in zip(frames, orders)]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE, help="where the models go (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=250, help="training steps per model (default: %(default)s)")
    parser.add_argument(
        "--frames-per-run", type=int, default=10, help="frames per (T, strain) MD run (default: %(default)s)"
    )
    args = parser.parse_args(argv)

    dp = shutil.which("dp")
    if dp is None:
        sys.exit("make_param_models.py: the `dp` command of deepmd-kit is not on PATH")
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="ensemble_driver_param_models_"))
    frames = label_frames(args.frames_per_run, seed=2027)
    attach_parameters(frames, args.frames_per_run, seed=5)
    valid = set(range(0, len(frames), 10))
    write_system([f for i, f in enumerate(frames) if i not in valid], work / "data" / "train")
    write_system([f for i, f in enumerate(frames) if i in valid], work / "data" / "valid")
    print(f"labelled {len(frames)} EMT frames in {time.perf_counter() - t0:.0f} s", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    for kind in ("fparam", "aparam"):
        for k, seed in enumerate(SEEDS):
            name = f"{kind}{k}"
            tdir = work / name
            tdir.mkdir()
            spec = training_input(work / "data" / "train", work / "data" / "valid", TYPE_MAP_DATA, seed, args.steps)
            spec["model"]["fitting_net"][f"numb_{kind}"] = 1  # the model's one parameter
            (tdir / "input.json").write_text(json.dumps(spec, indent=2))
            started = time.perf_counter()
            run([dp, "--pt", "train", "input.json", "--skip-neighbor-stat"], tdir)
            run([dp, "--pt", "freeze", "-o", f"{name}.pth"], tdir)
            shutil.copy(tdir / f"{name}.pth", args.out / f"{name}.pth")
            print(f"{name}: {time.perf_counter() - started:.0f} s", flush=True)
    shutil.rmtree(work)
    print(f"wrote {args.out}/fparam0.pth .. aparam1.pth in {time.perf_counter() - t0:.0f} s total")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    raise SystemExit(main())
