"""Invariant 4: a repeated command changes nothing and answers the same outcome."""

from __future__ import annotations

import json

from adapters.bootstrap import Engine, connect
from tests import builders as b
from tests.helpers import accepted, cell_with_ready_node, event_count, one, run, state


def test_same_command_twice_in_separate_batches(engine: Engine) -> None:
    cell_with_ready_node(engine)
    create = b.create("x")
    first = one(engine, create)
    before = event_count(engine)
    second = one(engine, create)
    assert second == first
    assert event_count(engine) == before
    assert len([i for i in engine.processor.world.aggregates.values()
                if type(i).__name__ == "Instance"]) == 1


def test_same_command_twice_in_one_batch(engine: Engine) -> None:
    cell_with_ready_node(engine)
    create = b.create("x")
    first, second = run(engine, create, create)
    assert first == second and first.status == "accepted"


def test_rejected_command_repeated_gives_the_same_rejection(engine: Engine) -> None:
    stop = b.tenant("StopInstance", "ghost", 1)
    first = one(engine, stop)
    assert first.status == "rejected"
    cell_with_ready_node(engine)
    accepted(engine, b.create("ghost"))
    assert one(engine, stop) == first  # same command_id: the recorded outcome, not a new one
    assert state(engine, "ghost") == "scheduled"


def test_report_twice_with_different_ids_is_a_stale_no_op(engine: Engine) -> None:
    cell_with_ready_node(engine)
    accepted(engine, b.create("x"), b.report("ReportInstanceRunning", 5, instance_id="x"))
    before = event_count(engine)
    again = one(engine, b.report("ReportInstanceRunning", 5, instance_id="x"))
    assert again.status == "accepted" and again.events == []
    assert event_count(engine) == before + 1  # only the outcome log entry


def test_outcomes_survive_a_restart(store_url: str) -> None:
    if store_url == "memory://":
        return  # nothing survives a process in memory
    create = b.create("x")
    with connect(store_url) as engine:
        cell_with_ready_node(engine)
        first = one(engine, create)
    with connect(store_url) as engine:
        assert one(engine, create) == first
        assert json.loads(first.to_json())["events"]
