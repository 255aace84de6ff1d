"""Nodes held cordoned by an operator, or at start-up until they are set up (a pool's
`start_cordoned`): they take no new work, keep what they have, and the autoscaler neither
lifts the hold nor terminates them; UncordonNode ends the hold."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from adapters.bootstrap import Engine
from engine.policies.autoscaling import NodeUse, plan_scale_in
from tests import builders as b
from tests.helpers import accepted, one, state
from tests.test_autoscaler import SMALL, kata, nodes, shared


def ready_all(engine: Engine, t: float) -> None:
    accepted(engine, *[b.report("ReportNodeReady", t, node_id=n.node_id)
                       for n in nodes(engine) if n.state == "requested"])


def operator(kind: str, node_id: str, t: float) -> dict:
    return {"type": kind, "command_id": b.cid(kind), "cell": b.CELL, "issued_at": b.at(t),
            "node_id": node_id}


def test_a_pool_that_starts_nodes_cordoned_waits_for_uncordon(engine: Engine) -> None:
    shared(engine, max_nodes=5, models=[SMALL], start_cordoned=True,
           pending_timeout_seconds=86_400)
    accepted(engine, *[kata(f"i{k}") for k in range(3)])  # one 4C16G holds all three
    assert len(nodes(engine)) == 1
    out = one(engine, b.report("ReportNodeReady", 60, node_id="kata-00001"))
    assert out.note and "cordoned at start" in out.note
    node = nodes(engine)[0]
    assert (node.state, node.cordoned_by) == ("cordoned", "start")
    assert {state(engine, f"i{k}") for k in range(3)} == {"unschedulable"}
    # Ticks long past the unneeded time: no second node for the same instances (the held
    # one is capacity on its way), no uncordon under pressure, no termination.
    accepted(engine, b.tick(300), b.tick(2000))
    assert [(n.node_id, n.state) for n in nodes(engine)] == [("kata-00001", "cordoned")]
    accepted(engine, operator("UncordonNode", "kata-00001", 2100))
    assert nodes(engine)[0].state == "ready"
    assert {state(engine, f"i{k}") for k in range(3)} == {"scheduled"}


def test_an_operator_hold_survives_the_autoscaler(engine: Engine) -> None:
    shared(engine, max_nodes=5, models=[SMALL], pending_timeout_seconds=86_400)
    accepted(engine, kata("i0", vcpu="2", memory_gib="4"))
    ready_all(engine, 10)
    accepted(engine, operator("CordonNode", "kata-00001", 20))
    assert (nodes(engine)[0].state, nodes(engine)[0].cordoned_by) == ("cordoned", "operator")
    assert state(engine, "i0") == "scheduled", "a hold never evicts"
    # New work goes to a new node, not to the held one, although it fits there.
    accepted(engine, kata("i1", t=30))
    assert state(engine, "i1") == "unschedulable"
    assert [n.node_id for n in nodes(engine)] == ["kata-00001", "kata-00002"]
    # Emptied and idle far past the unneeded time: still there, still held.
    accepted(engine, b.tenant("StopInstance", "i0", 40), b.tick(3000))
    held = nodes(engine)[0]
    assert (held.state, held.cordoned_by) == ("cordoned", "operator")
    accepted(engine, operator("UncordonNode", "kata-00001", 3100))
    assert nodes(engine)[0].state == "ready"
    assert state(engine, "i1") == "scheduled", "released room goes to waiting work"
    # A fresh idle clock from the uncordon: not terminated at the next tick.
    accepted(engine, b.tenant("StopInstance", "i1", 3150), b.tick(3200))
    assert nodes(engine)[0].state == "ready"


def test_an_operator_takes_over_a_scale_in_cordon(engine: Engine) -> None:
    # i0 never reports: keep the start timeout from ending it before the cordon.
    shared(engine, max_nodes=5, models=[SMALL], scheduled_timeout_seconds=86_400)
    accepted(engine, kata("i0"))  # 1100 m of 4000: under 0.5, so scale-in cordons it
    ready_all(engine, 10)
    accepted(engine, b.tick(700))
    assert nodes(engine)[0].cordoned_by == "autoscaler"
    accepted(engine, operator("CordonNode", "kata-00001", 710))
    accepted(engine, b.tenant("StopInstance", "i0", 800), b.tick(2000))
    assert (nodes(engine)[0].state, nodes(engine)[0].cordoned_by) == ("cordoned", "operator")


def test_cordon_commands_refuse_what_they_cannot_do(engine: Engine) -> None:
    shared(engine, max_nodes=5, models=[SMALL])
    accepted(engine, kata("i0"))
    unknown = one(engine, operator("CordonNode", "kata-09999", 5))
    assert unknown.status == "rejected" and unknown.reasons[0].field == "node_id"
    booting = one(engine, operator("UncordonNode", "kata-00001", 5))
    assert booting.status == "rejected" and "requested" in booting.reasons[0].problem
    ready_all(engine, 10)
    noop = one(engine, operator("UncordonNode", "kata-00001", 20))
    assert noop.status == "accepted" and noop.note and "unchanged" in noop.note
    accepted(engine, operator("CordonNode", "kata-00001", 30))
    again = one(engine, operator("CordonNode", "kata-00001", 31))
    assert again.status == "accepted" and not again.events


def test_holds_are_rebuilt_from_the_log(engine: Engine) -> None:
    shared(engine, max_nodes=5, models=[SMALL], start_cordoned=True)
    accepted(engine, kata("i0"), kata("i1", vcpu="2", memory_gib="4"))
    ready_all(engine, 10)
    before = [(n.node_id, n.state, n.cordoned_by) for n in nodes(engine)]
    engine.processor.forget()
    assert [(n.node_id, n.state, n.cordoned_by) for n in nodes(engine)] == before


def test_scale_in_policy_counts_held_nodes_but_never_touches_them() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    later = t0 + timedelta(hours=1)
    held = [NodeUse(f"h{k}", "held", 0, 0.0, t0) for k in range(2)]
    idle = [NodeUse("n0", "ready", 0, 0.0, t0)]
    plan = plan_scale_in(held + idle, later, 0.5, 600, min_nodes=2, budget=5)
    assert [n for n, _ in plan.terminate] == ["n0"], "held nodes count towards min_nodes"
    assert plan_scale_in(held + idle, later, 0.5, 600, min_nodes=3, budget=5).terminate == ()
    assert plan_scale_in(held, later, 0.5, 600, min_nodes=0, budget=5) == plan_scale_in(
        [], later, 0.5, 600, min_nodes=0, budget=5)
