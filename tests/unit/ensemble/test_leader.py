"""The leader's scheduling, with a fake communicator that holds follower results back.

A real follower cannot be made slow on demand, so these tests inject that condition:
they show that the structure goes to the followers before model 0 runs, that the reply
never waits for them, that steps without a deviation touch no other rank, that rows are
written in order as results arrive, and that a follower's failure ends the run.
(The real thing, under mpiexec and i-PI, is in test_ensemble.py.)
"""

from __future__ import annotations

import numpy as np
import pytest

from ensemble_driver.ensemble import messages
from ensemble_driver.ensemble.jobs import JobPipeline
from ensemble_driver.ensemble.layout import Layout
from ensemble_driver.ensemble.leader import DeviationSettings, Leader
from ensemble_driver.ensemble.rows import BeadRows
from ensemble_driver.errors import ModelError
from ensemble_driver.models.local import LocalModel
from ensemble_driver.models.results import Evaluation
from ensemble_driver.outputs.model_devi import BeadFiles
from ensemble_driver.outputs.sink import RowSink
from ensemble_driver.wire.session import Request

NAT = 2


class FakeRequest:
    def __init__(self, done: bool):
        self.done = done
        self.cancelled = False

    def Test(self):  # noqa: N802
        return self.done

    def Cancel(self):  # noqa: N802
        self.cancelled = True

    def Wait(self):  # noqa: N802
        pass


class FakeComm:
    """Sends complete at once; receives complete when the test delivers them."""

    def __init__(self, events: list):
        self.events = events
        self.receives: list[tuple[int, np.ndarray, FakeRequest]] = []
        self.sent: list[tuple[int, np.ndarray]] = []
        self.errors: dict[int, str] = {}

    def Isend(self, buf, dest, tag):  # noqa: N802
        self.events.append(("send", dest, float(buf[0])))
        self.sent.append((dest, np.array(buf)))
        return FakeRequest(True)

    def Irecv(self, buf, source, tag):  # noqa: N802
        req = FakeRequest(False)
        self.receives.append((source, buf, req))
        return req

    def Iprobe(self, source, tag):  # noqa: N802
        return source in self.errors

    def recv(self, source, tag):
        return self.errors.pop(source)

    def deliver(self, index: int, seq: int, forces: list[np.ndarray], virials: list[np.ndarray]):
        source, buf, req = self.receives[index]
        messages.pack_results(buf, seq, [0.0] * len(forces), forces, virials)
        req.done = True


class FakeModel:
    def __init__(self, events: list, name: str, scale: float):
        self.events, self.path, self.scale = events, name, scale

    def evaluate(self, positions, cell, atom_types):
        self.events.append(("eval", self.path))
        return Evaluation(1.0, positions * self.scale, np.eye(3) * self.scale)

    def evaluate_batch(self, positions, cells, atom_types):
        from ensemble_driver.models.results import BatchEvaluation

        self.events.append(("eval_batch", self.path, len(positions)))
        n = len(positions)
        return BatchEvaluation(np.ones(n), positions * self.scale, np.repeat(np.eye(3)[None], n, 0) * self.scale)


def make_leader(tmp_path, events, layout, local_scales, **settings):
    comm = FakeComm(events)
    local = [LocalModel(i, FakeModel(events, f"m{i}", s), np.zeros(NAT, np.int32)) for i, s in local_scales]
    sink = BeadRows(RowSink(BeadFiles([str(tmp_path / "devi.out")], atomic=False, mode="new")))
    jobs = JobPipeline(comm, layout, local[1:], natoms=NAT)
    leader = Leader(jobs, local[0], DeviationSettings(**settings), sink, periodic=False)
    return leader, comm


def request(step: int, rid: int = 0) -> Request:
    return Request(rid=rid, step=step, cell=np.eye(3) * 10, positions=np.arange(6.0).reshape(NAT, 3) + step)


