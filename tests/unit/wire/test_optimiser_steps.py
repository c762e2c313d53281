"""The step of each structure a geometry optimiser's clone is evaluated on
(:class:`wire.optimiser.OptimiserSteps`), told from the structures alone, against the true
steps of i-PI's own line searches (``BFGS``, ``L_BFGS``, ``min_brent`` from
ipi/utils/mintools.py) driven as ipi/engine/motion/geop.py drives them, on a Lennard-Jones
cluster: every evaluation of the optimiser's step k is labelled k + 1, the last of them
is the structure of step k + 1. Also the request-id side: the clone's ids, the system's
own id, an estimator's clone said once, a replaced driver's clone refused; the clone's ids
read off i-PI's own binding of a minimize input."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest
from ipi.utils.mintools import BFGS, L_BFGS, min_brent
from support.paths import IPI_INPUTS

from ensemble_driver.errors import ConfigError
from ensemble_driver.run.config import RunConfig
from ensemble_driver.wire.ipi_input import Clone, RequestIds, Series, read_ipi_input
from ensemble_driver.wire.optimiser import OptimiserSteps

TOL = 1e-4 * 1e-7  # i-PI's defaults: ls_options tolerance times the energy tolerance


def lennard_jones(x: np.ndarray) -> tuple[float, np.ndarray]:
    """Energy and forces of a Lennard-Jones cluster (sigma 2.5, epsilon 1e-3), x (1, 3N)."""
    r = x.reshape(-1, 3)
    d = r[:, None, :] - r[None, :, :]
    dist2 = (d**2).sum(-1) + np.eye(len(r))
    s6 = (2.5**2 / dist2) ** 3
    np.fill_diagonal(s6, 0.0)
    energy = 0.5 * float((4e-3 * (s6**2 - s6)).sum())
    scale = 4e-3 * (12 * s6**2 - 6 * s6) / dist2
    forces = (scale[:, :, None] * d).sum(1)
    return energy, forces.reshape(x.shape)


def cluster(natoms: int = 8, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    grid = np.array([(i, j, k) for i in range(2) for j in range(2) for k in range(2)], float)[:natoms] * 2.9
    return (grid + rng.normal(0, 0.25, grid.shape)).reshape(1, -1) + 5.0


class Mapper:
    """i-PI's GradientMapper (x -> e, -f) or LineMapper (t -> e, -f.d at x0 + d t), keeping
    every structure evaluated, labelled with the current step."""

    def __init__(self, potential=lennard_jones):
        self.potential = potential
        self.points: list[tuple[np.ndarray, int]] = []
        self.step = 0
        self.x0 = self.d = None

    def _evaluate(self, q):
        self.q = np.array(q, float)
        self.points.append((self.q.copy(), self.step + 1))
        self.e, self.f = self.potential(self.q)
        return self.e, self.f

    def __call__(self, x):  # GradientMapper
        e, f = self._evaluate(x)
        return e, -f

    def line(self, t):  # LineMapper
        e, f = self._evaluate(self.x0 + self.d * t)
        return e, -np.dot(f.flatten(), self.d.flatten())


def run_approx(mode: str, x: np.ndarray, steps: int, potential=lennard_jones) -> Mapper:
    """BFGSOptimizer.step / LBFGSOptimizer.step without fixed atoms."""
    gm = Mapper(potential)
    e, f = potential(x)  # the system's own forces, on the first structure
    d = np.zeros_like(x)
    invhessian = np.eye(x.size)
    qlist, glist = np.zeros((6, x.size)), np.zeros((6, x.size))
    for step in range(steps):
        gm.step = step
        if step == 0:
            d += f / np.sqrt(np.dot(f.flatten(), f.flatten()))
        if mode == "bfgs":
            BFGS(x.copy(), d, gm, (e, -f), invhessian, 100.0, TOL, 100)
        else:
            L_BFGS(x.copy(), d, gm, qlist, glist, (e, -f), 100.0, TOL, 100, 6, 1, step)
        x, e, f = gm.q.copy(), gm.e, gm.f  # beads.q = dbeads.q; transfer_forces
    return gm


def run_brent(mode: str, x: np.ndarray, steps: int, potential=lennard_jones) -> Mapper:
    """SDOptimizer.step / CGOptimizer.step without fixed atoms (adaptive step 1)."""
    lm = Mapper(potential)
    e, f = potential(x)
    init_step, old_f, old_d = 1e-3, None, None
    for step in range(steps):
        lm.step = step
        direction = f
        if mode == "cg" and step > 0:
            beta = np.dot((f - old_f).flatten(), f.flatten()) / np.dot(old_f.flatten(), old_f.flatten())
            direction = f + max(0.0, beta) * old_d
        old_f, old_d = f, direction
        unit = direction / np.sqrt(np.dot(direction.flatten(), direction.flatten()))
        lm.x0, lm.d = x.copy(), unit
        min_brent(
            lm.line, fdf0=(e, np.dot(f.flatten(), unit.flatten())), x0=0.0, tol=TOL, itmax=100, init_step=init_step
        )
        init_step = 0.1 * np.linalg.norm(np.abs(lm.q - lm.x0))
        x, e, f = lm.q.copy(), lm.e, lm.f
    return lm


def labels(search: str, start: np.ndarray, mapper: Mapper, first_step: int = 0) -> tuple[list[int], list[int]]:
    line = OptimiserSteps(search, start, first_step)
    return [line.place(q) for q, _ in mapper.points], [first_step + step for _, step in mapper.points]


@pytest.mark.parametrize("mode", ["bfgs", "lbfgs", "sd", "cg"])
def test_every_evaluation_gets_its_optimiser_step(mode):
    """Labels equal i-PI's steps, with steps of several evaluations (backtracking, Brent)."""
    x = cluster()
    mapper = run_approx(mode, x, 15) if mode in ("bfgs", "lbfgs") else run_brent(mode, x, 10)
    got, want = labels("approx" if mode in ("bfgs", "lbfgs") else "brent", x, mapper)
    assert got == want
    per_step = np.bincount(want)
    assert per_step.max() > 1 and len(per_step) == (16 if mode in ("bfgs", "lbfgs") else 11)


