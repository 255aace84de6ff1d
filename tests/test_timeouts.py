"""Start timeouts (issue 14): `scheduled` and `starting` no longer wait forever for a report."""

from __future__ import annotations

from datetime import timedelta

from adapters.bootstrap import Engine
from adapters.infra_commands import InfraTranslator
from schemas.infra import DeletePod
from tests import builders as b
from tests.helpers import accepted, cell_with_ready_node, instance, one, state


def _billed(engine: Engine, name: str) -> list[list[int | None]]:
    meter = engine.processor.world.billing.cells[b.CELL]
    return meter.instances[(b.ACCOUNT, name)].intervals


def _us(seconds: float) -> int:
    return int((b.T0 + timedelta(seconds=seconds)).timestamp() * 1_000_000)


def test_scheduled_times_out_at_its_deadline_not_at_the_tick(engine: Engine) -> None:
    cell_with_ready_node(engine)
    accepted(engine, b.create("x", t=1))  # scheduled at 1 s: the default limit is 300 s
    accepted(engine, b.tick(300))
    assert state(engine, "x") == "scheduled"
    out = one(engine, b.tick(420))
    assert out.status == "accepted" and out.note and "timed out 1 start" in out.note
    x = instance(engine, "x")
    assert x.state == "failed"
    assert x.state_since == b.T0 + timedelta(seconds=301)
    assert _billed(engine, "x") == []  # scheduled is not billed


def test_starting_times_out_and_billing_stops_at_the_deadline(engine: Engine) -> None:
    cell_with_ready_node(engine)
    accepted(engine, b.create("x", t=1),
             b.report("ReportInstanceStarting", 2, instance_id="x"))
    accepted(engine, b.tick(601))
    assert state(engine, "x") == "starting"
    accepted(engine, b.tick(900))
    x = instance(engine, "x")
    assert x.state == "failed" and x.state_since == b.T0 + timedelta(seconds=602)
    assert _billed(engine, "x") == [[_us(2), _us(602)]]  # to the deadline, not to 900 s
    # The reason names the timeout, as the projection and the API show it.
    engine.update_projections()
    ended = [e for _, e in engine.app.read() if type(e).__qualname__ == "Instance.Failed"]
    assert [e.reason.split(":")[0] for e in ended] == ["start_timeout"]


def test_the_scheduled_timeout_is_configured_per_pool(engine: Engine) -> None:
    cell_with_ready_node(engine, scheduled_timeout_seconds=30)
    accepted(engine, b.create("x", t=1), b.tick(30))
    assert state(engine, "x") == "scheduled"
    accepted(engine, b.tick(32))
    assert state(engine, "x") == "failed"


def test_the_starting_timeout_is_configured_per_pool(engine: Engine) -> None:
    cell_with_ready_node(engine, starting_timeout_seconds=40)
    accepted(engine, b.create("x", t=1), b.report("ReportInstanceStarting", 5, instance_id="x"),
             b.tick(44))
    assert state(engine, "x") == "starting"
    accepted(engine, b.tick(46))
    x = instance(engine, "x")
    assert x.state == "failed" and x.state_since == b.T0 + timedelta(seconds=45)


def test_only_scheduled_and_starting_time_out(engine: Engine) -> None:
    nodes = [f"general-0000{n}" for n in (1, 2, 3)]
    accepted(engine, b.price_book(), b.networks(), b.pool(min_nodes=3),
             *[b.report("ReportNodeReady", 0.5, node_id=n) for n in nodes])
    accepted(engine, *[b.create(name, t=1) for name in ("x", "y", "z")])
    on = {name: instance(engine, name).node_id for name in ("x", "y", "z")}
    accepted(engine, b.report("ReportInstanceRunning", 2, instance_id="x", node_id=on["x"]),
             b.report("ReportInstanceRunning", 2, instance_id="y", node_id=on["y"]),
             b.report("ReportContainerExited", 3, instance_id="y", node_id=on["y"],
                      container="c0", exit_code=1),
             b.report("ReportInstanceStarting", 2, instance_id="z", node_id=on["z"]),
             b.tick(86_400))
    assert [state(engine, n) for n in ("x", "y", "z")] == ["running", "restarting", "failed"]


def test_a_timed_out_instance_frees_its_room_and_its_pod_is_deleted(engine: Engine) -> None:
    # One dedicated node at most: y waits until x gives the node up.
    cell_with_ready_node(engine, max_nodes=1)
    accepted(engine, b.create("x", t=1), b.create("y", t=2))
    assert state(engine, "y") == "unschedulable"
    accepted(engine, b.tick(400))
    assert state(engine, "x") == "failed" and state(engine, "y") == "scheduled"
    y = instance(engine, "y")
    assert y.state_since == b.T0 + timedelta(seconds=400)  # placed at the tick, not before
    translator = InfraTranslator.of(engine.app)
    deletes = [cmd for _, event in engine.app.read() for cmd in translator.translate(event)
               if isinstance(cmd, DeletePod)]
    assert [(d.instance_id, d.reason.split(":")[0]) for d in deletes] == [
        ("x", "start_timeout")]


def test_a_report_after_the_timeout_is_stale(engine: Engine) -> None:
    cell_with_ready_node(engine)
    accepted(engine, b.create("x", t=1), b.tick(400))
    late = one(engine, b.report("ReportInstanceRunning", 401, instance_id="x"))
    assert late.status == "accepted" and late.events == []
    assert late.note and late.note.startswith("stale")
    assert state(engine, "x") == "failed"


def test_timeouts_survive_a_restart_of_the_writer(engine: Engine) -> None:
    cell_with_ready_node(engine)
    accepted(engine, b.create("x", t=1), b.report("ReportInstanceStarting", 2, instance_id="x"))
    engine.processor.forget()  # the next command rebuilds the world from the log
    accepted(engine, b.tick(700))
    assert state(engine, "x") == "failed"
