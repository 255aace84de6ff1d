"""The driver worker against a real tansu broker: commands in, carried out once per
command_id through the simulated infrastructure, reports out keyed by cell; bad input
dead-lettered, never a crash loop."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from adapters.driver_ledger import Ledger
from adapters.driver_worker import CloudHandler, DriverWorker, Handler, PodHandler, WorkerConfig
from adapters.drivers.simulated import SimulatedInfrastructure, VirtualClock
from adapters.kafka_io import DLQ_REASON_HEADER, CommandSource, Publisher, Record, partition_for
from schemas.commands import command_adapter
from schemas.infra import InfraCommandBase, ProvisionNode
from simulations.tansu import Broker
from tests import driver_fixtures as f

MakeTopic = Callable[..., str]
GUARD_S = 30.0  # against hangs only: nothing asserts on time


@pytest.fixture
def publisher(kafka_broker: Broker) -> Iterator[Publisher]:
    with Publisher(kafka_broker.bootstrap, client_id="test-driver") as pub:
        yield pub


@pytest.fixture
def topics(kafka_topic_factory: MakeTopic) -> dict[str, str]:
    return {"topic": kafka_topic_factory("vm", partitions=2),
            "reports_topic": kafka_topic_factory("reports", partitions=2),
            "dlq_topic": kafka_topic_factory("dlq", partitions=1)}


def send(publisher: Publisher, topic: str, *commands: InfraCommandBase | bytes) -> None:
    for command in commands:
        if isinstance(command, bytes):
            publisher.send(topic, command, key=f.CELL.encode())
        else:
            publisher.send_command(topic, command.cell, command.model_dump_json().encode())
    publisher.flush()


def worker(broker: Broker, topics: dict[str, str], handler: Handler, ledger: Ledger,
           **config: Any) -> DriverWorker:
    return DriverWorker(handler, ledger, WorkerConfig(
        kafka=broker.bootstrap, poll_timeout_ms=200, backoff_s=0.0, client_id="test-driver",
        **topics, **config))


def step_until(w: DriverWorker, done: Callable[[], bool]) -> None:
    deadline = time.monotonic() + GUARD_S
    while not done():
        assert time.monotonic() < deadline, w.counters
        w.step()


def read_all(broker: Broker, topic: str, expected: int) -> list[Record]:
    got: list[Record] = []
    with CommandSource(broker.bootstrap, topic) as source:
        source.seek_all(dict.fromkeys(source.partitions, 0))
        deadline = time.monotonic() + GUARD_S
        while len(got) < expected:
            assert time.monotonic() < deadline, f"{len(got)}/{expected} records"
            for records in source.poll_batch(timeout_ms=200).values():
                got.extend(records)
        for records in source.poll_batch(timeout_ms=300).values():
            got.extend(records)  # and nothing more
    return got


def test_commands_are_carried_out_once_and_nodes_reported_ready(
        kafka_broker: Broker, topics: dict[str, str], publisher: Publisher,
        tmp_path: Path) -> None:
    clock = VirtualClock(f.T0)
    infra = SimulatedInfrastructure(clock, boot_seconds=45)
    ledger = Ledger(tmp_path / "ledger.db")
    commands = [f.provision(f"general-0000{k}") for k in (1, 2, 3)]
    # The outbox re-sends after a crash: the same commands again, byte for byte.
    send(publisher, topics["topic"], *commands, commands[0], commands[1])
    w = worker(kafka_broker, topics, CloudHandler(infra, ledger, clock), ledger)
    step_until(w, lambda: w.counters.done + w.counters.skipped == 5)
    assert (w.counters.done, w.counters.skipped) == (3, 2)
    assert [verb for verb, _ in infra.calls] == ["provision"] * 3, "at most once per id"
    assert len(infra.nodes) == 3
    clock.advance(45)
    step_until(w, lambda: w.counters.reports == 3)
    w.reset()
    records = read_all(kafka_broker, topics["reports_topic"], 3)
    reports = [command_adapter.validate_json(r.value) for r in records]
    assert sorted((r.type, r.node_id) for r in reports) == [
        ("ReportNodeReady", c.node_id) for c in commands]
    assert {(r.key, r.partition) for r in records} == {
        (f.CELL.encode(), partition_for(f.CELL, 2))}, "keyed by cell"
    assert {r.occurred_at for r in reports} == {clock()}
    # A restarted worker re-reads nothing it finished and repeats no report.
    w2 = worker(kafka_broker, topics, CloudHandler(infra, Ledger(tmp_path / "ledger.db"),
                                                   clock), Ledger(tmp_path / "ledger.db"))
    w2.step()
    w2.reset()
    assert (w2.counters.done, w2.counters.skipped, w2.counters.reports) == (0, 0, 0)


def test_a_crash_after_acting_is_redone_without_a_second_vm(
        kafka_broker: Broker, topics: dict[str, str], publisher: Publisher,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = VirtualClock(f.T0)
    infra = SimulatedInfrastructure(clock)
    path = tmp_path / "ledger.db"
    command = f.provision("general-00001")
    send(publisher, topics["topic"], command)
    ledger = Ledger(path)

    def crash(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt("killed after the VM was launched, before it was recorded")

    monkeypatch.setattr(ledger, "finish", crash)
    w = worker(kafka_broker, topics, CloudHandler(infra, ledger, clock), ledger)
    with pytest.raises(KeyboardInterrupt):
        step_until(w, lambda: False)
    w.reset()
    assert Ledger(path).command(command.command_id) == ("intent", 1)

    restarted = Ledger(path)
    w2 = worker(kafka_broker, topics, CloudHandler(infra, restarted, clock), restarted)
    step_until(w2, lambda: w2.counters.done == 1)
    w2.reset()
    assert infra.calls == [("provision", command.command_id)] * 2, "attempted again ..."
    assert len(infra.nodes) == 1, "... but one VM: the driver is idempotent per command"
    assert restarted.command(command.command_id) == ("done", 2)
    assert restarted.node("general-00001").provider_id == "sim-000001"  # type: ignore


class Flaky(SimulatedInfrastructure):
    """Fails `fail_times` calls for each node id in `failing` (a cloud API error)."""

    def __init__(self, clock: VirtualClock, failing: dict[str, int]) -> None:
        super().__init__(clock)
        self.failing = failing

    def provision(self, command: ProvisionNode) -> str:
        if self.failing.get(command.node_id, 0) > 0:
            self.failing[command.node_id] -= 1
            self.calls.append(("failed", command.command_id))
            raise RuntimeError("RequestLimitExceeded: slow down")
        return super().provision(command)


def test_bad_input_is_dead_lettered_and_the_worker_goes_on(
        kafka_broker: Broker, topics: dict[str, str], publisher: Publisher,
        tmp_path: Path) -> None:
    clock = VirtualClock(f.T0)
    infra = Flaky(clock, {"flaky-00001": 2, "broken-00001": 99})
    ledger = Ledger(tmp_path / "ledger.db")
    not_json = b"\xff not json"
    wrong = f.provision("general-00009").model_dump_json().replace('"2C4G"', "42").encode()
    send(publisher, topics["topic"], not_json, wrong, f.provision("broken-00001"),
         f.provision("flaky-00001"), f.provision("general-00001"))
    w = worker(kafka_broker, topics, CloudHandler(infra, ledger, clock), ledger,
               max_attempts=3)
    step_until(w, lambda: w.counters.done + w.counters.dead == 5)
    w.reset()
    assert (w.counters.done, w.counters.dead, w.counters.retries) == (2, 3, 4)
    assert sorted(infra.nodes) == ["flaky-00001", "general-00001"]
    assert [v for v, c in infra.calls if "broken" in c] == ["failed"] * 3
    dead = read_all(kafka_broker, topics["dlq_topic"], 3)
    reasons = {r.value: dict(r.headers)[DLQ_REASON_HEADER].decode() for r in dead}
    assert reasons[not_json].startswith("malformed: ValidationError")
    assert reasons[wrong].startswith("malformed:") and "model" in reasons[wrong]
    broken = f.provision("broken-00001").model_dump_json().encode()
    assert reasons[broken] == ("failed 3 times; last: RuntimeError: RequestLimitExceeded: "
                               "slow down")
    assert ledger.commands("dead") == [f.provision("broken-00001").command_id]


def test_a_command_that_killed_the_worker_too_often_is_given_up(
        kafka_broker: Broker, topics: dict[str, str], publisher: Publisher,
        tmp_path: Path) -> None:
    clock = VirtualClock(f.T0)
    infra = SimulatedInfrastructure(clock)
    ledger = Ledger(tmp_path / "ledger.db")
    command = f.provision("general-00001")
    for _ in range(3):  # three attempts whose worker died mid-call
        ledger.intend(command.command_id)
    send(publisher, topics["topic"], command)
    w = worker(kafka_broker, topics, CloudHandler(infra, ledger, clock), ledger,
               max_attempts=3)
    step_until(w, lambda: w.counters.dead == 1)
    w.reset()
    assert infra.calls == [], "not tried a fourth time"
    [record] = read_all(kafka_broker, topics["dlq_topic"], 1)
    assert b"gave up after 3 attempts" in dict(record.headers)[DLQ_REASON_HEADER]


def test_pod_worker_runs_and_deletes_pods_and_reports_their_states(
        kafka_broker: Broker, kafka_topic_factory: MakeTopic, publisher: Publisher,
        tmp_path: Path) -> None:
    topics = {"topic": kafka_topic_factory("pod", partitions=2),
              "reports_topic": kafka_topic_factory("reports", partitions=1),
              "dlq_topic": kafka_topic_factory("dlq", partitions=1)}
    clock = VirtualClock(f.T0)
    infra = SimulatedInfrastructure(clock)
    ledger = Ledger(tmp_path / "ledger.db")
    send(publisher, topics["topic"], f.run_pod("web-1", "general-00001", runtime="kata"),
         f.run_pod("web-2", "general-00001"))
    w = worker(kafka_broker, topics, PodHandler(infra), ledger)
    step_until(w, lambda: w.counters.done == 2)
    clock.advance(1.249)
    step_until(w, lambda: w.counters.reports == 4)
    send(publisher, topics["topic"], f.delete_pod("web-2", "general-00001"))
    step_until(w, lambda: w.counters.done == 3)
    clock.advance(3600)
    w.step()
    w.reset()
    reports = [command_adapter.validate_json(r.value)
               for r in read_all(kafka_broker, topics["reports_topic"], 4)]
    assert sorted((r.instance_id, r.type) for r in reports) == [
        ("web-1", "ReportInstanceRunning"), ("web-1", "ReportInstanceStarting"),
        ("web-2", "ReportInstanceRunning"), ("web-2", "ReportInstanceStarting")]
    assert {(r.account, r.node_id) for r in reports} == {("acme", "general-00001")}
    assert [v for v, _ in infra.calls] == ["run", "run", "delete"]
    assert infra.pods["web-2"].deleted_at == clock() - timedelta(seconds=3600)
