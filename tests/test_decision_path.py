"""The decision path's shortcuts answer as the long way did: a command id is looked up once
per batch, yet an id reused later in the same batch is still caught; outcomes carry their
principal from the start; a batch's stored positions move the cell's position."""

from __future__ import annotations

import json

from adapters.bootstrap import Engine
from tests import builders as b
from tests.helpers import cell_with_ready_node, event_count, run, state


def test_an_id_reused_later_in_the_same_batch_is_refused(engine: Engine) -> None:
    cell_with_ready_node(engine)
    create = {**b.create("x"), "command_id": "same"}
    other = {**b.create("y"), "command_id": "same"}
    first, reused, again = run(engine, create, other, create)
    assert first.status == "accepted" and first.principal == f"account:{b.ACCOUNT}"
    assert reused.status == "rejected"
    assert [r.code for r in reused.reasons] == ["command_id_reused"]
    assert again == first  # the same command again answers its outcome of this very batch
    assert state(engine, "x") == "scheduled"
    assert not [i for i in engine.processor.world.instances if i[2] == "y"]


def test_a_command_on_the_wrong_topic_squats_no_id_within_its_batch(engine: Engine) -> None:
    cell_with_ready_node(engine)
    report = {**b.report("ReportInstanceRunning", 2, instance_id="x"), "command_id": "c1"}
    create = {**b.create("x"), "command_id": "c1"}
    wrong, right = engine.apply([json.dumps(report), json.dumps(create)], role="tenant")
    assert [r.code for r in wrong.reasons] == ["wrong_topic"]
    assert right.status == "accepted" and state(engine, "x") == "scheduled"


def test_every_outcome_names_its_principal_and_so_does_its_log_entry(engine: Engine) -> None:
    cell_with_ready_node(engine)
    outcomes = run(engine, b.create("x"), b.tenant("StopInstance", "ghost", 1))
    assert [o.principal for o in outcomes] == [f"account:{b.ACCOUNT}"] * 2
    assert [o.status for o in outcomes] == ["accepted", "rejected"]
    entries = [e for _, event in engine.app.read() for e in getattr(event, "outcomes", [])]
    last = entries[-2:]
    assert [list(e)[:4] for e in last] == [["schema_version", "command_id", "principal",
                                            "status"]] * 2
    assert [e["principal"] for e in last] == [f"account:{b.ACCOUNT}"] * 2


def test_the_cell_position_is_the_newest_stored_event(engine: Engine) -> None:
    cell_with_ready_node(engine)
    run(engine, b.create("x"))
    assert engine.processor.position[b.CELL] == engine.app.recorder.max_notification_id()
    assert event_count(engine) == engine.app.recorder.max_notification_id()
