"""``devi``'s settings: one record, its fields named as its options (argparse dests)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ..deviation import DeviationKind
from ..errors import ConfigError
from ..models.parameters import ParameterOptions, Parameters
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
    kind: DeviationKind = field(default_factory=DeviationKind)  # --atomic, --relative, --relative-v
    overwrite: bool = False
    append: bool = False
    trust: TrustLevels | None = None
    batch: int | None = None  # frames per model call; None: frames_per_call's choice
    # --fparam, --aparam, --charge-spin; --aparam-array names an array of every frame
    parameters: ParameterOptions = field(default_factory=ParameterOptions)
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
        self.parameters.validated()
        return self

    def deviation_options(self) -> DeviationOptions:
        """What the rows and their files are, as ``run`` takes them too."""
        return DeviationOptions.of(self)

    def model_parameters(self, series: Sequence[list[Frame]]) -> Parameters:
        """The parameters every model is made with. With --aparam-array the first frame's
        array stands for all (each call gets its frames' own): it is what the models'
        dimensions are checked against; every frame's must have its shape."""
        array = self.parameters.aparam_array
        if array is None:
            return self.parameters.parameters()
        first = series[0][0].aparam
        for path, frames in zip(self.trajectories, series):
            for k, frame in enumerate(frames):
                if frame.aparam.shape[1] != first.shape[1]:
                    raise ConfigError(
                        f"trajectory {path}, frame {k}: array {array!r} has {frame.aparam.shape[1]} "
                        f"column(s), frame 0 of {self.trajectories[0]} has {first.shape[1]}"
                    )
        return self.parameters.parameters(first, f"trajectory {self.trajectories[0]}")
