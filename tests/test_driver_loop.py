"""The whole loop in one process: the engine's events become the outbox's commands, the
driver handlers carry them out on the simulated infrastructure, and only what it shows
comes back as reports (simulations/driven.py)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from adapters.bootstrap import Engine
from engine.domain.instance import Instance
from engine.domain.node import Node
from simulations import workloads
from simulations.driven import DrivenHarness
from simulations.harness import Plan
from tests import builders as b

REPORTS = {"ReportInstanceStarting", "ReportInstanceRunning", "ReportContainerExited",
           "ReportInstanceTerminated", "ReportNodeReady", "ReportNodeLost"}


def events(engine: Engine, kind: type) -> list:
    return [e for _, e in engine.app.read(0) if isinstance(e, kind)]


def test_a_day_runs_with_every_report_from_a_driver(engine: Engine) -> None:
    start = workloads.DAY_START
    creates, plans = workloads.tenants(40, seed=3)
    harness = DrivenHarness(engine, start, plans=plans)
    for command in workloads.setup():
        harness.submit(start, command)
    for at, command in [*creates, *workloads.ticks(start, 24, every_s=1800)]:
        harness.submit(at, command)
    outcomes = harness.run(start + timedelta(days=1))
    assert {o.status for o in outcomes} == {"accepted"}, Counter(
        (o.status, str(o)[:200]) for o in outcomes if o.status != "accepted")
    world = engine.processor.world
    assert Counter(i.state for i in world.instances.values()).keys() <= {
        "stopped", "deleted", "succeeded", "failed"}, "every instance ran and ended"
    assert harness.commands["RunPod"] == len(creates) == harness.commands["DeletePod"]
    assert harness.commands["ProvisionNode"] == len(world.nodes)
    assert len(events(engine, Instance.Running)) >= len(creates)
    # Every node the engine asked for was reported ready by the cloud driver, at its boot.
    requested = {e.node_id: e.timestamp for e in events(engine, Node.Requested)}
    ready = {world.aggregates[e.originator_id].node_id: e.timestamp
             for e in events(engine, Node.Ready)}
    assert ready == {n: t + timedelta(seconds=45) for n, t in requested.items()}


def test_loop_latency_is_boot_then_the_runtimes_start_time(engine: Engine) -> None:
    harness = DrivenHarness(engine, b.T0, boot_seconds=30)
    harness.submit(b.T0, b.price_book())
    harness.submit(b.T0, b.networks())
    harness.submit(b.T0, b.pool(kind="shared", node_models=[b.MODELS[2]]))  # room for 3
    harness.submit(b.T0 + timedelta(seconds=10), b.create("web-1", t=10))
    harness.submit(b.T0 + timedelta(seconds=60), b.create("web-2", t=60, runtime="kata"))
    harness.submit(b.T0 + timedelta(seconds=120), b.create("web-3", t=120))
    harness.run(b.T0 + timedelta(minutes=5))
    world = engine.processor.world
    running = {world.aggregates[e.originator_id].name: e.timestamp
               for e in events(engine, Instance.Running)}
    # web-1 waits for a node (30 s boot) then starts; the others find it ready: only their
    # runtime's start. A shared pool's default runtime is kata (1.249 s), as web-2 asks.
    assert running == {"web-1": b.T0 + timedelta(seconds=10 + 30 + 1.249),
                       "web-2": b.T0 + timedelta(seconds=60 + 1.249),
                       "web-3": b.T0 + timedelta(seconds=120 + 1.249)}
    assert len({world.instance(b.CELL, b.ACCOUNT, name).node_id  # type: ignore
                for name in running}) == 1


def test_a_lost_node_and_a_crash_loop_come_from_the_infrastructure(engine: Engine) -> None:
    plans = {"web-1": Plan(lifetime_s=400, ending="crashloop")}
    harness = DrivenHarness(engine, b.T0, plans=plans,
                            lost_nodes={(b.CELL, "general-00001"): b.T0 + timedelta(hours=1)})
    harness.submit(b.T0, b.price_book())
    harness.submit(b.T0, b.networks())
    harness.submit(b.T0, b.pool())
    harness.submit(b.T0, b.create("web-1", t=0))
    harness.submit(b.T0 + timedelta(minutes=50), b.create("web-2", t=3000))
    outcomes = harness.run(b.T0 + timedelta(hours=2))
    assert {o.status for o in outcomes} == {"accepted"}
    world = engine.processor.world
    web1 = world.instance(b.CELL, b.ACCOUNT, "web-1")
    assert web1 is not None and (web1.state, web1.restarts) == ("stopped", 3)
    lost = events(engine, Node.Lost)
    assert [world.aggregates[e.originator_id].node_id for e in lost] == ["general-00001"]
    web2 = world.instance(b.CELL, b.ACCOUNT, "web-2")
    assert web2 is not None and (web2.node_id, web2.state) == ("general-00001", "failed"), \
        "it ran on the node the infrastructure lost"
