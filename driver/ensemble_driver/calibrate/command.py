"""``ensemble-driver calibrate``: the model deviation against labelled data, and the
trust levels it suggests.

The labelled structures (:mod:`.data`) go through ``devi``'s machinery as they are: the
same split of the models and the frames over the ranks (``DeviLayout``), the same
batches of frames per model call and threads; only what is kept of each chunk differs:
each frame's numbers (:func:`.statistics.frame_numbers`) instead of a deviation row.
Rank 0 then makes the report (:mod:`.report`), writes it as JSON, prints it, and draws
the figure (:mod:`.plot`) when asked.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from .. import ranks
from ..devi.evaluation import evaluate_series
from ..devi.settings import DeviSettings
from ..errors import ConfigError, ModelError
from ..models.deepmd import check_model_file
from .data import Labelled, read_labelled
from .report import make_report, text_report, write_json
from .statistics import frame_numbers

#: frames below which no proposal (nor a rank correlation) is worth making
MIN_FRAMES = 20


@dataclass(frozen=True)
class CalibrateSettings:
    data: tuple[str, ...]
    models: tuple[str, ...]
    fmt: str | None = None
    type_map: tuple[str, ...] | None = None
    head: str | None = None
    batch: int | None = None  # frames per model call; None: devi's choice
    error_target: float | None = None  # eV/Angstrom; None: no proposal
    miss_rate: float = 0.05
    json: str = "calibration.json"
    output: str | None = None  # the figure
    verbose: int = 0

    def validated(self) -> CalibrateSettings:
        if len(self.models) < 2:
            raise ConfigError(
                f"calibrate needs two or more --models (the deviation is their spread), got {len(self.models)}"
            )
        if self.error_target is not None and not (math.isfinite(self.error_target) and self.error_target > 0):
            raise ConfigError(f"--error-target must be a positive number of eV/Angstrom, got {self.error_target}")
        if not 0 <= self.miss_rate < 1:
            raise ConfigError(f"--miss-rate must be a fraction in [0, 1), got {self.miss_rate}")
        if self.batch is not None and self.batch < 1:
            raise ConfigError(f"--batch must be >= 1, got {self.batch}")
        for option, path in (("--json", self.json), ("--output", self.output)):
            if path is not None and not Path(path).resolve().parent.is_dir():
                raise ConfigError(f"{option} {path}: no directory {Path(path).parent}")
        if self.output is not None and Path(self.output).suffix.lower() not in (".png", ".pdf", ".svg"):
            raise ConfigError(f"--output {self.output}: the suffix picks the format: .png, .pdf or .svg")
        return self

    def devi_settings(self, systems: Sequence[Labelled]) -> DeviSettings:
        """What ``devi``'s machinery needs: one series per system."""
        return DeviSettings(
            trajectories=tuple(s.name for s in systems),
            models=self.models,
            type_map=self.type_map,
            head=self.head,
            batch=self.batch,
            source="data",
        )


def run_calibrate(settings: CalibrateSettings, comm=None) -> int:
    """Evaluate every model on every labelled frame; on rank 0 write and print the report. Returns 0."""
    settings.validated()
    clock = [("start", time.monotonic())]
    comm = comm if comm is not None else ranks.world()
    for path in settings.models:
        check_model_file(path)
    systems = [s for path in settings.data for s in read_labelled(path, settings.fmt)]
    total = sum(len(s.frames) for s in systems)
    if total < MIN_FRAMES:
        raise ConfigError(
            f"calibrate needs at least {MIN_FRAMES} labelled frames for a proposal, got {total} in "
            f"{', '.join(settings.data)}"
        )
    clock.append(("reading", time.monotonic()))
    keep = partial(_keep_numbers, systems, len(settings.models))
    numbers, _ = evaluate_series(settings.devi_settings(systems), [s.frames for s in systems], keep, comm, clock)
    if numbers is None:
        return 0
    ordered = [numbers[(s, k)] for s, system in enumerate(systems) for k in range(len(system.frames))]
    report = make_report(settings, systems, ordered)
    write_json(report, settings.json)
    written = [settings.json]
    if settings.output is not None:
        from .plot import plot_calibration

        plot_calibration(report, ordered, settings.output)
        written.append(settings.output)
    clock.append(("report", time.monotonic()))
    parts = ", ".join(f"{name} {b - a:.1f} s" for (_, a), (name, b) in zip(clock, clock[1:]))
    print(text_report(report))
    print(f"wrote {', '.join(written)} in {clock[-1][1] - clock[0][1]:.1f} s ({parts})")
    return 0


def _keep_numbers(systems: Sequence[Labelled], n_models: int, chunk: list, results: dict, rows: dict) -> None:
    """Each frame's numbers of a chunk, from every model's energies and forces and its labels."""
    energies = np.stack([results[m].energy for m in range(n_models)], axis=1)  # (frames, models)
    forces = np.stack([results[m].forces for m in range(n_models)], axis=1)  # (frames, models, nat, 3)
    if not np.isfinite(energies).all():
        s, k = chunk[0]
        raise ModelError(f"a model returned a non-finite energy on data {systems[s].name} frames {k}..{chunk[-1][1]}")
    for j, (s, k) in enumerate(chunk):
        system = systems[s]
        rows[(s, k)] = frame_numbers(energies[j], forces[j], system.energies[k], system.forces[k])