def test_positions_in_other_units_and_a_restart_step():
    """Angstrom instead of Bohr (a scale: the lines stay lines), from a RESTART's step 40."""
    x = cluster(seed=3)
    mapper = run_approx("lbfgs", x, 10)
    for k, (q, step) in enumerate(mapper.points):
        mapper.points[k] = (q * 0.5291772105638411, step)
    got, want = labels("approx", x * 0.5291772105638411, mapper, first_step=40)
    assert got == want and got[0] == 41


def test_lbfgs_skipped_update_goes_back_to_the_start_and_a_zero_direction_repeats():
    """L_BFGS's skipped update (d = -d_x) puts the next step's point back at the previous
    start, on the old line; a zero direction evaluates the previous structure again: both
    open a step."""
    s = np.array([1.0, 2.0, 3.0, 4.0])
    d = np.array([0.3, -0.2, 0.1, 0.05])
    line = OptimiserSteps("approx", s, 0)
    assert [line.place(s + a * d) for a in (1.0, 0.5, 0.1)] == [1, 1, 1]
    s1 = s + 0.1 * d
    assert line.place(s1 - 0.1 * d) == 2  # the skipped update: back at step 1's start
    assert line.place(s) == 3  # a zero direction: the previous structure again
    assert line.place(s + np.array([0.0, 0.1, 0.0, 0.0])) == 4  # off the line
    assert line.place(s + np.array([0.0, 0.05, 0.0, 0.0])) == 4  # backtracking on it


def test_damped_bfgs_is_one_evaluation_per_step():
    line = OptimiserSteps("single", np.zeros(3), 5)
    assert [line.place(np.full(3, 0.1 * k)) for k in range(3)] == [6, 7, 8]


def ids_with_clone(first_step: int = 0) -> RequestIds:
    start = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    return RequestIds((Series(0, "", 0, 1, "approx"),), {0: 0}, first_step, {1: Clone(0, start)})


