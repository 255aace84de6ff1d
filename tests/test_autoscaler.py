"""Autoscaling through the engine: scale-out, expanders, scale-in without eviction."""

from __future__ import annotations

from adapters.bootstrap import Engine
from engine.domain.node import Node
from engine.domain.pool_config import NodeModel
from engine.policies.autoscaling import NodeUse, Pending, plan_scale_in, plan_scale_out
from tests import builders as b
from tests.helpers import accepted, one, state

SMALL = {"name": "4C16G", "millicores": 4000, "memory_mib": 16384, "enis": 8, "pods": 20,
         "price_per_hour": "0.20", "priority": 1}
BIG = {"name": "16C64G", "millicores": 16000, "memory_mib": 65536, "enis": 15, "pods": 110,
       "price_per_hour": "0.70", "priority": 10}
CATALOGUE = [{"vcpu": "1", "memory_gib": "2"}, {"vcpu": "2", "memory_gib": "4"}]


def shared(engine: Engine, **config: object) -> None:
    accepted(engine, b.price_book(), b.networks(), b.pool(
        "kata", kind="shared", node_models=config.pop("models", [SMALL, BIG]),
        spec_catalogue=CATALOGUE, **config))


def kata(name: str, t: float = 1, vcpu: str = "1", memory_gib: str = "2") -> dict:
    return b.create(name, t=t, pool="kata", runtime="kata", vcpu=vcpu, memory_gib=memory_gib)


def nodes(engine: Engine) -> list[Node]:
    return sorted((a for a in engine.processor.world.aggregates.values()
                   if isinstance(a, Node)), key=lambda n: n.node_id)


def test_scale_out_asks_for_as_many_nodes_as_the_simulation_needs(engine: Engine) -> None:
    shared(engine, max_nodes=10)
    accepted(engine, *[kata(f"i{k}") for k in range(6)])
    # 6 × (1100 m, 2184 MiB) fit on 2 × 4C16G (3 per node by cpu) with the least waste.
    assert [n.model for n in nodes(engine)] == ["4C16G", "4C16G"]
    reason = engine.processor.world.pool_nodes[(b.CELL, "kata")]["kata-00001"]
    assert reason.state == "requested"
    accepted(engine, b.report("ReportNodeReady", 60, node_id="kata-00001"),
             b.report("ReportNodeReady", 60, node_id="kata-00002"))
    assert {state(engine, f"i{k}") for k in range(6)} == {"scheduled"}


def test_expander_choice(engine: Engine) -> None:
    shared(engine, max_nodes=10, expander="priority")
    accepted(engine, *[kata(f"i{k}") for k in range(6)])
    assert [n.model for n in nodes(engine)] == ["16C64G"]


def test_expanders_on_the_pure_policy() -> None:
    demand = {"millicores": 1100, "memory_mib": 2184, "enis": 1, "pods": 1}
    pending = [Pending(f"i{k}", demand) for k in range(6)]
    cheap_big = {**BIG, "price_per_hour": "0.30"}

    def pick(expander: str, models: list[dict]) -> tuple[str, int]:
        plan = plan_scale_out(pending, [], [NodeModel.of(m) for m in models], room=10,
                              expander=expander, kind="shared")
        assert plan is not None and len(plan.instances) == 6
        return plan.model, plan.count

    assert pick("least-waste", [SMALL, BIG]) == ("4C16G", 2)
    assert pick("price", [SMALL, BIG]) == ("4C16G", 2)  # 0.40 < 0.70
    assert pick("price", [SMALL, cheap_big]) == ("16C64G", 1)  # 0.30 < 0.40
    assert pick("priority", [SMALL, BIG]) == ("16C64G", 1)
    # Nodes already on their way absorb pending work first.
    coming = [{d: SMALL[d] for d in ("millicores", "memory_mib", "enis", "pods")}] * 2
    assert plan_scale_out(pending, coming, [NodeModel.of(SMALL)], 10, "least-waste",
                          "shared") is None


def test_max_nodes_caps_scale_out(engine: Engine) -> None:
    shared(engine, max_nodes=1, models=[SMALL])
    accepted(engine, *[kata(f"i{k}") for k in range(9)], b.tick(30))
    assert len(nodes(engine)) == 1


def test_min_nodes_are_requested_on_configure(engine: Engine) -> None:
    shared(engine, min_nodes=2)
    assert len(nodes(engine)) == 2


def _ready_pool_with(engine: Engine, instances: int, vcpu: str = "1", **config: object
                     ) -> None:
    shared(engine, min_nodes=0, max_nodes=10, models=[SMALL], **config)
    memory = str(int(vcpu) * 2)
    accepted(engine, *[kata(f"i{k}", vcpu=vcpu, memory_gib=memory) for k in range(instances)])
    accepted(engine, *[b.report("ReportNodeReady", 10, node_id=n.node_id)
                       for n in nodes(engine)])


def test_empty_node_terminated_after_unneeded_time_not_before(engine: Engine) -> None:
    _ready_pool_with(engine, 1, vcpu="2")  # 2100 m of 4000: needed until it stops
    accepted(engine, b.tenant("StopInstance", "i0", 20))
    accepted(engine, b.tick(20 + 599))
    assert nodes(engine)[0].state == "ready"
    accepted(engine, b.tick(20 + 600))
    assert nodes(engine)[0].state == "terminated"


