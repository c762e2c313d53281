"""GPU placement (--device) in processes: the node-local rank from a real mpiexec, and
``--device cuda`` on a machine without a GPU refused before any model loads (the choice
per node-local rank with faked device counts: tests/unit/models/test_devices.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
from support.paths import ROOT

from ensemble_driver.models.devices import visible_gpus


@pytest.mark.timeout(120)
def test_node_share_under_mpiexec():
    code = (
        "from ensemble_driver import ranks; c = ranks.world(); "
        "g = c.allgather(ranks.node_share(c)); print(g if c.rank == 0 else '', end='')"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    run = subprocess.run(
        ["mpiexec", "-n", "3", sys.executable, "-c", code], capture_output=True, text=True, timeout=100, env=env
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[(0, 3), (1, 3), (2, 3)]"  # one host: the node-local ranks are the ranks


@pytest.mark.timeout(120)
def test_device_cuda_without_gpu_fails_before_any_model_loads(tmp_path):
    """On this GPU-less machine: one line naming the host, exit 2, no deviation file made."""
    root = ROOT
    if visible_gpus():
        pytest.skip("a GPU is visible here")
    models = [str(root / "examples" / "models" / f"m{k}.pth") for k in range(2)]
    command = [sys.executable, "-m", "ensemble_driver", "run", "--models", *models, "--device", "cuda"]
    command += ["--template", str(root / "ipi_inputs" / "init.xyz"), "--unix", "--address", "unused"]
    run = subprocess.run(command, capture_output=True, text=True, timeout=100, cwd=tmp_path)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == (
        f"ensemble-driver: error: --device cuda: no GPU visible on {socket.gethostname()} "
        f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}, none in /proc/driver/nvidia/gpus)"
    )
    assert not list(tmp_path.iterdir())  # the deviation file was never made
