"""GPU placement (--device): the choice per node-local rank with faked device counts, the
environment a backend reads (the node-local rank from a real mpiexec:
tests/peers/test_devices_process.py)."""

from __future__ import annotations

import pytest

from ensemble_driver.errors import ConfigError
from ensemble_driver.models import devices
from ensemble_driver.models.devices import Placement, bind, place, visible_gpus


@pytest.mark.parametrize(
    "want, ngpus, expected",
    [
        ("auto", 0, [None, None, None, None]),
        ("cpu", 2, [None, None, None, None]),
        ("auto", 2, ["0", "1", "0", "1"]),  # round-robin over the node's GPUs
        ("cuda", 4, ["0", "1", "2", "3"]),
        ("cuda", 3, ["0", "1", "2", "0"]),
    ],
)
def test_round_robin_by_node_local_rank(want, ngpus, expected):
    gpus = [str(k) for k in range(ngpus)]
    assert [place(want, rank, gpus).gpu for rank in range(4)] == expected


def test_gpus_named_by_the_batch_system_are_used_as_named():
    gpus = visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"})
    assert gpus == ["2", "3"]
    assert [place("auto", rank, gpus).gpu for rank in range(3)] == ["2", "3", "2"]


def test_cuda_without_a_gpu_is_one_clear_error():
    with pytest.raises(ConfigError, match="--device cuda: no GPU visible on node7"):
        place("cuda", 0, [], host="node7")
    with pytest.raises(ConfigError, match="--device tpu: choose one of auto, cpu, cuda"):
        place("tpu", 0, [])


def test_visible_gpus(tmp_path):
    for k in range(3):
        (tmp_path / f"0000:0{k}:00.0").mkdir()
    assert visible_gpus({}, gpus_dir=tmp_path) == ["0", "1", "2"]
    assert visible_gpus({}, gpus_dir=tmp_path / "missing") == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, gpus_dir=tmp_path) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}, gpus_dir=tmp_path) == []


def test_bind_sets_what_the_backends_read():
    env = {"LOCAL_RANK": "3", "DEVICE": "cpu"}
    bind(Placement("5"), env)
    assert env == {"CUDA_VISIBLE_DEVICES": "5", "LOCAL_RANK": "0"}
    env = {"CUDA_VISIBLE_DEVICES": "0,1"}
    bind(Placement(None), env)
    assert env == {"CUDA_VISIBLE_DEVICES": "", "DEVICE": "cpu"}
    assert str(Placement(None)) == "cpu" and str(Placement("1")) == "cuda (GPU 1)"


def test_no_gpu_here_means_cpu():
    """This machine (and CI) has no GPU: auto picks the CPU."""
    if visible_gpus():
        pytest.skip("a GPU is visible here")
    assert place("auto", 0, visible_gpus()) == Placement(None)
    assert devices.NVIDIA_GPUS.exists() is False or not list(devices.NVIDIA_GPUS.iterdir())