def rows(tmp_path) -> list[list[str]]:
    return [line.split() for line in (tmp_path / "devi.out").read_text().splitlines()[1:]]


def test_structure_goes_out_first_and_the_reply_does_not_wait(tmp_path):
    events: list = []
    layout = Layout(((0,), (1,), (2,)))
    leader, comm = make_leader(tmp_path, events, layout, [(0, 1.0)], out_freq=2)

    reply = leader(request(0))
    # both followers got the structure before model 0 was evaluated
    assert events == [("send", 1, messages.KIND_WORK), ("send", 2, messages.KIND_WORK), ("eval", "m0")]
    np.testing.assert_array_equal(reply.forces, request(0).positions)  # model 0's answer
    leader.after_reply()  # nothing has arrived: returns at once, no row yet
    assert rows(tmp_path) == []

    events.clear()
    leader(request(1))  # not a deviation step: no other rank involved
    leader.after_reply()
    assert events == [("eval", "m0")]
    assert len(comm.sent) == 2

    # the results of step 0 arrive; the next poll writes the row
    f0 = request(0).positions
    comm.deliver(0, 0, [f0 + 1.0], [np.eye(3)])
    leader.after_reply()
    assert rows(tmp_path) == []  # rank 2 still missing
    comm.deliver(1, 0, [f0 - 1.0], [np.eye(3)])
    leader.after_reply()
    assert [r[0] for r in rows(tmp_path)] == ["0"]
    # three models with forces F, F+1, F-1 on every component: e_i = sqrt(3 * 2/3)
    assert float(rows(tmp_path)[0][4]) == pytest.approx(np.sqrt(2.0), rel=1e-6)
    assert leader.finish(None) is None
    assert [(dest, buf[0], buf[1]) for dest, buf in comm.sent[-2:]] == [(1, 0.0, 0.0), (2, 0.0, 0.0)]


def test_rows_are_written_in_step_order(tmp_path):
    events: list = []
    leader, comm = make_leader(tmp_path, events, Layout(((0,), (1,))), [(0, 1.0)], out_freq=1)
    for step in range(3):
        leader(request(step))
        leader.after_reply()
    f = [request(s).positions for s in range(3)]
    comm.deliver(2, 2, [f[2]], [np.eye(3)])  # the last one first: must wait for 0 and 1
    comm.deliver(1, 1, [f[1]], [np.eye(3)])
    leader.after_reply()
    assert rows(tmp_path) == []
    comm.deliver(0, 0, [f[0]], [np.eye(3)])
    leader.after_reply()
    assert [r[0] for r in rows(tmp_path)] == ["0", "1", "2"]


def test_back_pressure_writes_every_row_once(tmp_path, monkeypatch):
    """More deviation jobs than MAX_PENDING_JOBS ahead of the follower: the leader waits
    for the oldest before it dispatches more (the follower catches up while it waits), and
    every step's row is written once, in step order."""
    from ensemble_driver import ranks
    from ensemble_driver.ensemble.jobs import MAX_PENDING_JOBS

    events: list = []
    leader, comm = make_leader(tmp_path, events, Layout(((0,), (1,))), [(0, 1.0)], out_freq=1)

    def answer_all():
        for index, (_, _, req) in enumerate(comm.receives):
            if not req.done:  # one follower, one job per receive, in dispatch order
                comm.deliver(index, index, [request(index).positions], [np.eye(3)])

    real_wait_for = ranks.wait_for

    def wait_for(condition, deadline=None):
        answer_all()
        return real_wait_for(condition, deadline=deadline)

    monkeypatch.setattr(ranks, "wait_for", wait_for)
    steps = MAX_PENDING_JOBS + 5
    for step in range(steps):
        leader(request(step))
        leader.after_reply()
    assert len(rows(tmp_path)) >= steps - MAX_PENDING_JOBS  # the leader waited for some
    answer_all()
    leader.after_reply()
    assert [int(r[0]) for r in rows(tmp_path)] == list(range(steps))


