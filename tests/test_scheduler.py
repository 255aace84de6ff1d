"""Placement through the engine: policies per pool, selectors, eligibility, reasons as data."""

from __future__ import annotations

from adapters.bootstrap import Engine
from tests import builders as b
from tests.helpers import accepted, instance, one

HOST = {"name": "4C8G", "millicores": 4000, "memory_mib": 8192, "enis": 4, "pods": 10}


def shared_pool(engine: Engine, policy: str, nodes: int = 2, **config: object) -> None:
    accepted(engine, b.price_book(), b.networks(), b.pool(
        "kata", kind="shared", node_models=[HOST], min_nodes=nodes, max_nodes=nodes,
        placement_policy=policy, **config))
    accepted(engine, *[b.report("ReportNodeReady", 1, node_id=f"kata-{k:05d}")
                       for k in range(1, nodes + 1)])


def kata(name: str, vcpu: str = "0.5", memory_gib: str = "1", **extra: object) -> dict:
    return b.create(name, t=2, pool="kata", runtime="kata", vcpu=vcpu, memory_gib=memory_gib,
                    **extra)


def test_best_fit_packs_and_worst_fit_spreads(engine: Engine) -> None:
    shared_pool(engine, "best_fit")
    accepted(engine, kata("a"), kata("b"))
    assert instance(engine, "a").node_id == instance(engine, "b").node_id


def test_worst_fit_spreads(engine: Engine) -> None:
    shared_pool(engine, "worst_fit")
    accepted(engine, kata("a"), kata("b"))
    assert instance(engine, "a").node_id != instance(engine, "b").node_id


def test_decision_is_an_event_with_policy_and_score(engine: Engine) -> None:
    shared_pool(engine, "first_fit")
    accepted(engine, kata("a"))
    (event,) = [e for _, e in engine.app.read() if type(e).__name__ == "Scheduled"]
    assert event.policy == "first_fit" and event.node_id == "kata-00001" and event.score > 0


def test_unschedulable_names_every_short_dimension(engine: Engine) -> None:
    accepted(engine, b.price_book(), b.networks(), b.pool(
        "kata", kind="shared", node_models=[HOST], min_nodes=1, max_nodes=1,
        spec_catalogue=[{"vcpu": "0.5", "memory_gib": "1"}, {"vcpu": "2", "memory_gib": "4"}]))
    accepted(engine, b.report("ReportNodeReady", 1, node_id="kata-00001"))
    accepted(engine, kata("a", vcpu="2", memory_gib="4"))
    accepted(engine, kata("b", vcpu="2", memory_gib="4"))
    (event,) = [e for _, e in engine.app.read() if type(e).__name__ == "Unschedulable"]
    fields = {r["field"] for r in event.reasons}
    assert "millicores" in fields  # 2100 m free 1900 m
    assert all("need" in r["problem"] for r in event.reasons)


def test_node_selector_restricts_candidates(engine: Engine) -> None:
    shared_pool(engine, "first_fit", labels={"zone": "a"})
    out = one(engine, kata("a", node_selector={"zone": "b"}))
    assert instance(engine, "a").state == "unschedulable" and out.status == "accepted"
    accepted(engine, kata("c", node_selector={"zone": "a", "model": "4C8G"}))
    assert instance(engine, "c").state == "scheduled"


def test_not_ready_node_takes_nothing(engine: Engine) -> None:
    accepted(engine, b.price_book(), b.networks(), b.pool("kata", kind="shared", node_models=[HOST],
                                            min_nodes=1, max_nodes=1))
    accepted(engine, kata("a"))
    assert instance(engine, "a").state == "unschedulable"
    accepted(engine, b.report("ReportNodeReady", 5, node_id="kata-00001"))
    assert instance(engine, "a").state == "scheduled"


def test_freed_room_is_reused_by_waiting_instances(engine: Engine) -> None:
    shared_pool(engine, "best_fit", nodes=1)
    accepted(engine, kata("big", vcpu="2", memory_gib="4"))
    accepted(engine, kata("next", vcpu="2", memory_gib="4"))
    assert instance(engine, "next").state == "unschedulable"
    accepted(engine, b.tenant("StopInstance", "big", 10))
    assert instance(engine, "next").state == "scheduled"  # the freed room is used at once


def test_dedicated_node_freed_by_an_ending_instance_takes_the_next(engine: Engine) -> None:
    accepted(engine, b.price_book(), b.networks(), b.pool(min_nodes=1, max_nodes=1),
             b.report("ReportNodeReady", 1, node_id="general-00001"))
    accepted(engine, b.create("a", t=2), b.create("b", t=3))
    assert instance(engine, "b").state == "unschedulable"
    accepted(engine, b.tenant("StopInstance", "a", 10))
    assert instance(engine, "b").state == "scheduled"
    assert instance(engine, "b").node_id == "general-00001"


def test_lost_node_is_never_offered_to_waiting_instances(engine: Engine) -> None:
    shared_pool(engine, "best_fit", nodes=1)
    accepted(engine, kata("big", vcpu="2", memory_gib="4"), kata("next", vcpu="2",
                                                                   memory_gib="4"))
    accepted(engine, b.report("ReportNodeLost", 10, node_id="kata-00001"))
    assert instance(engine, "big").state == "failed"
    assert instance(engine, "next").state == "unschedulable"
