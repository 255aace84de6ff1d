"""The simulated infrastructure behind both ports, and the cloud and Pod handlers that turn
what it shows into the engine's reports (no broker: the worker's Kafka side is tested in
test_driver_worker.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.driver_ledger import Ledger
from adapters.driver_worker import CloudHandler, PodHandler
from adapters.drivers.simulated import (
    RESTART_BACKOFF_SECONDS,
    Exit,
    Failures,
    SimulatedInfrastructure,
    VirtualClock,
)
from adapters.ports import CloudDriver, PodDriver
from schemas.commands import command_adapter
from tests import driver_fixtures as f


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(f.T0)


def test_it_implements_both_ports(clock: VirtualClock) -> None:
    infra = SimulatedInfrastructure(clock)
    assert isinstance(infra, CloudDriver) and isinstance(infra, PodDriver)


def test_nodes_boot_after_the_configured_delay_and_a_retry_makes_no_second_vm(
        clock: VirtualClock) -> None:
    infra = SimulatedInfrastructure(clock, boot_seconds=30)
    command = f.provision("general-00001")
    vm = infra.provision(command)
    assert infra.provision(command) == vm, "the same command again: the same VM"
    group = command.node_group
    assert [s.state for s in infra.describe(group)] == ["pending"]
    clock.advance(29.9)
    assert [s.state for s in infra.describe(group)] == ["pending"]
    clock.advance(0.1)
    [status] = infra.describe(group)
    assert (status.state, status.provider_id, status.since) == ("running", vm, clock())
    infra.terminate(f.terminate("general-00001"))
    assert [s.state for s in infra.describe(group)] == ["gone"]
    assert infra.describe("another-group") == []


@pytest.mark.parametrize("runtime,start_s", [("runc", 0.632), ("kata", 1.249),
                                             ("hyper", 3.256)])
def test_pods_start_after_their_runtime_start_time(clock: VirtualClock, runtime: str,
                                                   start_s: float) -> None:
    infra = SimulatedInfrastructure(clock)
    command = f.run_pod("web-1", "general-00001", runtime=runtime)
    infra.run(command)
    infra.run(command)  # a retried command: still one Pod
    assert [o.report for o in infra.watch()] == ["starting"]
    clock.advance(start_s - 0.001)
    assert infra.watch() == []
    clock.advance(0.001)
    [running] = infra.watch()
    assert (running.report, running.at, running.node_id) == ("running", clock(),
                                                             "general-00001")
    assert infra.watch() == [], "each fact once"


def test_a_crash_restarts_under_always_and_not_under_never(clock: VirtualClock) -> None:
    failures = Failures(exits={"web-1": [Exit(5, 137, "c0")], "job-1": [Exit(5, 1)]})
    infra = SimulatedInfrastructure(clock, failures=failures)
    infra.run(f.run_pod("web-1", "n1", restart_policy="Always"))
    infra.run(f.run_pod("job-1", "n1", restart_policy="Never"))
    clock.advance(60)
    facts = infra.watch()
    web = [(o.report, o.exit_code, o.sequence) for o in facts if o.instance_id == "web-1"]
    job = [(o.report, o.exit_code) for o in facts if o.instance_id == "job-1"]
    assert web == [("starting", None, 0), ("running", None, 1), ("exited", 137, 2),
                   ("running", None, 3)]
    assert job == [("starting", None), ("running", None), ("exited", 1)]
    restarted = [o for o in facts if o.instance_id == "web-1"]
    assert (restarted[3].at - restarted[2].at).total_seconds() == RESTART_BACKOFF_SECONDS
    assert len({o.key for o in facts}) == len(facts), "every fact has its own key"


def test_an_injected_crash_and_a_deleted_pod(clock: VirtualClock) -> None:
    infra = SimulatedInfrastructure(clock)
    infra.run(f.run_pod("web-1", "n1", restart_policy="OnFailure"))
    clock.advance(10)
    infra.watch()
    infra.crash("web-1", exit_code=2)
    infra.delete(f.delete_pod("web-1", "n1"))  # deleted before the restart is due
    clock.advance(60)
    assert [(o.report, o.exit_code) for o in infra.watch()] == [("exited", 2)]


def test_cloud_handler_reports_ready_lost_and_boot_failure_but_not_our_termination(
        clock: VirtualClock, tmp_path: Path) -> None:
    failures = Failures(boot_failures={"general-00003"}, node_losses={"general-00002": 100})
    infra = SimulatedInfrastructure(clock, boot_seconds=45, failures=failures)
    ledger = Ledger(tmp_path / "ledger.db")
    handler = CloudHandler(infra, ledger, clock)

    def reports() -> list[tuple[str, str, str]]:
        due = handler.observe(0)
        handler.observed([memo for _, memo in due])
        out = []
        for report, _ in due:
            again = command_adapter.validate_json(report.model_dump_json())  # the contract
            out.append((again.type, again.node_id, getattr(again, "reason", "")))
        return out

    for n in ("general-00001", "general-00002", "general-00003"):
        ledger.put_node(handler.act(f.provision(n)))  # type: ignore[arg-type]
    assert reports() == []
    clock.advance(45)
    assert sorted(reports()) == [
        ("ReportNodeLost", "general-00003", "VM sim-000003 boot failure outside cis"),
        ("ReportNodeReady", "general-00001", ""), ("ReportNodeReady", "general-00002", "")]
    assert reports() == [], "each once"
    ledger.put_node(handler.act(f.terminate("general-00001")))  # type: ignore[arg-type]
    clock.advance(100)
    assert reports() == [("ReportNodeLost", "general-00002",
                          "VM sim-000002 node lost outside cis")]
    assert {n.node_id: n.state for n in ledger.nodes("terminated", "lost")} == {
        "general-00001": "terminated", "general-00002": "lost", "general-00003": "lost"}


def test_pod_handler_reports_carry_account_node_and_stable_ids(clock: VirtualClock) -> None:
    infra = SimulatedInfrastructure(clock, failures=Failures(exits={"web-1": [Exit(3, 137)]}))
    handler = PodHandler(infra)
    handler.act(f.run_pod("web-1", "general-00001", account="globex"))
    clock.advance(30)
    due = handler.observe(0)
    assert handler.observe(0) == due, "kept until observed() says they were sent"
    handler.observed([])
    assert handler.observe(0) == []
    sent = [command_adapter.validate_json(r.model_dump_json()) for r, _ in due]
    assert [r.type for r in sent] == ["ReportInstanceStarting", "ReportInstanceRunning",
                                      "ReportContainerExited", "ReportInstanceRunning"]
    assert {(r.account, r.node_id, r.cell) for r in sent} == {
        ("globex", "general-00001", f.CELL)}
    assert len({r.command_id for r in sent}) == 4
    # The same facts from a fresh simulation of the same commands: the same ids.
    clock2 = VirtualClock(f.T0)
    again = SimulatedInfrastructure(clock2, failures=Failures(exits={"web-1": [Exit(3, 137)]}))
    again.run(f.run_pod("web-1", "general-00001", account="globex"))
    clock2.advance(30)
    assert [r.command_id for r, _ in PodHandler(again).observe(0)] == [
        r.command_id for r in sent]


def test_a_persisted_world_outlives_its_driver_and_lists_its_facts_again(
        clock: VirtualClock, tmp_path: Path) -> None:
    from adapters.drivers.simulated_world import PersistedWorld

    path = tmp_path / "world.json"
    world = PersistedWorld(SimulatedInfrastructure(clock, boot_seconds=30), path)
    assert isinstance(world, CloudDriver) and isinstance(world, PodDriver)
    world.provision(f.provision("general-00001"))
    world.run(f.run_pod("web-1", "general-00001", runtime="kata"))
    clock.advance(60)
    seen = world.watch(0)
    assert [o.report for o in seen] == ["starting", "running"]
    assert world.watch(0) == []

    # A new process (a new infrastructure object) on the same file: the VM and the Pod are
    # still there, and the watch lists the Pod's facts again, with the same keys.
    again = PersistedWorld(SimulatedInfrastructure(clock, boot_seconds=30), path)
    assert again.describe("az-1-general-2c4g") == world.describe("az-1-general-2c4g")
    assert [s.state for s in again.describe("az-1-general-2c4g")] == ["running"]
    assert again.watch(0) == seen
    again.run(f.run_pod("web-1", "general-00001", runtime="kata"))  # a retry: no new Pod
    assert again.watch(0) == []
    again.delete(f.delete_pod("web-1", "general-00001"))
    again.terminate(f.terminate("general-00001"))
    last = PersistedWorld(SimulatedInfrastructure(clock), path)
    assert last.infra.pods["web-1"].deleted_at == clock()
    assert [s.state for s in last.describe("az-1-general-2c4g")] == ["gone"]