def test_request_ids_of_an_optimiser(caplog):
    """The system's own id: its first structure only. The clone's: its line searches.
    An id of neither (an estimator's clone): no rows, said once."""
    ids = ids_with_clone(first_step=3)
    start = ids.clones[1].start
    assert ids.locate(0, 0) == (0, 3)
    assert ids.locate(0, 1) is None
    assert ids.locate(1, 0, start + 0.1) == (0, 4)
    assert ids.locate(1, 1, start + 0.05) == (0, 4)
    assert ids.locate(1, 2, start + np.array([0.0, 0.1, 0, 0, 0, 0])) == (0, 5)
    with caplog.at_level(logging.INFO):
        assert ids.locate(2, 0) is None and ids.locate(3, 0) is None and ids.locate(2, 1) is None
    said = [r for r in caplog.records if "no bead of a system's trajectory" in r.getMessage()]
    assert len(said) == 1 and "request id 2" in said[0].getMessage()
    with pytest.raises(ValueError):
        ids.locate(1, 3)
    assert ids.batch_beads(0, 8) == 1 and ids.batch_beads(1, 8) == 1


def test_a_clone_met_in_the_middle_gets_no_rows(caplog):
    """A driver that did not see the clone's first evaluations (it replaced another)
    cannot know where the line searches stand: no rows, one warning."""
    ids = ids_with_clone()
    with caplog.at_level(logging.WARNING):
        assert ids.locate(1, 5, ids.clones[1].start + 0.1) is None
        assert ids.locate(1, 6, ids.clones[1].start + 0.2) is None
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "evaluation 5, but 0 were seen here" in warned[0].getMessage()


def minimize_xml(tmp_path, mode: str) -> str:
    shutil.copy(IPI_INPUTS / "init.xyz", tmp_path / "init.xyz")
    xml = f"""<simulation verbosity='quiet'>
  <total_steps> 5 </total_steps>
  <ffsocket name='dp' mode='unix'><address> nowhere </address></ffsocket>
  <system>
    <initialize nbeads='1'><file mode='xyz' units='angstrom'> init.xyz </file></initialize>
    <forces> <force forcefield='dp'/> </forces>
    <motion mode='minimize'><optimizer mode='{mode}'/></motion>
  </system>
</simulation>
"""
    path = tmp_path / f"{mode}.xml"
    path.write_text(xml)
    return str(path)


@pytest.mark.parametrize(
    ("mode", "search"), [("bfgs", "approx"), ("lbfgs", "approx"), ("sd", "brent"), ("cg", "brent")]
)
def test_the_optimisers_clone_is_read_off_the_bound_input(tmp_path, mode, search):
    """i-PI binds the optimiser's clone with the system (read_only): the system's id 0,
    the clone's 1, starting from the input's structure; the estimators' clones (2, 3) are
    neither."""
    ipi = read_ipi_input(minimize_xml(tmp_path, mode))
    assert ipi.ids.series == (Series(0, "", 0, 1, search),)
    assert dict(ipi.ids.index) == {0: 0} and list(ipi.ids.clones) == [1]
    np.testing.assert_array_equal(ipi.ids.clones[1].start, ipi.template.positions.reshape(-1))
    with pytest.raises(ConfigError, match="use one connection, not --connections 2"):
        RunConfig(models=("m0.pth",), connections=2).with_ipi_input(ipi)


def test_an_optimiser_whose_steps_are_not_told_is_said(tmp_path, caplog):
    """bfgstrm (trust radius: its tries are not on one line): its first structure's row
    only, one warning when the input is read."""
    with caplog.at_level(logging.WARNING):
        ipi = read_ipi_input(minimize_xml(tmp_path, "bfgstrm"))
    assert ipi.ids.series[0].optimiser == "unknown" and not ipi.ids.clones
    assert ipi.ids.locate(0, 0) == (0, 0) and ipi.ids.locate(0, 1) is None and ipi.ids.locate(1, 0) is None
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert (
        len(warned) == 1
        and "<optimizer mode='bfgstrm'>" in warned[0]
        and "rows for its first structure only" in warned[0]
    )