def test_one_rank_evaluates_the_others_after_replying(tmp_path):
    events: list = []
    leader, _ = make_leader(tmp_path, events, Layout(((0, 1, 2),)), [(0, 1.0), (1, 2.0), (2, 3.0)], out_freq=1)
    leader(request(0))
    assert events == [("eval", "m0")]  # the reply is ready before models 1 and 2 run
    leader.after_reply()
    assert events == [("eval", "m0"), ("eval", "m1"), ("eval", "m2")]
    assert [r[0] for r in rows(tmp_path)] == ["0"]


def test_follower_failure_ends_the_run_after_the_reply(tmp_path):
    events: list = []
    leader, comm = make_leader(tmp_path, events, Layout(((0,), (1,))), [(0, 1.0)], out_freq=1)
    leader(request(0))
    comm.errors[1] = "cannot evaluate: out of memory"
    with pytest.raises(ModelError, match="rank 1: cannot evaluate: out of memory"):
        leader.after_reply()
    error = leader.finish(ModelError("rank 1: cannot evaluate: out of memory"))
    assert error is not None and error.exit_status == 5
    assert comm.receives[0][2].cancelled  # the abandoned receive does not outlive the run
    assert comm.sent[-1][1][:2].tolist() == [messages.KIND_STOP, 5.0]


def test_request_ids_beyond_nbeads_get_no_rows(tmp_path, caplog):
    events: list = []
    leader, comm = make_leader(tmp_path, events, Layout(((0,), (1,))), [(0, 1.0)], out_freq=1, nbeads=1)
    leader(request(0, rid=3))
    assert comm.sent == [] and "request id 3 >= --nbeads 1" in caplog.text


class ScriptedComm:
    """The leader's side for a follower: hands out queued messages, records what comes back."""

    def __init__(self, messages: list[np.ndarray]):
        self.messages = list(messages)
        self.results: list[np.ndarray] = []
        self.errors: list[str] = []

    def Irecv(self, buf, source, tag):  # noqa: N802
        message = self.messages.pop(0)
        buf[: len(message)] = message
        return FakeRequest(True)

    def Isend(self, buf, dest, tag):  # noqa: N802
        self.results.append(np.array(buf))
        return FakeRequest(True)

    def send(self, obj, dest, tag):
        self.errors.append(obj)


def work_message(seq: int, step: int) -> np.ndarray:
    buf = np.empty(messages.work_size(NAT))
    messages.pack_work(buf, seq, 0, step, None, np.arange(6.0).reshape(NAT, 3))
    return buf


def test_follower_reports_a_failing_model_then_waits_for_the_leader():
    from ensemble_driver.ensemble.workers import follower_loop
    from ensemble_driver.errors import ReportedError

    class Failing:
        path = "m2.pth"

        def __init__(self):
            self.calls = 0

        def evaluate(self, positions, cell, atom_types):
            self.calls += 1
            if self.calls == 2:
                return Evaluation(float("nan"), positions, np.eye(3))
            return Evaluation(1.0, positions, np.eye(3))

    model = Failing()
    stop = np.array([messages.KIND_STOP, 5.0])
    comm = ScriptedComm([work_message(0, 0), work_message(1, 5), work_message(2, 10), stop])
    with pytest.raises(ReportedError) as stopped:
        follower_loop(comm, [LocalModel(2, model, np.zeros(NAT, np.int32))], natoms=NAT)
    assert stopped.value.exit_status == 5 and stopped.value.wait_for_leader
    assert len(comm.results) == 1  # step 0's result; none for the failed step
    assert comm.errors == ["model 2 (m2.pth) returned non-finite energy, forces or virial at step 5 of bead 0"]
    assert model.calls == 2  # after reporting, it evaluates nothing more


