"""ENIs: each instance takes its own ENI on its node, recorded on its `Scheduled` event and
on its Pod; placement and scale-in count ENIs (and pod slots) like cpu and memory."""

from __future__ import annotations

from typing import Any

from adapters.bootstrap import Engine
from adapters.infra_commands import commands_in
from adapters.pods import LABEL_PREFIX
from engine.domain.instance import Instance
from engine.placement_state import PoolPlacement
from schemas.infra import RunPod
from tests import builders as b
from tests.helpers import accepted, instance, one, run

NODE = "edge-00001"
# A roomy node with only two ENIs for instances: ENIs run out long before cpu or memory.
FEW_ENIS = [{"name": "4C8G", "millicores": 4000, "memory_mib": 8192, "enis": 2}]
NETWORK = {"vpc": "vpc-1", "subnet": "subnet-7", "security_groups": ["sg-web", "sg-db"]}


def _edge(engine: Engine, **config: Any) -> None:
    """A price book and a shared pool whose one node (asked for by the first create) is ready."""
    accepted(engine, b.price_book(), b.networks(),
             b.pool("edge", kind="shared", node_models=FEW_ENIS, **config))


def _create(name: str, t: float) -> dict[str, Any]:
    return b.create(name, t, pool="edge", runtime="kata", network=NETWORK)


def _events(engine: Engine, name: str) -> list[Any]:
    return list(engine.app.events.get(instance(engine, name).id))


def _running(*names: str) -> list[dict[str, Any]]:
    return [b.report("ReportInstanceRunning", 5, instance_id=n, node_id=NODE) for n in names]


def _fill_node(engine: Engine) -> None:
    _edge(engine)
    accepted(engine, _create("a", 1))  # waits; scale-out asks for the node
    accepted(engine, b.report("ReportNodeReady", 2, node_id=NODE))
    accepted(engine, _create("b", 3))
    assert instance(engine, "a").node_id == instance(engine, "b").node_id == NODE


def test_each_instance_gets_its_own_eni_recorded_with_its_network(engine: Engine) -> None:
    _fill_node(engine)
    attachments = [instance(engine, n).attachment for n in ("a", "b")]
    assert attachments == [
        {"eni_index": i, "ip_slot": 0, "vpc": "vpc-1", "subnet": "subnet-7",
         "security_groups": ["sg-web", "sg-db"]} for i in (1, 2)]
    (scheduled,) = [e for e in _events(engine, "b") if isinstance(e, Instance.Scheduled)]
    assert scheduled.attachment == attachments[1]
    # Recorded on the event itself, so a restart (replay) reads the same.
    engine.processor.forget()
    run(engine, b.tick(4))
    assert [instance(engine, n).attachment["eni_index"] for n in ("a", "b")] == [1, 2]


def test_placement_refuses_a_node_whose_enis_are_taken(engine: Engine) -> None:
    _fill_node(engine)
    outcome = one(engine, _create("c", 4))
    assert outcome.note == "unschedulable: waits for capacity"
    assert instance(engine, "c").state == "unschedulable"
    (waiting,) = [e for e in _events(engine, "c") if isinstance(e, Instance.Unschedulable)]
    assert {"field": "enis", "problem": "insufficient: need 1, largest free 0"} \
        in waiting.reasons


def test_a_released_eni_is_reused_lowest_first_also_after_a_restart(engine: Engine) -> None:
    _fill_node(engine)
    accepted(engine, b.tenant("StopInstance", "a", 5))  # frees ENI 1
    engine.processor.forget()  # the next batch rebuilds the world from the log
    accepted(engine, _create("c", 6))
    c = instance(engine, "c")
    assert (c.node_id, c.attachment["eni_index"]) == (NODE, 1)
    accepted(engine, b.tenant("StopInstance", "b", 7), _create("d", 8))
    assert instance(engine, "d").attachment["eni_index"] == 2


def test_the_pod_carries_its_eni(engine: Engine) -> None:
    _fill_node(engine)
    runs = {r.instance_id: r for r in commands_in(engine.app) if isinstance(r, RunPod)}
    annotations = runs["b"].manifest["metadata"]["annotations"]
    assert annotations[f"{LABEL_PREFIX}/eni-index"] == "2"
    assert annotations[f"{LABEL_PREFIX}/ip-slot"] == "0"
    assert annotations[f"{LABEL_PREFIX}/eni-subnet"] == "subnet-7"
    assert annotations[f"{LABEL_PREFIX}/eni-security-groups"] == "sg-web,sg-db"


def test_scale_in_sees_a_node_full_of_enis_as_busy(engine: Engine) -> None:
    _fill_node(engine)  # cpu 30 %, memory 28 %, ENIs 100 %: under the 0.5 threshold but full
    accepted(engine, *_running("a", "b"), b.tick(10), b.tick(2000))
    placement = engine.processor.world.placements[(b.CELL, "edge")]
    assert placement.utilisation(NODE) == 1.0
    node = engine.processor.world.node(b.CELL, NODE)
    assert node is not None and node.state == "ready"
    assert (b.CELL, NODE) not in engine.processor.world.unneeded_since


def test_scale_in_sees_a_node_full_of_pod_slots_as_busy(engine: Engine) -> None:
    models = [{"name": "4C8G", "millicores": 4000, "memory_mib": 8192, "pods": 2}]
    accepted(engine, b.price_book(), b.networks(),
             b.pool("edge", kind="shared", node_models=models))
    accepted(engine, _create("a", 1), b.report("ReportNodeReady", 2, node_id=NODE),
             _create("b", 3), *_running("a", "b"), b.tick(10), b.tick(2000))
    assert engine.processor.world.placements[(b.CELL, "edge")].utilisation(NODE) == 1.0
    node = engine.processor.world.node(b.CELL, NODE)
    assert node is not None and node.state == "ready"


def test_enis_from_events_without_one_are_given_lowest_first() -> None:
    """Events from before ENIs were recorded (or a path that did not choose one) replay to the
    lowest free index; recorded indices are taken as they are, gaps reused first."""
    placement = PoolPlacement("shared", "best_fit")
    placement.add_node("n1", "4C8G", {"millicores": 4000, "memory_mib": 8192, "enis": 8,
                                      "pods": 8}, {})
    placement.set_takes_work("n1", True)
    demand = {"millicores": 100, "memory_mib": 100, "enis": 1, "pods": 1}
    assert [placement.allocate("n1", demand) for _ in range(2)] == [1, 2]
    assert placement.allocate("n1", demand, 5) == 5  # 3 and 4 stay free
    assert placement.allocate("n1", demand) == 3
    placement.release("n1", demand, 1)
    assert placement.lowest_free_eni("n1") == 1
    assert placement.attachment("n1", NETWORK)["eni_index"] == 1
    assert placement.allocate("n1", demand, 4) == 4  # a recorded one, out of order
    assert [placement.allocate("n1", demand) for _ in range(2)] == [1, 6]
