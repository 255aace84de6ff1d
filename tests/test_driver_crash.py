"""`cis driver cloud --provider aws` as a process, against moto server and tansu: SIGKILLed
mid-batch and restarted, it makes no VM twice and loses no command; scale-in terminates
exactly the nodes asked for, and at the end no VM is left behind."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.drivers.aws import NODE_TAG
from adapters.kafka_io import CommandSource, Publisher
from schemas.commands import command_adapter
from simulations.tansu import Broker
from tests import driver_fixtures as f
from tests.moto_fixtures import REGION, MotoServer, moto_server  # noqa: F401 (fixture)

GUARD_S = 120.0  # against hangs only
NODES = [f"general-{k:05d}" for k in range(1, 61)]


def done_commands(ledger: Path) -> int:
    if not ledger.exists():
        return 0
    try:
        with sqlite3.connect(ledger, timeout=5) as db:
            return int(db.execute(
                "SELECT count(*) FROM commands WHERE state = 'done'").fetchone()[0])
    except sqlite3.OperationalError:  # the table is not made yet
        return 0


def wait_for(what: Callable[[], bool], process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + GUARD_S
    while not what():
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.05)


@pytest.fixture
def aws_setup(moto_server: MotoServer) -> dict[str, Any]:  # noqa: F811
    moto_server.reset()
    (subnet,), image = moto_server.network()
    return {"ec2": moto_server.client("ec2"), "url": moto_server.url, "subnet": subnet,
            "image": image}


class Workers:
    """Starts a `cis driver …` worker process again and again (as a supervisor would), each
    with its own log; the ones still alive are killed at the end."""

    def __init__(self, name: str, argv: list[str], tmp_path: Path, topics: dict[str, str],
                 env: dict[str, str] | None = None) -> None:
        self.name, self.argv, self.tmp_path, self.topics = name, argv, tmp_path, topics
        self.env = {**os.environ, **(env or {})}
        self.started: list[subprocess.Popen[bytes]] = []

    def __call__(self) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.tmp_path / f"{self.name}-{len(self.started)}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "adapters.cli_drivers", "driver", *self.argv],
                stdout=out, stderr=subprocess.STDOUT, env=self.env)
        self.started.append(process)
        return process, log

    def kill_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def driver_process(aws_setup: dict[str, Any], kafka_broker: Broker,
                   kafka_topic_factory: Callable[..., str], tmp_path: Path
                   ) -> Iterator[Workers]:
    topics = {"vm": kafka_topic_factory("vm", partitions=2),
              "reports": kafka_topic_factory("reports", partitions=1),
              "dlq": kafka_topic_factory("dlq", partitions=1)}
    workers = Workers("driver", [
        "cloud", "--provider", "aws", "--kafka", kafka_broker.bootstrap,
        "--state", str(tmp_path / "ledger.db"), "--vm-topic", topics["vm"],
        "--reports-topic", topics["reports"], "--dlq-topic", topics["dlq"],
        "--region", REGION, "--endpoint-url", aws_setup["url"],
        "--image-id", aws_setup["image"], "--subnet", aws_setup["subnet"],
        "--observe-interval", "0.2", "--backoff", "0.1", "--log-level", "info"],
        tmp_path, topics, env={"AWS_ACCESS_KEY_ID": "testing",
                               "AWS_SECRET_ACCESS_KEY": "testing"})
    yield workers
    workers.kill_all()


def live_vms(ec2: Any) -> dict[str, int]:
    found = ec2.describe_instances(Filters=[
        {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
        {"Name": "tag-key", "Values": [NODE_TAG]}])
    counts: dict[str, int] = {}
    for reservation in found["Reservations"]:
        for instance in reservation["Instances"]:
            node = {t["Key"]: t["Value"] for t in instance["Tags"]}[NODE_TAG]
            counts[node] = counts.get(node, 0) + 1
    return counts


def test_sigkill_mid_batch_makes_no_duplicate_vm_and_loses_no_command(
        driver_process: Any, aws_setup: dict[str, Any], kafka_broker: Broker,
        tmp_path: Path) -> None:
    topics = driver_process.topics
    ledger = tmp_path / "ledger.db"
    with Publisher(kafka_broker.bootstrap) as publisher:
        for node in NODES:
            command = f.provision(node)
            publisher.send_command(topics["vm"], command.cell, command.model_dump_json().encode())
        publisher.flush()
        process, log = driver_process()
        wait_for(lambda: done_commands(ledger) >= 5, process, log)
        process.send_signal(signal.SIGKILL)
        process.wait()
        killed_at = done_commands(ledger)
        assert killed_at < len(NODES), "killed mid-batch"

        process, log = driver_process()
        wait_for(lambda: done_commands(ledger) == len(NODES), process, log)
        assert live_vms(aws_setup["ec2"]) == dict.fromkeys(NODES, 1), "no VM twice, none lost"

        # Scale-in: exactly the nodes asked for go.
        leaving = NODES[::3]
        for node in leaving:
            command = f.terminate(node)
            publisher.send_command(topics["vm"], command.cell, command.model_dump_json().encode())
        publisher.flush()
        wait_for(lambda: done_commands(ledger) == len(NODES) + len(leaving), process, log)
        assert live_vms(aws_setup["ec2"]) == {n: 1 for n in NODES if n not in leaving}

        # Every node was reported ready once it ran (repeats carry the same command_id).
        with CommandSource(kafka_broker.bootstrap, topics["reports"]) as source:
            source.seek_all({0: 0})
            ready: set[str] = set()
            deadline = time.monotonic() + GUARD_S
            while not set(NODES) - set(leaving) <= ready:
                assert time.monotonic() < deadline, sorted(set(NODES) - ready)
                for records in source.poll_batch(timeout_ms=200).values():
                    for record in records:
                        report = command_adapter.validate_json(record.value)
                        assert report.type == "ReportNodeReady", report
                        ready.add(report.node_id)  # type: ignore[attr-defined]

        for node in NODES:
            if node not in leaving:
                command = f.terminate(node)
                publisher.send_command(topics["vm"], command.cell,
                                       command.model_dump_json().encode())
        publisher.flush()
        wait_for(lambda: done_commands(ledger) == 2 * len(NODES), process, log)
    assert live_vms(aws_setup["ec2"]) == {}, "no VM left behind"
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
    assert '"event": "stopped"' in log.read_text()


INSTANCES = [f"web-{k:03d}" for k in range(120)]


def node_of(instance: str) -> str:
    return f"general-{int(instance.split('-')[1]) % 7 + 1:05d}"


@pytest.fixture
def pods_process(kafka_broker: Broker, kafka_topic_factory: Callable[..., str], tmp_path: Path
                 ) -> Iterator[Workers]:
    topics = {"pod": kafka_topic_factory("pod", partitions=2),
              "reports": kafka_topic_factory("reports", partitions=1),
              "dlq": kafka_topic_factory("dlq", partitions=1)}
    workers = Workers("pods", [
        "pods", "--provider", "simulated", "--kafka", kafka_broker.bootstrap,
        "--state", str(tmp_path / "ledger.db"), "--world", str(tmp_path / "world.json"),
        "--pod-topic", topics["pod"], "--reports-topic", topics["reports"],
        "--dlq-topic", topics["dlq"], "--log-level", "info"], tmp_path, topics)
    yield workers
    workers.kill_all()


def world_pods(path: Path) -> dict[str, dict[str, Any]]:
    return dict(json.loads(path.read_text())["pods"]) if path.exists() else {}


def running_reports(bootstrap: str, topic: str) -> dict[str, set[str]]:
    """Instances reported running, by instance: the report ids (one fact, one id)."""
    got: dict[str, set[str]] = {}
    with CommandSource(bootstrap, topic) as source:
        source.seek_all({0: 0})
        while batch := source.poll_batch(timeout_ms=500):
            for records in batch.values():
                for record in records:
                    report = command_adapter.validate_json(record.value)
                    if report.type == "ReportInstanceRunning":
                        got.setdefault(report.instance_id, set()).add(  # type: ignore
                            report.command_id)
    return got


def test_sigkill_of_the_pod_driver_leaves_no_pod_without_instance_or_instance_without_pod(
        pods_process: Any, kafka_broker: Broker, tmp_path: Path) -> None:
    topics, ledger, world = pods_process.topics, tmp_path / "ledger.db", tmp_path / "world.json"

    def send(commands: list[Any]) -> None:
        with Publisher(kafka_broker.bootstrap) as publisher:
            for command in commands:
                publisher.send_command(topics["pod"], command.cell,
                                       command.model_dump_json().encode())
            publisher.flush()

    runs = {name: f.run_pod(name, node_of(name)) for name in INSTANCES}
    send(list(runs.values()))
    for batch, expected in (("runs", len(INSTANCES)), ("deletes", 2 * len(INSTANCES))):
        process, log = pods_process()
        first = expected - len(INSTANCES) + 5
        wait_for(lambda: done_commands(ledger) >= first, process, log)  # noqa: B023
        process.send_signal(signal.SIGKILL)
        process.wait()
        assert done_commands(ledger) < expected, f"killed mid-batch of {batch}"
        process, log = pods_process()
        wait_for(lambda: done_commands(ledger) == expected, process, log)  # noqa: B023
        pods = world_pods(world)
        # One Pod per RunPod, made by that command: none lost, none made twice or by another.
        assert {k: p["command"]["command_id"] for k, p in pods.items()} == {
            k: c.command_id for k, c in runs.items()}
        if batch == "runs":
            assert all(p["deleted_at"] is None for p in pods.values())
            # Every instance is reported running (a repeat after the restart has its id).
            wait_for(lambda: running_reports(kafka_broker.bootstrap, topics["reports"]).keys()
                     == set(INSTANCES), process, log)
            ids = running_reports(kafka_broker.bootstrap, topics["reports"])
            assert all(len(v) == 1 for v in ids.values()), "one fact, one report id"
        else:
            assert all(p["deleted_at"] is not None for p in pods.values()), \
                "every DeletePod carried out: no Pod left without an instance"
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        if batch == "runs":  # the instances stop while no driver runs
            send([f.delete_pod(name, node_of(name)) for name in INSTANCES])
    assert h_read_all(kafka_broker.bootstrap, topics["dlq"]) == 0, "nothing dead-lettered"


def h_read_all(bootstrap: str, topic: str) -> int:
    with CommandSource(bootstrap, topic) as source:
        source.seek_all({0: 0})
        return sum(len(r) for r in source.poll_batch(timeout_ms=1000).values())