def test_follower_exits_0_after_a_clean_run():
    from ensemble_driver.ensemble.workers import follower_loop

    comm = ScriptedComm([work_message(0, 0), np.array([messages.KIND_STOP, 0.0])])
    assert follower_loop(comm, [LocalModel(1, FakeModel([], "m1", 1.0), np.zeros(NAT, np.int32))], natoms=NAT) == 0
    seq, energies, forces, _ = messages.unpack_results(comm.results[0], NAT, 1)
    assert seq == 0 and energies[0] == 1.0


def batch_request(rid: int, beads: list[int], step: int):
    """A batched POSDATA: the given beads' structures (a repeated bead is padding)."""
    from ensemble_driver.wire.session import BatchRequest

    positions = np.array([np.arange(6.0).reshape(NAT, 3) + 10 * b + 0.1 * step for b in beads])
    return BatchRequest(rid, np.repeat(np.eye(3)[None] * 10, len(beads), 0), positions)


@pytest.mark.parametrize(
    "batches",
    [
        # P = 6 beads, batches of 4: the second batch of each step is padded with bead 5
        [(0, [0, 1, 2, 3]), (4, [4, 5, 5, 5])],
        # i-PI's poll thread dispatched before the step was fully queued: 2 real + 2 padding
        [(0, [0, 1, 1, 1]), (2, [2, 3, 4, 5])],
    ],
)
def test_batched_beads_are_resolved_by_the_next_batch(tmp_path, batches):
    events: list = []
    leader, comm = make_leader(tmp_path, events, Layout(((0,), (1,))), [(0, 1.0)], out_freq=2, nbeads=6)
    leader.begin_batches(4, init_every_step=True)
    for step in range(3):
        for rid, beads in batches:
            replies = leader.batch(batch_request(rid, beads, step))
            assert len(replies) == 4
            leader.after_reply()
    leader._resolve_batch(next_rid=None)  # what finish() does at the end of the run
    assert leader.batch_steps == {b: 3 for b in range(6)}  # padding never counted
    # the deviation went out for steps 0 and 2 of every bead, with that bead's structure
    work = [buf for dest, buf in comm.sent if buf[0] == messages.KIND_WORK]
    got = sorted((int(buf[2]), int(buf[3])) for buf in work)
    assert got == sorted((b, s) for b in range(6) for s in (0, 2))
    for buf in work:
        rid, step = int(buf[2]), int(buf[3])
        expected = np.arange(6.0).reshape(NAT, 3) + 10 * rid + 0.1 * step
        np.testing.assert_array_equal(buf[messages.WORK_HEADER + 9 :].reshape(NAT, 3), expected)


@pytest.mark.parametrize("steps", [3, 1])
def test_padding_never_gets_a_row_even_when_step_0_beads_are_all_the_same(tmp_path, steps):
    """--nbeads 8 but a force contracted to 2 beads in batches of 8 (2 real, 6 copies of the
    last): at step 0 every structure is the same, so nothing in the batch tells padding
    from beads; the next step's batch does, and step 0 waits for it. Only beads 0 and 1
    are counted and get rows; a run that ends after step 0 falls back on --nbeads."""
    events: list = []
    leader, comm = make_leader(tmp_path, events, Layout(((0,), (1,))), [(0, 1.0)], out_freq=1, nbeads=8)
    leader.begin_batches(8, init_every_step=True)
    for step in range(steps):
        request = batch_request(0, [0] * 8 if step == 0 else [0, 1, 1, 1, 1, 1, 1, 1], step)
        assert len(leader.batch(request)) == 8
        leader.after_reply()
    leader._resolve_batch(next_rid=None)
    work = sorted((int(buf[2]), int(buf[3])) for dest, buf in comm.sent if buf[0] == messages.KIND_WORK)
    if steps == 3:
        assert leader.batch_steps == {0: 3, 1: 3}
        assert work == [(b, s) for b in (0, 1) for s in range(3)]
    else:
        assert leader.batch_steps == {b: 1 for b in range(8)}


