"""Which device each rank's models run on: ``--device auto|cpu|cuda``.

Every rank binds at most one GPU, chosen by its node-local rank (the rank among the
processes of its node, from an MPI shared-memory split: :func:`ranks.node_share`),
round-robin over the GPUs the node shows it. The choice must be made before a backend is
imported: deepmd-kit's PyTorch backend picks its device once, at import
(``deepmd/pt/utils/env.py``: ``cuda:$LOCAL_RANK`` when CUDA is available, the CPU when
``DEVICE=cpu``), and TensorFlow and JAX see every GPU that ``CUDA_VISIBLE_DEVICES``
lets them see. So a rank bound to GPU g is given ``CUDA_VISIBLE_DEVICES=g`` (that one GPU,
whatever the backend) and ``LOCAL_RANK=0`` (the first and only GPU it sees); a rank on
the CPU is given ``DEVICE=cpu`` and no GPU at all.

The GPUs a node shows are those of ``CUDA_VISIBLE_DEVICES`` when the batch system or the
user set it, else those the NVIDIA driver lists in ``/proc/driver/nvidia/gpus``: counted
without importing a backend (which would start CUDA before the choice is made).
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

CHOICES = ("auto", "cpu", "cuda")
NVIDIA_GPUS = Path("/proc/driver/nvidia/gpus")


def visible_gpus(environ: MutableMapping[str, str] | None = None, gpus_dir: Path = NVIDIA_GPUS) -> list[str]:
    """The GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` as set (an empty value
    or ``-1`` hides them all), else one per GPU the NVIDIA driver lists."""
    environ = os.environ if environ is None else environ
    listed = environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        ids = [x.strip() for x in listed.split(",") if x.strip()]
        return [] if not ids or ids[0] == "-1" else ids
    try:
        return [str(k) for k in range(len(list(gpus_dir.iterdir())))]
    except OSError:
        return []


@dataclass(frozen=True)
class Placement:
    """Where one rank runs: ``gpu`` is the GPU id it binds, None for the CPU."""

    gpu: str | None

    def __str__(self) -> str:
        return "cpu" if self.gpu is None else f"cuda (GPU {self.gpu})"


def place(want: str, local_rank: int, gpus: Sequence[str], host: str = "this host") -> Placement:
    """The device of the rank with node-local rank ``local_rank`` on a node showing ``gpus``:
    ``cpu`` never a GPU; ``cuda`` a GPU or an error; ``auto`` a GPU when there is one."""
    if want not in CHOICES:
        raise ConfigError(f"--device {want}: choose one of {', '.join(CHOICES)}")
    if want == "cpu" or (want == "auto" and not gpus):
        return Placement(None)
    if not gpus:
        raise ConfigError(
            f"--device cuda: no GPU visible on {host} (CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}, none in {NVIDIA_GPUS})"
        )
    return Placement(gpus[local_rank % len(gpus)])


def bind(placement: Placement, environ: MutableMapping[str, str] | None = None) -> None:
    """Set the environment a backend reads at import so that it uses ``placement``."""
    environ = os.environ if environ is None else environ
    if placement.gpu is None:
        environ["DEVICE"] = "cpu"
        environ["CUDA_VISIBLE_DEVICES"] = ""
    else:
        environ["CUDA_VISIBLE_DEVICES"] = placement.gpu
        environ["LOCAL_RANK"] = "0"
        environ.pop("DEVICE", None)