def test_underused_node_is_cordoned_then_terminated_when_empty(engine: Engine) -> None:
    _ready_pool_with(engine, 1)  # 1100 m of 4000: under 0.5
    accepted(engine, b.report("ReportInstanceRunning", 11, instance_id="i0",
                              node_id=nodes(engine)[0].node_id), b.tick(700))
    node = nodes(engine)[0]
    assert node.state == "cordoned"
    assert state(engine, "i0") == "running"  # never evicted
    # New work goes elsewhere: a new node is requested rather than using the cordoned one
    # (it does fit there, so pressure uncordons it instead).
    accepted(engine, b.tenant("StopInstance", "i0", 800), b.tick(900))
    assert nodes(engine)[0].state == "terminated"


def test_uncordon_under_pressure(engine: Engine) -> None:
    # Instances that never report would time out (issue 14): give them longer than the test.
    _ready_pool_with(engine, 1, disruption_budget=1, scheduled_timeout_seconds=86_400)
    accepted(engine, b.tick(700))
    assert nodes(engine)[0].state == "cordoned"
    out = one(engine, kata("late", t=710))
    assert nodes(engine)[0].state == "ready"
    assert state(engine, "late") == "scheduled" and out.status == "accepted"


def test_never_below_min_nodes(engine: Engine) -> None:
    shared(engine, min_nodes=1, max_nodes=3, models=[SMALL])
    accepted(engine, b.report("ReportNodeReady", 10, node_id="kata-00001"), b.tick(5000))
    assert nodes(engine)[0].state == "ready"


def test_disruption_budget(engine: Engine) -> None:
    shared(engine, max_nodes=10, models=[SMALL], disruption_budget=1,
           scale_down_utilisation_threshold=0.6, scheduled_timeout_seconds=86_400)
    # Three nodes, each with one instance using 0.525 of its cpu: all under 0.6.
    accepted(engine, *[kata(f"i{k}", vcpu="2", memory_gib="4") for k in range(3)])
    accepted(engine, *[b.report("ReportNodeReady", 10, node_id=n.node_id)
                       for n in nodes(engine)])
    assert len(nodes(engine)) == 3
    accepted(engine, b.tick(700))
    assert [n.state for n in nodes(engine)].count("cordoned") == 1
    accepted(engine, b.tick(800))
    assert [n.state for n in nodes(engine)].count("cordoned") == 1


def test_scale_in_policy_respects_time_min_and_budget() -> None:
    from datetime import UTC, datetime, timedelta
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    idle = [NodeUse(f"n{k}", "ready", 0, 0.0, t0) for k in range(4)]
    early = plan_scale_in(idle, t0 + timedelta(seconds=599), 0.5, 600, 0, 10)
    assert early.terminate == () and early.cordon == ()
    plan = plan_scale_in(idle, t0 + timedelta(seconds=600), 0.5, 600, min_nodes=1, budget=2)
    assert [n for n, _ in plan.terminate] == ["n0", "n1"]
    busy = [NodeUse("b", "ready", 3, 0.2, t0), NodeUse("c", "cordoned", 1, 0.1, t0)]
    assert plan_scale_in(busy, t0 + timedelta(hours=1), 0.5, 600, 0, 1).cordon == ()


def test_dedicated_pending_of_two_models_asks_for_no_node_already_on_its_way(
        engine: Engine) -> None:
    # A 2C4G instance must not count a 4C8G node on its way as its own (a dedicated
    # instance runs only on its smallest model): a Tick then asked for a second 4C8G.
    accepted(engine, b.price_book(), b.networks(), b.pool(node_models=b.MODELS[1:]),
             b.create("web-1"), b.create("web-2"), b.create("big-1", vcpu="2", memory_gib="4"))
    assert [n.model for n in nodes(engine)] == ["2C4G", "2C4G", "4C8G"]
    accepted(engine, b.tick(5))
    assert [n.model for n in nodes(engine)] == ["2C4G", "2C4G", "4C8G"]


def test_dedicated_scale_out_follows_each_instances_model_selector(engine: Engine) -> None:
    accepted(engine, b.price_book(), b.networks(), b.pool())  # dedicated: 1C2G, 2C4G, 4C8G
    accepted(engine, b.create("big-1", node_selector={"model": "4C8G"}),
             b.create("big-2", node_selector={"model": "4C8G"}))
    # One 4C8G node each (dedicated), never the smallest model that holds 0.5 vCPU.
    assert [n.model for n in nodes(engine)] == ["4C8G", "4C8G"]
    accepted(engine, b.report("ReportNodeReady", 60, node_id="general-00001"),
             b.report("ReportNodeReady", 60, node_id="general-00002"))
    assert {state(engine, "big-1"), state(engine, "big-2")} == {"scheduled"}


def test_a_coming_node_of_another_group_is_no_room_for_a_selected_instance(
        engine: Engine) -> None:
    shared(engine, max_nodes=10)
    accepted(engine, kata("plain"))  # asks for a 4C16G (least waste)
    assert [n.model for n in nodes(engine)] == ["4C16G"]
    accepted(engine, b.create("picky", pool="kata", runtime="kata",
                              node_selector={"model": "16C64G"}))
    # The coming 4C16G has room, but not of the group the selector names.
    assert [n.model for n in nodes(engine)] == ["4C16G", "16C64G"]
