"""``--start-ipi``: where the run starts from. The same command starts a run and continues
it (as GROMACS's ``mdrun -cpi``): i-PI's newest valid checkpoint in the input's directory
when there is one, else the input itself.

The checkpoints are i-PI's own files, read as plain XML (no i-PI code: a checkpoint of a
finished run is one i-PI refuses to bind):

- ``RESTART``: written by i-PI's soft exit (SIGTERM, an EXIT file, its wall-clock limit,
  the end of the run), rolled back to the last ``safe_stride`` step when interrupted;
- ``<prefix>.<filename>`` of every ``<checkpoint>`` output of the input (``filename``
  defaults to ``restart``, ``prefix`` to ``i-pi``), or with ``overwrite='false'`` the
  numbered ``<prefix>.<filename>_<k>``: what a hard kill leaves.

Each says its ``<step>`` (the step i-PI continues from) and ``<total_steps>`` (i-PI leaves
out either when it has its default, 0 and 1000). The newest is the one with the largest
step; a file that does not parse (a kill during its write) is skipped, with a warning. At equal steps RESTART wins. A checkpoint whose
step has reached its total steps is a finished run.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

log = logging.getLogger(__name__)

#: i-PI's soft-exit checkpoint, in its working directory
RESTART = "RESTART"


@dataclass(frozen=True)
class Checkpoint:
    """One i-PI checkpoint file: the step it continues from, and the run's total steps."""

    path: Path
    step: int
    total_steps: int

    @property
    def complete(self) -> bool:
        return self.step >= self.total_steps


@dataclass(frozen=True)
class Start:
    """Where a ``--start-ipi`` run starts: i-PI's input (the user's, or a checkpoint),
    whether the driver's outputs are continued (``--resume``), or nothing to do."""

    input: Path
    checkpoint: Checkpoint | None = None  # None: the user's input, from its own first step
    skipped: tuple[str, ...] = ()  # checkpoints not usable, each with why

    @property
    def complete(self) -> bool:
        return self.checkpoint is not None and self.checkpoint.complete


def _int_child(root: ET.Element, tag: str) -> int | None:
    element = root.find(tag)
    if element is None or element.text is None:
        return None
    try:
        return int(element.text.strip())
    except ValueError:
        return None


def read_checkpoint(path: str | Path) -> Checkpoint:
    """The step and total steps of an i-PI checkpoint (or input) file; ValueError with
    the reason when it cannot be used."""
    path = Path(path)
    try:
        root = ET.fromstring(path.read_text())
    except OSError as exc:
        raise ValueError(exc.strerror or str(exc)) from None
    except ET.ParseError as exc:
        raise ValueError(f"not whole XML ({exc})") from None
    if root.tag != "simulation":
        raise ValueError(f"no <simulation> element (found <{root.tag}>)")
    # i-PI leaves out what has its default value: <step> 0, <total_steps> 1000
    step = _int_child(root, "step")
    total = _int_child(root, "total_steps")
    return Checkpoint(path, 0 if step is None else step, 1000 if total is None else total)


def checkpoint_files(input_path: str | Path) -> list[Path]:
    """The checkpoint files i-PI may have left for ``input_path``: RESTART first, then
    every ``<checkpoint>`` output's file(s), in the input's directory (those that exist)."""
    input_path = Path(input_path)
    directory = input_path.resolve().parent
    found = [directory / RESTART]
    try:
        root = ET.fromstring(input_path.read_text())
    except (OSError, ET.ParseError):
        root = None  # i-PI's own reading of the input says what is wrong with it
    if root is not None:
        for output in root.findall("output"):
            prefix = output.get("prefix", "i-pi").strip()
            for chk in output.findall("checkpoint"):
                name = chk.get("filename", "restart").strip()
                base = f"{prefix}.{name}" if prefix else name
                if chk.get("overwrite", "true").strip().lower() == "false":
                    numbered = re.compile(re.escape(base) + r"_\d+")
                    found += sorted(p for p in directory.glob(f"{base}_*") if numbered.fullmatch(p.name))
                else:
                    found.append(directory / base)
    unique = list(dict.fromkeys(found))
    return [p for p in unique if p.is_file()]


def newest_checkpoint(candidates: list[Path]) -> tuple[Checkpoint | None, tuple[str, ...]]:
    """The usable checkpoint with the largest step (RESTART first among equals: the
    candidates' order), and the ones skipped with why."""
    best: Checkpoint | None = None
    skipped = []
    for path in candidates:
        try:
            chk = read_checkpoint(path)
        except ValueError as exc:
            skipped.append(f"{path.name}: {exc}")
            continue
        if best is None or chk.step > best.step:
            best = chk
    return best, tuple(skipped)


def plan_start(input_path: str | Path) -> Start:
    """Where ``--start-ipi`` on ``input_path`` starts: its newest checkpoint, or itself."""
    input_path = Path(input_path)
    if not input_path.is_file():
        raise ConfigError(f"--ipi-input {input_path}: no such file")
    chk, skipped = newest_checkpoint(checkpoint_files(input_path))
    if chk is None:
        return Start(input_path, None, skipped)
    return Start(chk.path, chk, skipped)


def describe(start: Start) -> str:
    """One line on where the run starts, for rank 0's log."""
    if start.checkpoint is None:
        return f"i-PI starts the run from {start.input}"
    chk = start.checkpoint
    return f"i-PI continues the run from {chk.path.name} at step {chk.step} of {chk.total_steps}"
