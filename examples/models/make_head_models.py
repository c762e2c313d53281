"""Make the two small Cu-Au test models with heads or charge states in ``examples/models/``.

``multitask.pt``: a deepmd-kit multi-task (two-head) PyTorch checkpoint. One shared
``se_e2_a`` descriptor (the small one of ``make_models.py``), two fitting nets, heads
``emt`` (the EMT labels) and ``scaled`` (the same frames with energy, forces and virial
multiplied by 1.1, so that the heads clearly differ). A multi-task model cannot be
frozen to one ``.pth``, so the checkpoint itself is shipped, with what inference does not
need (the optimizer state) stripped. Load one head with::

    from deepmd.infer import DeepPot
    dp = DeepPot("multitask.pt", head="scaled")   # the head is required

List its heads without loading one::

    import torch
    params = torch.load("multitask.pt", map_location="cpu", weights_only=True)["model"]["_extra_state"]["model_params"]
    print(list(params["model_dict"]))             # ['emt', 'scaled']

(or ``dp --pt show multitask.pt model-branch``).

``dpa3_chg_spin.pth``: a tiny DPA-3 model (one repflow layer, small dims and sel) with
``add_chg_spin_ebd: true`` and no ``default_chg_spin``, trained on two "charge states"
of the same frames: ``[charge, multiplicity] = [0, 1]`` with the EMT labels and
``[1, 1]`` with the labels multiplied by 1.05 (made-up: only the charge changes, so that
the two states differ by one input). deepmd-kit reads the state of each frame from
``set.*/charge_spin.npy`` (nframes, 2); DPA-3 turns both numbers into integers and looks
them up in embedding tables (charge in [-100, 99], multiplicity in [0, 99]). At inference
the state is required, as ``DeepPot.eval(..., charge_spin=np.array([[0, 1]]))`` (shape
(nframes, 2)).

Both are valid models, not good ones (a few dozen training steps; forces hardly learned):
they exist to test head selection and the charge/spin input of the driver. After the last
step deepmd-kit refits the output bias to the data (``change_bias_after_training``), so
that the energies are in the range of the labels (the fitting nets start eV per atom
away, which 60 steps do not undo).

Run from anywhere (83 s and 127 s in two runs, 60 steps per model, on 2 CPU cores shared
with a test suite, measured 2026-12-05):

    python examples/models/make_head_models.py         # writes examples/models/{multitask.pt,dpa3_chg_spin.pth}
    python examples/models/make_head_models.py --steps 10 --out /tmp/quick
"""

from __future__ import annotations

import argparse
import copy
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

HEADS = {"emt": 1.0, "scaled": 1.1}  # head name -> factor on energy, forces and virial
CHARGE_STATES = {(0, 1): 1.0, (1, 1): 1.05}  # [charge, multiplicity] -> factor on the labels
SEED = 21


def scaled_frames(frames: list, factor: float) -> list:
    """Copies of the frames with energy, forces and virial multiplied by ``factor``."""
    out = []
    for frame in frames:
        f = frame.copy()
        f.info["energy"] = frame.info["energy"] * factor
        f.info["virial"] = frame.info["virial"] * factor
        f.arrays["forces"] = frame.arrays["forces"] * factor
        out.append(f)
    return out


def write_system(frames: list, directory: Path, factor: float = 1.0, charge_spin=None) -> None:
    """One DeePMD system of the frames, labels times ``factor``; with ``charge_spin``
    (charge, multiplicity), also ``set.000/charge_spin.npy`` (nframes, 2)."""
    write_deepmd_npy(scaled_frames(frames, factor), directory)
    if charge_spin is not None:
        np.save(directory / "set.000" / "charge_spin.npy", np.tile(np.asarray(charge_spin, float), (len(frames), 1)))


def multitask_input(data: Path, steps: int) -> dict:
    """Two heads (``emt``, ``scaled``) on one shared se_e2_a descriptor, built from the
    single-task input of make_models.py."""
    heads = list(HEADS)
    single = training_input(data / "emt" / "train", data / "emt" / "valid", TYPE_MAP_DATA, SEED, steps)
    training = {k: v for k, v in single["training"].items() if k not in ("training_data", "validation_data")}
    # A few dozen steps leave the energies off by eV per atom (the fitting nets start far
    # from zero): refit the output bias of each head to its data after the last step.
    training["change_bias_after_training"] = True
    training["model_prob"] = {h: 1.0 for h in heads}
    training["data_dict"] = {
        h: {
            "training_data": {"systems": [str(data / h / "train")], "batch_size": 1},
            "validation_data": {"systems": [str(data / h / "valid")], "batch_size": 1, "numb_btch": 2},
        }
        for h in heads
    }
    return {
        "model": {
            "shared_dict": {"type_map_all": TYPE_MAP_DATA, "se_e2_a_shared": single["model"]["descriptor"]},
            "model_dict": {
                h: {
                    "type_map": "type_map_all",
                    "descriptor": "se_e2_a_shared",
                    "fitting_net": dict(single["model"]["fitting_net"], seed=SEED + k + 1),
                }
                for k, h in enumerate(heads)
            },
        },
        "learning_rate": single["learning_rate"],
        "loss_dict": {h: copy.deepcopy(single["loss"]) for h in heads},
        "training": training,
    }


