"""Node selectors in scale-out: the autoscaler asks only a node group (a pool's model)
whose labels (the pool's, plus `model` and `pool`) satisfy the pending instance's
selector; an instance no group can ever satisfy is unschedulable at once, asking for
nothing."""

from __future__ import annotations

from adapters.bootstrap import Engine
from engine.domain.instance import Instance
from engine.domain.node import Node
from engine.domain.pool_config import NodeModel
from engine.policies.autoscaling import Pending, plan_scale_out
from tests import builders as b
from tests.helpers import accepted, instance, one, state

SMALL = {"name": "4C16G", "millicores": 4000, "memory_mib": 16384, "enis": 8, "pods": 110,
         "price_per_hour": "0.20"}
BIG = {"name": "16C64G", "millicores": 16000, "memory_mib": 65536, "enis": 15, "pods": 110,
       "price_per_hour": "0.70"}


def nodes(engine: Engine) -> list[Node]:
    return sorted((a for a in engine.processor.world.aggregates.values()
                   if isinstance(a, Node)), key=lambda n: n.node_id)


def test_dedicated_scale_out_asks_for_the_selected_model(engine: Engine) -> None:
    accepted(engine, b.price_book(), b.networks(), b.pool())  # 1C2G, 2C4G, 4C8G
    accepted(engine, b.create("x", node_selector={"model": "4C8G"}))
    # Not the smallest model that holds 0.5 vCPU (1C2G): it could never take the instance.
    assert [n.model for n in nodes(engine)] == ["4C8G"]
    accepted(engine, b.report("ReportNodeReady", 60, node_id="general-00001"))
    assert state(engine, "x") == "scheduled"
    assert instance(engine, "x").node_id == "general-00001"


def test_shared_scale_out_asks_only_groups_the_selector_allows(engine: Engine) -> None:
    accepted(engine, b.price_book(), b.networks(),
             b.pool("kata", kind="shared", node_models=[SMALL, BIG],
                    labels={"tier": "gold"}))
    accepted(engine, b.create("x", pool="kata", node_selector={"model": "16C64G",
                                                               "tier": "gold"}))
    assert [n.model for n in nodes(engine)] == ["16C64G"]  # least-waste would pick 4C16G
    accepted(engine, b.create("y", pool="kata"))  # no selector: fits on the coming node
    assert len(nodes(engine)) == 1


def test_a_selector_no_group_satisfies_is_unschedulable_at_once(engine: Engine) -> None:
    accepted(engine, b.price_book(), b.networks(), b.pool(labels={"tier": "gold"}))
    for name, selector in [("a", {"tier": "silver"}), ("b", {"model": "64C256G"}),
                           ("c", {"model": "1C2G", "tier": "silver"})]:
        outcome = one(engine, b.create(name, node_selector=selector))
        assert outcome.status == "accepted" and "unschedulable" in (outcome.note or "")
        assert state(engine, name) == "unschedulable"
    assert nodes(engine) == []  # asked the ASG for nothing
    accepted(engine, b.tick(60))
    assert nodes(engine) == []  # nor does the periodic pass
    assert {state(engine, n) for n in "abc"} == {"unschedulable"}


def test_the_unschedulable_reason_names_the_selector(engine: Engine) -> None:
    accepted(engine, b.price_book(), b.networks(), b.pool())
    accepted(engine, b.create("a", node_selector={"tier": "silver"}))
    stored = [e for _, e in engine.app.read() if isinstance(e, Instance.Unschedulable)]
    (event,) = stored
    (why,) = event.reasons
    assert why["field"] == "node_selector" and why["code"] == "unsatisfiable_selector"
    assert "silver" in why["problem"]


def test_a_satisfiable_selector_still_waits_for_capacity(engine: Engine) -> None:
    accepted(engine, b.price_book(), b.networks(), b.pool(labels={"tier": "gold"}))
    outcome = one(engine, b.create("a", node_selector={"tier": "gold"}))
    assert outcome.note is not None and "waits for capacity" in outcome.note
    assert [n.model for n in nodes(engine)] == ["1C2G"]


def test_pure_policy_honours_allowed_groups() -> None:
    demand = {"millicores": 1100, "memory_mib": 2184, "enis": 1, "pods": 1}
    pending = [Pending(f"i{k}", demand, models=frozenset({"16C64G"})) for k in range(2)]
    models = [NodeModel.of(SMALL), NodeModel.of(BIG)]
    plan = plan_scale_out(pending, [], models, room=10, expander="least-waste",
                          kind="shared")
    assert plan is not None and plan.model == "16C64G" and plan.count == 1
    # A coming node of a group the selector refuses is no room for it.
    coming = [{"millicores": 4000, "memory_mib": 16384, "enis": 8, "pods": 110}]
    plan = plan_scale_out(pending, coming, models, 10, "least-waste", "shared",
                          coming_models=["4C16G"])
    assert plan is not None and plan.model == "16C64G"
    assert plan_scale_out(pending, coming, models, 10, "least-waste", "shared",
                          coming_models=["16C64G"]) is None
