"""Active learning from a path-integral run, on the shipped models, in a few minutes.

    python examples/active_learning/run_example.py [--temperature 1500] [--steps 400]

1. i-PI runs PIMD (4 beads) of the 32-atom Cu-Au alloy at --temperature, well above the
   900 K the shipped models were trained to (examples/models/make_models.py);
2. ensemble-driver serves it under mpiexec with the four models: model 0 drives, the
   deviation of every bead is written every --out-freq steps, and with the trust levels
   each row is classified as DP-GEN would and the candidate structures are collected;
3. ensemble-driver plot draws the deviation against step and its histogram;
4. the script prints where everything is and what to do next.

Everything goes to --workdir (default active_learning_output/).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

from ensemble_driver.demo.inputs import SocketSettings, prepare_input  # noqa: E402
from ensemble_driver.demo.launch import ProcessGroup  # noqa: E402


def tool(name: str) -> str:
    path = BIN / name
    return str(path) if path.exists() else (shutil.which(name) or name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--temperature", type=float, default=1500.0, help="kelvin (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=400, help="i-PI steps of 2 fs (default: %(default)s)")
    parser.add_argument("--out-freq", type=int, default=5, help="deviation every N steps (default: %(default)s)")
    parser.add_argument("--trust-lo", type=float, default=0.15, help="eV/Angstrom (default: %(default)s)")
    parser.add_argument("--trust-hi", type=float, default=0.25, help="eV/Angstrom (default: %(default)s)")
    parser.add_argument("--ranks", type=int, default=2, help="MPI ranks for the 4 models (default: %(default)s)")
    parser.add_argument("--workdir", type=Path, default=Path("active_learning_output"))
    args = parser.parse_args()

    work = args.workdir.resolve()
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    address = f"active-learning-{os.getpid()}"
    nbeads = 4
    prepare_input(
        ROOT / "ipi_inputs" / "pimd.xml",
        work / "input.xml",
        socket=SocketSettings(address=address),
        steps=args.steps,
        nbeads=nbeads,
        prefix="hot",
        outputs=[
            "<properties stride='10' filename='out'> [ step, time{picosecond}, temperature{kelvin}, "
            "potential{electronvolt} ] </properties>",
            # the positions at the deviation steps, for `ensemble-driver devi` or DP-GEN
            f"<trajectory filename='pos' stride='{args.out_freq}' format='xyz'> positions </trajectory>",
        ],
    )
    tree = ET.parse(work / "input.xml")  # heat it: velocities and thermostat at --temperature
    system = tree.getroot().find("system")
    system.find("initialize/velocities").text = f" {args.temperature} "
    system.find("ensemble/temperature").text = f" {args.temperature} "
    tree.write(work / "input.xml")

    models = [str(ROOT / "examples" / "models" / f"m{k}.pth") for k in range(4)]
    driver = [
        tool("mpiexec"),
        "-n",
        str(args.ranks),
        tool("ensemble-driver"),
        "run",
        "--models",
        *models,
        "--template",
        "init.xyz",
        "--unix",
        "--address",
        address,
        "--nbeads",
        str(nbeads),
        "--out-freq",
        str(args.out_freq),
        "--trust-lo",
        str(args.trust_lo),
        "--trust-hi",
        str(args.trust_hi),
    ]
    print(
        f"PIMD at {args.temperature:g} K, {nbeads} beads, {args.steps} steps; the deviation every "
        f"{args.out_freq} steps with 4 models on {args.ranks} ranks ...",
        flush=True,
    )
    with ProcessGroup(work / "logs") as group:
        group.start("i-pi", [tool("i-pi"), "input.xml"], cwd=work)
        group.start("driver", driver, cwd=work)
        group.wait(3600)
    files = sorted(str(p.name) for p in work.glob("model_devi*.out"))
    plot = subprocess.run(
        [
            tool("ensemble-driver"),
            "plot",
            *files,
            "--trust-lo",
            str(args.trust_lo),
            "--trust-hi",
            str(args.trust_hi),
            "-o",
            "devi.png",
            "--title",
            f"PIMD at {args.temperature:g} K, models trained to 900 K",
        ],
        cwd=work,
        capture_output=True,
        text=True,
        check=True,
    )
    summary = json.loads((work / "devi_summary.json").read_text())
    log = (work / "logs" / "driver.log").read_text()
    print(log[log.rfind("deviation rows by class") :].strip())
    print(plot.stdout.strip())
    candidates = [b["candidate_file"] for b in summary["beads"] if b["candidate_file"]]
    print(f"""
outputs in {work}:
  model_devi1.out .. model_devi{nbeads}.out  the deviation of each bead (LAMMPS's format)
  {", ".join(candidates) or "(no candidates)"}  candidate structures (extended XYZ)
  devi_summary.json  the counts per class and bead
  devi.png  the plot
  hot.pos_*.xyz  i-PI's positions at the deviation steps

next:
  - label the candidates with your reference method, e.g. with ASE:
      frames = ase.io.read("{work / "candidates1.xyz"}", index=":")
    or convert them for DeePMD with dpdata:
      dpdata.MultiSystems.from_file("candidates1.xyz", fmt="ase/structure", ase_fmt="extxyz",
                                    labeled=False)
  - with DP-GEN/dpgen2, the deviation files are the ones their LAMMPS stage writes; set
    model_devi_f_trust_lo/hi to the levels used here
  - re-check this run with retrained models, without running it again:
      ensemble-driver devi hot.pos_0.xyz hot.pos_1.xyz hot.pos_2.xyz hot.pos_3.xyz --models NEW_MODELS...""")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
