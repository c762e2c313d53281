"""``devi``'s settings: one record, its fields named as its options (argparse dests)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..models.parameters import Parameters, check_charge_spin
from ..outputs.selection import TrustLevels
from ..outputs.sink import DeviationOptions
from .frames import Frame


@dataclass(frozen=True)
class DeviSettings:
    trajectories: tuple[str, ...]
    models: tuple[str, ...]
    fmt: str | None = None
    stride: int = 1
    type_map: tuple[str, ...] | None = None
    head: str | None = None  # the head of every multi-task model
    out_file: str = "model_devi.out"
    bead_files: str = "dpgen"
    atomic: bool = False
    relative: float | None = None
    relative_v: float | None = None
    overwrite: bool = False
    append: bool = False
    trust: TrustLevels | None = None
    batch: int | None = None  # frames per model call; None: frames_per_call's choice
    fparam: tuple[float, ...] | None = None
    aparam: tuple[float, ...] | None = None
    aparam_array: str | None = None  # per-atom values: this array of every frame
    charge_spin: tuple[float, float] | None = None  # --charge-spin Q S
    traj_files: str | None = None  # as run's --traj-files: every row's frame as a LAMMPS dump
    source: str = "trajectory"  # what a series is called in messages

    def validated(self) -> DeviSettings:
        if len(self.models) < 2:
            raise ConfigError("devi needs two or more --models (the deviation is their spread)")
        if not self.trajectories:
            raise ConfigError("no trajectory given")
        if self.stride < 1:
            raise ConfigError(f"--stride must be >= 1, got {self.stride}")
        self.deviation_options().validated()
        if self.aparam is not None and self.aparam_array is not None:
            raise ConfigError("--aparam and --aparam-array exclude each other (both give the atomic parameters)")
        for name, values in (("--fparam", self.fparam), ("--aparam", self.aparam)):
            if values is not None and not np.isfinite(values).all():
                raise ConfigError(f"{name} must be finite numbers, got {' '.join(map(str, values))}")
        check_charge_spin(self.charge_spin)
        return self

    def deviation_options(self) -> DeviationOptions:
        """What the rows and their files are, as ``run`` takes them too."""
        return DeviationOptions.of(self)

    def parameters(self, series: Sequence[list[Frame]]) -> Parameters:
        """The parameters every model is made with. With --aparam-array the first frame's
        array stands for all (each call gets its frames' own): it is what the models'
        dimensions are checked against; every frame's must have its shape."""
        fparam = None if self.fparam is None else np.array(self.fparam, dtype=np.float64)
        if self.aparam_array is None:
            aparam = None if self.aparam is None else np.array(self.aparam, dtype=np.float64)
            return Parameters(fparam=fparam, aparam=aparam, charge_spin=self.charge_spin)
        first = series[0][0].aparam
        for path, frames in zip(self.trajectories, series):
            for k, frame in enumerate(frames):
                if frame.aparam.shape[1] != first.shape[1]:
                    raise ConfigError(
                        f"trajectory {path}, frame {k}: array {self.aparam_array!r} has {frame.aparam.shape[1]} "
                        f"column(s), frame 0 of {self.trajectories[0]} has {first.shape[1]}"
                    )
        source = f"--aparam-array {self.aparam_array} of trajectory {self.trajectories[0]}"
        return Parameters(fparam=fparam, aparam=first, aparam_from=source, charge_spin=self.charge_spin)