def test_batch_evaluates_each_distinct_structure_once(tmp_path):
    events: list = []
    leader, _ = make_leader(tmp_path, events, Layout(((0,), (1,))), [(0, 1.0)], out_freq=0, nbeads=4)
    leader.begin_batches(4, init_every_step=True)
    replies = leader.batch(batch_request(0, [7, 7, 7, 7], 0))  # step 0: every bead the same
    assert events == [("eval_batch", "m0", 1)]
    assert all(np.array_equal(r.forces, replies[0].forces) for r in replies)
    events.clear()
    leader.batch(batch_request(0, [0, 1, 2, 2], 1))
    assert events == [("eval_batch", "m0", 3)]


def test_batched_transport_refuses_extras(tmp_path):
    from ensemble_driver.errors import UnsupportedTransport

    leader, _ = make_leader(tmp_path, [], Layout(((0,), (1,))), [(0, 1.0)], out_freq=1, extras=True)
    with pytest.raises(UnsupportedTransport, match="--extras cannot be used"):
        leader.begin_batches(4, init_every_step=True)


def test_drain_after_an_error_follows_the_latest_row(tmp_path):
    """After an error the leader waits for the rows in flight: 5 s, or twice what the
    latest row took from dispatch to written (large systems, slow models), at most 20 s."""
    events: list = []
    leader, comm = make_leader(tmp_path, events, Layout(((0,), (1,))), [(0, 1.0)], out_freq=1)
    assert leader.abort_drain_s() == 5.0
    for step, took in ((0, 6.0), (1, 40.0), (2, 0.5)):
        leader(request(step))
        leader.jobs.queue[-1].dispatched -= took  # as if the follower had taken that long
        comm.deliver(step, step, [request(step).positions], [np.eye(3)])
        leader.after_reply()
        assert [r[0] for r in rows(tmp_path)][-1] == str(step)
        expected = {0: 12.0, 1: 20.0, 2: 5.0}[step]
        assert leader.abort_drain_s() == pytest.approx(expected, abs=0.5)
    assert leader.finish(None) is None


def test_request_ids_that_are_not_beads_are_named_once_with_the_fix():
    from ensemble_driver.ensemble.steps import ids_warning

    assert ids_warning({0: 7, 1: 7, 2: 7, 3: 7, 9: 1}, 4) is None  # beads, and a clone now and then
    contracted = ids_warning({0: 7, 1: 7}, 8)
    assert contracted.startswith("beads 2..7 of --nbeads 8 never came") and "(or --nbeads 2)" in contracted
    second_force = ids_warning({2: 7, 3: 7}, 2)
    assert second_force.startswith("beads 0..1 of --nbeads 2 never came") and "--nbeads" not in second_force[40:]
    two_systems = ids_warning({0: 7, 1: 7, 2: 1, 7: 7, 8: 7}, 2)
    assert two_systems.startswith("request ids 7..8 came every step") and "--ipi-input" in two_systems


def test_one_client_check_tells_a_second_job_on_the_socket():
    """--ipi-input: every bead of a system comes once a step; beads more than one step
    apart mean another client takes requests (steps.OneClient), said once."""
    from ensemble_driver.ensemble.steps import OneClient
    from ensemble_driver.wire.ipi_input import RequestIds, Series

    two_systems = RequestIds(
        tuple(Series(system, "", bead) for system in (0, 1) for bead in (0, 1)), {r: r for r in range(4)}
    )
    alone = OneClient(two_systems)
    for step in range(5):
        for series in (1, 0, 3, 2):  # any order within a step; one system may run ahead of the other
            if series < 2 or step < 2:
                alone.seen(series, step)
    alone.seen(1, 5)  # a replaced driver: the bead resent is one step behind the other
    assert alone.warning is None
    shared = OneClient(two_systems)
    for series, step in ((0, 0), (1, 0), (0, 1), (0, 2)):  # bead 1 went to another client at step 1
        shared.seen(series, step)
    assert shared.warning is not None and "--connections" in shared.warning and "bead 0 is at step 2" in shared.warning
