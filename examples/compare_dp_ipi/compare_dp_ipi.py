"""Run one i-PI input twice, with deepmd-kit's dp_ipi and with ensemble-driver, on the same
TensorFlow model, and compare the potential energies step by step.

dp_ipi is deepmd-kit's C++ i-PI client. It runs here only with the TensorFlow backend
(its PyTorch plugin cannot load beside torch 2.13), so this script runs in a separate
environment, kept out of CI (about 2 GB):

    python3.11 -m venv .venv-tf
    .venv-tf/bin/pip install "deepmd-kit[cpu]==3.2.0" ipi==3.3.1
    .venv-tf/bin/pip install -e .
    .venv-tf/bin/python examples/compare_dp_ipi/compare_dp_ipi.py

Without ``--model`` it trains a small TensorFlow model first (``dp --tf train`` on the
EMT data of examples/models/make_models.py, then ``dp --tf freeze``; about 2 minutes).
Both clients read the same dp_ipi JSON file: ensemble-driver through ``--config``.

i-PI runs ``ipi_inputs/nvt.xml`` with the same seed both times, so the two trajectories
are the same as long as the forces are; they differ only by the unit constants
(dp_ipi: Bohr 0.52917721 A, Ha 27.21138602 eV; ensemble-driver: CODATA 2014 as ASE),
~1e-8 relative, which MD amplifies slowly. The script prints the largest relative
difference of the potential energy per step and exits 1 if it exceeds --tolerance.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples" / "models"))

from ensemble_driver.demo.command import property_columns  # noqa: E402
from ensemble_driver.demo.inputs import SocketSettings, prepare_input  # noqa: E402
from ensemble_driver.demo.launch import ProcessGroup  # noqa: E402

BIN = Path(sys.executable).parent


def train_tf_model(workdir: Path, steps: int) -> Path:
    import make_models as mm

    frames = mm.label_frames(20, seed=2026)
    mm.write_deepmd_npy(frames[::2], workdir / "data" / "train")
    mm.write_deepmd_npy(frames[1::2], workdir / "data" / "valid")
    spec = mm.training_input(workdir / "data" / "train", workdir / "data" / "valid", ["Cu", "Au"], 1, steps)
    (workdir / "input.json").write_text(json.dumps(spec, indent=2))
    subprocess.run(
        [str(BIN / "dp"), "--tf", "train", "input.json"],
        cwd=workdir,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    subprocess.run(
        [str(BIN / "dp"), "--tf", "freeze", "-o", "model.pb"],
        cwd=workdir,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return workdir / "model.pb"


def run_once(workdir: Path, client: str, config: dict, steps: int, timeout: float) -> tuple[np.ndarray, float]:
    """One i-PI NVT run with `client` ('dp_ipi' or 'ensemble-driver'); (potentials, seconds)."""
    workdir.mkdir(parents=True, exist_ok=True)
    prepare_input(
        ROOT / "ipi_inputs" / "nvt.xml",
        workdir / "input.xml",
        socket=SocketSettings(address=config["host"]),
        steps=steps,
        prefix="sim",
        floatformat="%.16e",
        outputs=["<properties stride='1' filename='out'> [ step, potential{electronvolt} ] </properties>"],
    )
    (workdir / "dp_ipi.json").write_text(json.dumps(config, indent=2))
    if client == "dp_ipi":
        argv, ok = [str(BIN / "dp_ipi"), "dp_ipi.json"], frozenset({0, 1})  # dp_ipi exits 1 on EXIT
    else:
        argv, ok = [str(BIN / "ensemble-driver"), "run", "--config", "dp_ipi.json"], frozenset({0})
    Path("/tmp/ipi_" + config["host"]).unlink(missing_ok=True)
    start = time.perf_counter()
    with ProcessGroup(workdir / "logs") as group:
        group.start("i-pi", [str(BIN / "i-pi"), "input.xml"], cwd=workdir)
        group.start(client, argv, cwd=workdir, ok_status=ok)
        group.wait(timeout)
    elapsed = time.perf_counter() - start
    out = workdir / "sim.out"
    props = np.atleast_2d(np.loadtxt(out))
    return props[:, property_columns(out)["potential"]], elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="a TensorFlow .pb model of Cu/Au (default: train one)")
    parser.add_argument("--steps", type=int, default=50, help="i-PI steps (default: %(default)s)")
    parser.add_argument("--train-steps", type=int, default=2000, help="training steps without --model")
    parser.add_argument("--workdir", type=Path, default=Path("compare_dp_ipi_output"))
    parser.add_argument("--tolerance", type=float, default=1e-6, help="largest accepted relative difference")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    if not (BIN / "dp_ipi").exists():
        sys.exit(f"{BIN / 'dp_ipi'} not found: run this with the TensorFlow environment's python (see --help)")
    workdir = args.workdir.resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    model = args.model.resolve() if args.model else train_tf_model(workdir / "train", args.train_steps)
    shutil.copy(ROOT / "ipi_inputs" / "init.xyz", workdir / "init.xyz")
    results = {}
    for client in ("dp_ipi", "ensemble-driver"):
        config = {
            "verbose": False,
            "use_unix": True,
            "port": 31415,
            "host": f"cmp-{client}",
            "graph_file": str(model),
            "coord_file": "init.xyz",
            "atom_type": {"Cu": 0, "Au": 1},
        }
        (workdir / client).mkdir(exist_ok=True)
        shutil.copy(workdir / "init.xyz", workdir / client / "init.xyz")
        results[client] = run_once(workdir / client, client, config, args.steps, args.timeout)
    ref, mine = results["dp_ipi"][0], results["ensemble-driver"][0]
    if ref.shape != mine.shape:
        print(f"different number of steps: dp_ipi {ref.shape}, ensemble-driver {mine.shape}")
        return 1
    rel = np.abs(mine - ref) / np.abs(ref).max()
    print(f"model: {model}")
    print(f"{'step':>6} {'dp_ipi (eV)':>20} {'ensemble-driver (eV)':>22} {'relative difference':>20}")
    for k in list(range(min(5, len(ref)))) + list(range(max(5, len(ref) - 3), len(ref))):
        print(f"{k:>6} {ref[k]:>20.10f} {mine[k]:>22.10f} {rel[k]:>20.2e}")
    print(f"largest relative difference over {len(ref)} steps: {rel.max():.2e} (tolerance {args.tolerance:g})")
    print(
        f"wall time of the whole run: dp_ipi {results['dp_ipi'][1]:.1f} s, "
        f"ensemble-driver {results['ensemble-driver'][1]:.1f} s (start-up included; not a benchmark)"
    )
    return 0 if rel.max() <= args.tolerance else 1


if __name__ == "__main__":
    raise SystemExit(main())
