"""Restarts (issue 14): CrashLoopBackOff is enforced, and a retry budget ends a crash loop."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from adapters.bootstrap import Engine
from engine.domain.instance import Instance
from tests import builders as b
from tests.helpers import accepted, cell_with_ready_node, instance, one, state


def _run(t: float, **fields: Any) -> dict[str, Any]:
    return b.report("ReportInstanceRunning", t, instance_id="x", **fields)


def _crash(t: float, code: int = 137) -> dict[str, Any]:
    return b.report("ReportContainerExited", t, instance_id="x", container="c0", exit_code=code)


def _restarts(engine: Engine) -> list[Instance.Restarting]:
    return [e for _, e in engine.app.read() if isinstance(e, Instance.Restarting)]


def _since(engine: Engine) -> float:
    return (instance(engine, "x").state_since - b.T0).total_seconds()


def test_a_run_reported_during_the_back_off_is_held_until_it_ends(engine: Engine) -> None:
    cell_with_ready_node(engine)
    accepted(engine, b.create("x"), _run(2), _crash(10))
    early = one(engine, _run(15))  # the first back-off is 10 s: not before 20 s
    assert early.status == "accepted"
    assert early.note and early.note.startswith("held: back-off until")
    assert state(engine, "x") == "restarting" and _since(engine) == 10
    assert one(engine, b.tick(19)).note is None  # still in the back-off
    assert state(engine, "x") == "restarting"
    began = one(engine, b.tick(25))
    assert began.note == "1 held run(s) began"
    assert state(engine, "x") == "running" and _since(engine) == 20  # not at the tick


def test_a_held_run_begins_before_a_later_report(engine: Engine) -> None:
    cell_with_ready_node(engine)
    accepted(engine, b.create("x"), _run(2), _crash(10), _run(12))
    accepted(engine, _crash(60))  # ran from 20 s (held), crashed at 60 s: second back-off
    restarts = _restarts(engine)
    assert state(engine, "x") == "restarting" and restarts[-1].backoff_seconds == 20
    runs = [e.timestamp for _, e in engine.app.read() if isinstance(e, Instance.Running)]
    assert runs[-1] == b.T0 + timedelta(seconds=20)
    # A crash during the back-off (the held run never began) is another restart.
    accepted(engine, _run(61), _crash(62))
    assert state(engine, "x") == "restarting" and _restarts(engine)[-1].backoff_seconds == 40


def test_an_early_run_never_moves_the_bill_forward(engine: Engine) -> None:
    cell_with_ready_node(engine)
    accepted(engine, b.create("x", retry_budget={"restarts": 100}), _run(2))
    storm = []
    for k in range(40):  # an agent whose runs come far too soon
        storm += [_crash(3 + k * 0.02), _run(3.01 + k * 0.02)]
    accepted(engine, *storm, b.tenant("StopInstance", "x", 4))
    meter = engine.processor.world.billing.cells[b.CELL]
    us = int(b.T0.timestamp() * 1_000_000)
    assert meter.instances[(b.ACCOUNT, "x")].intervals == [[us + 2_000_000, us + 4_000_000]]


def test_the_back_off_doubles_to_five_minutes(engine: Engine) -> None:
    cell_with_ready_node(engine)
    accepted(engine, b.create("x"))
    _crash_loop(engine, 8)
    assert [e.backoff_seconds for e in _restarts(engine)] == [10, 20, 40, 80, 160, 300, 300,
                                                              300]


def test_ten_minutes_of_running_resets_the_back_off(engine: Engine) -> None:
    cell_with_ready_node(engine)
    accepted(engine, b.create("x"), _run(2), _crash(3), _run(13), _crash(14), _run(34),
             _crash(35), _run(75))
    accepted(engine, _crash(75 + 600), _run(75 + 610), _crash(75 + 611))
    assert [e.backoff_seconds for e in _restarts(engine)] == [10, 20, 40, 10, 20]


def _crash_loop(engine: Engine, crashes: int, start: float = 2) -> float:
    """Run, then crash one second into each run, each run as soon as the back-off allows."""
    t = start
    accepted(engine, _run(t))
    for _ in range(crashes):
        t += 1
        accepted(engine, _crash(t))
        if state(engine, "x") != "restarting":
            break
        until = instance(engine, "x").backoff_until
        assert until is not None
        t = (until - b.T0).total_seconds()
        accepted(engine, _run(t))
    return t


def test_the_default_budget_allows_ten_restarts_an_hour(engine: Engine) -> None:
    cell_with_ready_node(engine)
    accepted(engine, b.create("x"))
    t = _crash_loop(engine, 10)
    assert state(engine, "x") == "running" and instance(engine, "x").restarts == 10
    out = one(engine, _crash(t + 1))  # the 11th restart within the hour
    x = instance(engine, "x")
    assert out.status == "accepted" and x.state == "failed" and x.restarts == 10
    failed = [e for _, e in engine.app.read() if isinstance(e, Instance.Failed)]
    assert failed[-1].reason.startswith("retry_budget_exhausted: 10 restarts in 3600 s")


@pytest.mark.parametrize(("window", "then"), [(30, "restarting"), (60, "failed")])
def test_the_budget_is_per_instance_and_counts_only_its_window(engine: Engine, window: int,
                                                               then: str) -> None:
    cell_with_ready_node(engine)
    accepted(engine, b.create("x", retry_budget={"restarts": 2, "window_seconds": window}))
    _crash_loop(engine, 2)  # restarts at 3 s and 14 s; running again at 34 s
    accepted(engine, _crash(35))  # (5 s, 35 s] holds one restart; (-25 s, 35 s] holds two
    assert state(engine, "x") == then


def test_an_exhausted_budget_fails_at_the_crash_and_frees_the_node(engine: Engine) -> None:
    cell_with_ready_node(engine, max_nodes=1)
    accepted(engine, b.create("x", retry_budget={"restarts": 1, "window_seconds": 3600}),
             b.create("y", t=2))
    assert state(engine, "y") == "unschedulable"
    t = _crash_loop(engine, 1)  # one restart: the budget's all
    accepted(engine, _crash(t + 5))
    x = instance(engine, "x")
    assert x.state == "failed" and x.state_since == b.T0 + timedelta(seconds=t + 5)
    assert state(engine, "y") == "scheduled"
    # Billed through every restart (restarting is billed), up to the failure.
    meter = engine.processor.world.billing.cells[b.CELL]
    intervals = meter.instances[(b.ACCOUNT, "x")].intervals
    us = int(b.T0.timestamp() * 1_000_000)
    assert intervals == [[us + 2_000_000, us + int((t + 5) * 1_000_000)]]


def test_a_zero_budget_never_restarts(engine: Engine) -> None:
    cell_with_ready_node(engine)
    accepted(engine, b.create("x", retry_budget={"restarts": 0}), _run(2), _crash(3))
    assert state(engine, "x") == "failed"


def test_the_back_off_and_the_budget_survive_a_restart_of_the_writer(engine: Engine) -> None:
    cell_with_ready_node(engine)
    accepted(engine, b.create("x", retry_budget={"restarts": 1, "window_seconds": 3600}),
             _run(2), _crash(3))
    engine.processor.forget()
    out = one(engine, _run(5))
    assert out.note and out.note.startswith("held") and state(engine, "x") == "restarting"
    engine.processor.forget()
    accepted(engine, _crash(20))
    assert state(engine, "x") == "failed"


def test_retry_budget_is_bounded(engine: Engine) -> None:
    cell_with_ready_node(engine)
    for bad in ({"restarts": 10_001}, {"restarts": -1}, {"window_seconds": 0},
                {"window_seconds": 604_801}, {"restarts": 1, "extra": 1}):
        out = one(engine, b.create("x", retry_budget=bad))
        assert out.status == "rejected" and out.reasons[0].field.startswith("retry_budget"), bad