def dpa3_input(data: Path, steps: int) -> dict:
    """A DPA-3 descriptor as small as deepmd-kit takes, with the charge/spin embedding."""
    systems = [f"cs{c}_{s}" for c, s in CHARGE_STATES]
    spec = training_input(data / systems[0] / "train", data / systems[0] / "valid", TYPE_MAP_DATA, SEED, steps)
    spec["model"]["descriptor"] = {
        "type": "dpa3",
        "repflow": {
            "n_dim": 8,
            "e_dim": 8,
            "a_dim": 4,
            "nlayers": 1,
            "axis_neuron": 2,
            # fcc, a = 3.87 A +- 3 %: 12 first neighbours below 2.9 A, 6 more near 3.9 A
            "e_rcut": 4.2,
            "e_rcut_smth": 0.5,
            "e_sel": 24,
            "a_rcut": 3.3,
            "a_rcut_smth": 0.5,
            "a_sel": 16,
            "update_angle": True,
        },
        "add_chg_spin_ebd": True,
        "precision": "float32",
        "seed": SEED,
    }
    spec["model"]["fitting_net"] = {"neuron": [16, 16], "resnet_dt": True, "precision": "float32", "seed": SEED}
    spec["training"]["training_data"]["systems"] = [str(data / s / "train") for s in systems]
    spec["training"]["validation_data"]["systems"] = [str(data / s / "valid") for s in systems]
    spec["training"]["validation_data"]["numb_btch"] = 2
    spec["training"]["change_bias_after_training"] = True  # as for the multi-task model
    return spec


def strip_checkpoint(src: Path, dst: Path) -> None:
    """Keep only the model's state (weights, buffers and ``_extra_state`` with the model
    params), which is all that ``DeepPot(..., head=...)`` reads: no optimizer state."""
    import torch

    state = torch.load(src, map_location="cpu", weights_only=True)
    torch.save({"model": state["model"]}, dst)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE, help="where the models go (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=60, help="training steps per model (default: %(default)s)")
    parser.add_argument(
        "--frames-per-run", type=int, default=6, help="frames per (T, strain) MD run (default: %(default)s)"
    )
    parser.add_argument("--keep-workdir", action="store_true", help="keep the data and training directories")
    args = parser.parse_args(argv)

    dp = shutil.which("dp")
    if dp is None:
        sys.exit("make_head_models.py: the `dp` command of deepmd-kit is not on PATH")
    t0 = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="ensemble_driver_head_models_"))
    frames = label_frames(args.frames_per_run, seed=2028)
    valid = set(range(0, len(frames), 6))
    train_frames = [f for i, f in enumerate(frames) if i not in valid]
    valid_frames = [f for i, f in enumerate(frames) if i in valid]
    data = work / "data"
    for head, factor in HEADS.items():
        write_system(train_frames, data / head / "train", factor)
        write_system(valid_frames, data / head / "valid", factor)
    for (charge, mult), factor in CHARGE_STATES.items():
        write_system(train_frames, data / f"cs{charge}_{mult}" / "train", factor, (charge, mult))
        write_system(valid_frames, data / f"cs{charge}_{mult}" / "valid", factor, (charge, mult))
    print(f"labelled {len(frames)} EMT frames in {time.perf_counter() - t0:.0f} s", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)

    # 1. multi-task: train, then ship the checkpoint without its optimizer state
    started = time.perf_counter()
    tdir = work / "multitask"
    tdir.mkdir()
    (tdir / "input.json").write_text(json.dumps(multitask_input(data, args.steps), indent=2))
    run([dp, "--pt", "train", "input.json", "--skip-neighbor-stat"], tdir)
    strip_checkpoint(tdir / f"model.ckpt-{args.steps}.pt", args.out / "multitask.pt")
    print(
        f"multitask.pt (heads {', '.join(HEADS)}): {time.perf_counter() - started:.0f} s, "
        f"{(args.out / 'multitask.pt').stat().st_size} bytes",
        flush=True,
    )

    # 2. DPA-3 with the charge/spin embedding: train and freeze
    started = time.perf_counter()
    tdir = work / "dpa3"
    tdir.mkdir()
    (tdir / "input.json").write_text(json.dumps(dpa3_input(data, args.steps), indent=2))
    run([dp, "--pt", "train", "input.json", "--skip-neighbor-stat"], tdir)
    run([dp, "--pt", "freeze", "-o", "dpa3_chg_spin.pth"], tdir)
    shutil.copy(tdir / "dpa3_chg_spin.pth", args.out / "dpa3_chg_spin.pth")
    print(
        f"dpa3_chg_spin.pth: {time.perf_counter() - started:.0f} s, "
        f"{(args.out / 'dpa3_chg_spin.pth').stat().st_size} bytes",
        flush=True,
    )

    if args.keep_workdir:
        print(f"work directory kept: {work}")
    else:
        shutil.rmtree(work)
    print(f"wrote {args.out}/multitask.pt and dpa3_chg_spin.pth in {time.perf_counter() - t0:.0f} s total")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    raise SystemExit(main())
