"""A geometry optimiser's steps, told from the structures its clone of the forces is
evaluated on (``--ipi-input`` with ``<motion mode='minimize'>``): nothing on the wire
says where one of i-PI's optimiser steps ends, since a line search evaluates a varying
number of times per step (see :class:`OptimiserSteps`)."""

from __future__ import annotations

import numpy as np

_EPS = float(np.finfo(np.float64).eps)


class OptimiserSteps:
    """i-PI's step of each structure a geometry optimiser's clone of one bead is evaluated
    on, told from the structures alone (ipi/engine/motion/geop.py, ipi/utils/mintools.py).

    i-PI's optimiser step ``k`` starts from the structure of step ``k`` and evaluates
    points on one straight line through it (its line search), and the last point it
    evaluates becomes the structure of step ``k + 1`` (``beads.q = dbeads.q``). Every
    evaluation of step ``k``'s line search is labelled ``k + 1``, so the last row of a step
    is on i-PI's structure of that step, as LAMMPS labels the evaluations of its minimiser's
    line search with the iteration's step and DP-GEN keeps the last row of a repeated step.

    A structure opens the next step when it is not on the current step's line (the line
    from the step's start through its structure farthest from it). For ``brent`` (sd, cg:
    ``min_brent``) that is all: its search goes both ways along the line and can evaluate
    a point twice. ``approx`` (bfgs, lbfgs: ``min_approx``) backtracks from the full step
    towards the start, so a structure also opens a step when it is the previous one again
    (a zero direction), the start (L-BFGS's skipped update, ``d = -d_x``), behind the
    start, or farther out than the structure before it (L-BFGS's search restarted along the
    same uphill direction, stuck) -- except the second structure of a step, which an
    uphill search can put farther out. ``single`` (damped_bfgs): one evaluation per step.

    Two structures are the same when every coordinate agrees to a few ulps of the
    largest one; a structure is on the line when its distance from it is within rounding.
    Not told apart: a new step along exactly the old step's line (a system whose forces
    keep one direction, such as a dimer), and sd and cg steps once the optimiser no longer
    moves the atoms (every structure the same, so are their rows: they keep one step)."""

    def __init__(self, search: str, start: np.ndarray, first_step: int):
        self.search = search
        self.start = np.asarray(start, np.float64).reshape(-1)  # the structure of the step's start
        self.step = first_step + 1  # the label of this step's evaluations
        self.count = 0  # structures placed
        self._last: np.ndarray | None = None  # the structure placed last
        self._far: np.ndarray | None = None  # its structure farthest from the start
        self._in_step = 0  # structures of this step so far

    def place(self, positions: np.ndarray) -> int:
        """The step label of the next structure the clone is evaluated on."""
        x = np.asarray(positions, np.float64).reshape(-1)
        if self._last is not None and self._opens_step(x):
            self.start = self._last
            self.step += 1
            self._far, self._in_step = None, 0
        self._last = x
        self._in_step += 1
        if self._far is None or _norm(x - self.start) > _norm(self._far - self.start):
            self._far = x
        self.count += 1
        return self.step

    def _opens_step(self, x: np.ndarray) -> bool:
        if self.search == "single":
            return True
        if self.search == "approx" and (_same(x, self._last) or _same(x, self.start)):
            return True
        along = self._along_line(x)
        if along is None:
            return True
        if self.search == "approx":  # backtracking: between the start and the structure before
            last = self._along_line(self._last)  # type: ignore[arg-type]
            ratio = along / last if last else 0.0
            return not (0.0 < ratio < 1.0 or (ratio >= 1.0 and self._in_step == 1))
        return False

    def _along_line(self, x: np.ndarray) -> float | None:
        """How far ``x`` is from the step's start along its line; None when it is off it."""
        axis = self._far - self.start  # type: ignore[operator]
        length = _norm(axis)
        r = x - self.start
        rounding = 64 * _EPS * float(np.max(np.abs(self.start))) * np.sqrt(len(x))
        if length == 0.0:  # the step has not moved from its start (an optimiser that stopped): no line yet
            return 0.0 if _norm(r) <= rounding else None
        along = float(np.dot(r, axis)) / length
        off = _norm(r - along * (axis / length))
        return along if off <= 1e-9 * _norm(r) + rounding else None


def _norm(v: np.ndarray) -> float:
    return float(np.sqrt(np.dot(v, v)))


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """The same structure up to rounding: every coordinate within 16 ulps of the largest."""
    scale = max(float(np.max(np.abs(a))), float(np.max(np.abs(b))))
    return bool(np.all(np.abs(a - b) <= 16 * _EPS * scale))
