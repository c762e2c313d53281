"""Run by tests/peers/test_dpgen_readers.py in a separate environment with dpgen2 (and not the driver):
dpgen2's own exploration code on a driver-made PIMD task directory, printed as JSON.

    python dpgen2_select.py TASK_DIR NBEADS F_LO F_HI TYPE,MAP WORK_DIR
"""

import json
import os
import sys
from pathlib import Path

import dpdata
from dpgen2.exploration.render import TrajRenderLammps
from dpgen2.exploration.report import ExplorationReportTrustLevelsMax
from dpgen2.exploration.selector import ConfSelectorFrames

task, nbeads, lo, hi, type_map, work = sys.argv[1:]
task, nbeads, lo, hi, type_map = Path(task), int(nbeads), float(lo), float(hi), type_map.split(",")
width = len(str(nbeads))
trajs = [task / f"traj.{str(b + 1).zfill(width)}.dump" for b in range(nbeads)]
devis = [task / f"model_devi.{str(b + 1).zfill(width)}.out" for b in range(nbeads)]
render = TrajRenderLammps(nopbc=False)
report = ExplorationReportTrustLevelsMax(lo, hi)
report.record(render.get_model_devi(devis))
ids = [sorted(int(i) for i in traj) for traj in report.get_candidate_ids(None)]
os.chdir(work)  # select() writes its confs/ here
selector = ConfSelectorFrames(render, ExplorationReportTrustLevelsMax(lo, hi))
confs, _ = selector.select(trajs, devis, type_map=type_map)
systems = [
    dpdata.System(str(d.parent), fmt="deepmd/npy", type_map=type_map) for d in sorted(confs[0].glob("*/type.raw"))
]
frames = [
    {
        "coords": s["coords"][k].tolist(),
        "cell": s["cells"][k].tolist(),
        "names": [s["atom_names"][t] for t in s["atom_types"]],
    }
    for s in systems
    for k in range(s.get_nframes())
]
print(json.dumps({"ids": ids, "frames": frames}))
