"""Run by tests/peers/test_dpgen_readers.py in a separate environment with DP-GEN (and not the driver):
DP-GEN's own model-deviation reading and candidate selection (``_read_model_devi_file``,
``_select_by_model_devi_standard`` in dpgen/generator/run.py) on a driver-made PIMD task
directory, with the structure of every candidate read as DP-GEN reads it for labelling
(traj/<step>.lammpstrj, dpdata's lammps/dump), printed as JSON.

    python dpgen_select.py TASK_DIR F_LO F_HI TYPE,MAP
"""

import json
import os
import sys

import dpdata
from dpgen.generator.run import _select_by_model_devi_standard

task, lo, hi, type_map = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4].split(",")
# no virial levels: DP-GEN's own default (run.py: model_devi_v_trust_lo/hi = 1e10)
accurate, candidates, failed, counter = _select_by_model_devi_standard(
    [task], lo, hi, 1e10, 1e10, None, "lammps", detailed_report_make_fp=True
)
frames = []
for _, step in candidates:
    system = dpdata.System(os.path.join(task, "traj", f"{step}.lammpstrj"), fmt="lammps/dump", type_map=type_map)
    frames.append(
        {
            "step": step,
            "coords": system["coords"][0].tolist(),
            "cell": system["cells"][0].tolist(),
            "names": [system["atom_names"][t] for t in system["atom_types"]],
        }
    )
print(json.dumps({"counter": dict(counter), "candidates": [c for _, c in candidates], "frames": frames}))
