"""``ensemble-driver devi`` under mpiexec: how its ranks share the models and the frames
(:class:`devi.evaluation.DeviLayout`), without a process (the command itself:
tests/peers/test_posthoc.py)."""

from __future__ import annotations

import pytest

from ensemble_driver.devi.evaluation import DeviLayout


@pytest.mark.parametrize("ranks,models", [(1, 4), (2, 4), (3, 4), (4, 4), (4, 2), (5, 2), (8, 3), (6, 2), (2, 3)])
def test_devi_layout_covers_every_model_and_frame_once(ranks, models):
    layouts = [DeviLayout.of(r, ranks, models) for r in range(ranks)]
    groups = {lay.groups for lay in layouts}
    assert len(groups) == 1
    g = groups.pop()
    for group in range(g):
        members = [lay for lay in layouts if lay.group == group]
        assert sorted(lay.position for lay in members) == list(range(len(members)))
        held = sorted(m for lay in members for m in lay.models)
        assert held == list(range(models))  # each model exactly once in each group
        assert (
            max(len(lay.models) for lay in members) - min(len(lay.models) for lay in members) <= 1
            or len(members) > models
        )
    # the busiest rank's share (frames x models) is the least any number of groups gives,
    # and no more than splitting the models alone (one group) gives
    busiest = max(len(lay.models) for lay in layouts) / g
    assert busiest == pytest.approx(min(-(-models // (ranks // n)) / n for n in range(1, ranks + 1)))
    assert busiest <= -(-models // ranks)
    if ranks <= models:
        assert all(lay.models for lay in layouts)  # every rank works
    if models % ranks == 0:
        assert g == 1  # the models split evenly: every rank loads only its own
    if (ranks, models) == (2, 3):
        assert g == 2 and all(lay.models == (0, 1, 2) for lay in layouts)  # half the frames each, all models
