"""The AWS cloud driver against moto in server mode: real boto3 calls over HTTP to a
`moto_server` the tests start on a free loopback port (tests/moto_fixtures.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from adapters.driver_ledger import Ledger
from adapters.driver_worker import CloudHandler, DriverWorker, WorkerConfig
from adapters.drivers.aws import (
    COMMAND_TAG,
    MODEL_TAG,
    NODE_TAG,
    AwsCloudDriver,
    AwsConfig,
    client_token,
    instance_type,
)
from adapters.kafka_io import CommandSource, Publisher
from adapters.ports import CloudDriver, DriverError
from schemas.commands import command_adapter
from simulations.tansu import Broker
from tests import driver_fixtures as f
from tests.moto_fixtures import REGION, MotoServer, moto_server  # noqa: F401 (fixture)


@dataclass
class Aws:
    ec2: Any
    autoscaling: Any
    driver: AwsCloudDriver

    def instances(self, **filters: list[str]) -> list[dict[str, Any]]:
        found = self.ec2.describe_instances(Filters=[
            {"Name": k.replace("_", "-") if not k.startswith("tag") else k, "Values": v}
            for k, v in filters.items()])
        return [i for r in found["Reservations"] for i in r["Instances"]]

    def live(self, node_id: str) -> list[dict[str, Any]]:
        return [i for i in self.instances(**{f"tag:{NODE_TAG}": [node_id]})
                if i["State"]["Name"] not in ("terminated", "shutting-down")]

    def group(self, name: str) -> dict[str, Any]:
        [group] = self.autoscaling.describe_auto_scaling_groups(
            AutoScalingGroupNames=[name])["AutoScalingGroups"]
        return group  # type: ignore[no-any-return]


@pytest.fixture
def aws(moto_server: MotoServer) -> Iterator[Aws]:  # noqa: F811
    moto_server.reset()
    ec2 = moto_server.client("ec2")
    subnets, image = moto_server.network("ab")
    driver = AwsCloudDriver.connect(AwsConfig(image_id=image, subnets=subnets), REGION,
                                    endpoint_url=moto_server.url)
    yield Aws(ec2, moto_server.client("autoscaling"), driver)


def test_model_names_map_to_instance_types() -> None:
    assert [instance_type(m) for m in ("2C4G", "4C16G", "8C64G", "16C32G")] == [
        "c6i.large", "m6i.xlarge", "r6i.2xlarge", "c6i.4xlarge"]
    assert instance_type("1C2G", {"1C2G": "t3.small"}) == "t3.small"
    with pytest.raises(DriverError, match="--instance-type 3C5G=TYPE"):
        instance_type("3C5G")
    token = client_token("az-1:node/general-00001#1")
    assert len(token) <= 64 and token == client_token("az-1:node/general-00001#1")
    assert token != client_token("az-1:node/general-00001#2")


def test_provisioning_launches_one_tagged_vm_per_node_into_its_models_group(aws: Aws) -> None:
    assert isinstance(aws.driver, CloudDriver)
    small, large = f.provision("general-00001"), f.provision("general-00002", model="4C16G")
    vm = aws.driver.provision(small)
    assert aws.driver.provision(small) == vm, "a retried command finds its VM"
    # A driver restarted (its memory of groups gone) does not make a second VM either.
    again = AwsCloudDriver(aws.ec2, aws.autoscaling, aws.driver.config)
    assert again.provision(small) == vm
    aws.driver.provision(large)
    [instance] = aws.live("general-00001")
    tags = {t["Key"]: t["Value"] for t in instance["Tags"]}
    assert instance["InstanceType"] == "c6i.large"
    assert (tags[MODEL_TAG], tags[COMMAND_TAG], tags["cis.io/pool"]) == (
        "2C4G", small.command_id, "general")
    assert aws.live("general-00002")[0]["InstanceType"] == "m6i.xlarge"
    for command in (small, large):
        group = aws.group(command.node_group)
        group_tags = {t["Key"]: t["Value"] for t in group["Tags"]}
        assert group_tags[MODEL_TAG] == command.model
        assert group["LaunchTemplate"]["LaunchTemplateName"] == command.node_group
    # Running VMs are attached to their group when described (AWS attaches only running
    # ones), raising its desired capacity.
    [status] = aws.driver.describe(small.node_group)
    assert (status.node_id, status.provider_id, status.state) == ("general-00001", vm,
                                                                  "running")
    group = aws.group(small.node_group)
    assert [i["InstanceId"] for i in group["Instances"]] == [vm]
    assert group["DesiredCapacity"] == 1
    assert group["Instances"][0]["ProtectedFromScaleIn"] is True


def test_termination_goes_through_the_group_and_decrements_desired_capacity(
        aws: Aws) -> None:
    commands = [f.provision(f"general-0000{k}") for k in (1, 2)]
    vms = [aws.driver.provision(c) for c in commands]
    aws.driver.describe(commands[0].node_group)  # attach
    assert aws.group(commands[0].node_group)["DesiredCapacity"] == 2
    aws.driver.terminate(f.terminate("general-00001"))
    aws.driver.terminate(f.terminate("general-00001"))  # again: already gone, no error
    group = aws.group(commands[0].node_group)
    assert group["DesiredCapacity"] == 1
    assert [i["InstanceId"] for i in group["Instances"]] == [vms[1]]
    [gone] = aws.instances(instance_id=[vms[0]])
    assert gone["State"]["Name"] in ("shutting-down", "terminated")
    statuses = {s.node_id: s.state for s in aws.driver.describe(commands[0].node_group)}
    assert statuses == {"general-00001": "gone", "general-00002": "running"}


def test_a_vm_not_attached_yet_is_terminated_directly(aws: Aws) -> None:
    vm = aws.driver.provision(f.provision("general-00001"))
    aws.driver.terminate(f.terminate("general-00001"))
    [gone] = aws.instances(instance_id=[vm])
    assert gone["State"]["Name"] in ("shutting-down", "terminated")


def test_vms_stopped_or_terminated_outside_our_commands_are_reported_lost(
        aws: Aws, tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    handler = CloudHandler(aws.driver, ledger)
    for k in (1, 2, 3, 4):
        ledger.put_node(handler.act(f.provision(f"general-0000{k}")))  # type: ignore

    def reports() -> dict[str, str]:
        due = handler.observe(0)
        handler.observed([memo for _, memo in due])
        return {r.node_id: r.type for r, _ in due}  # type: ignore[attr-defined]

    assert reports() == {f"general-0000{k}": "ReportNodeReady" for k in (1, 2, 3, 4)}
    [stopped], [killed] = aws.live("general-00001"), aws.live("general-00002")
    aws.ec2.stop_instances(InstanceIds=[stopped["InstanceId"]])
    aws.ec2.terminate_instances(InstanceIds=[killed["InstanceId"]])
    ledger.put_node(handler.act(f.terminate("general-00003")))  # type: ignore[arg-type]
    assert reports() == {"general-00001": "ReportNodeLost", "general-00002": "ReportNodeLost"}
    assert reports() == {}
    # The engine sends no TerminateNode for a lost node: the VM left stopped is ended here.
    [ended] = aws.instances(instance_id=[stopped["InstanceId"]])
    assert ended["State"]["Name"] in ("shutting-down", "terminated")
    assert {n.node_id: n.state for n in ledger.nodes("ready", "lost", "terminated")} == {
        "general-00001": "lost", "general-00002": "lost", "general-00003": "terminated",
        "general-00004": "ready"}


def test_worker_on_moto_launches_reports_and_terminates_through_kafka(
        aws: Aws, kafka_broker: Broker, kafka_topic_factory: Any, tmp_path: Path) -> None:
    topics = {"topic": kafka_topic_factory("vm", partitions=2),
              "reports_topic": kafka_topic_factory("reports", partitions=1),
              "dlq_topic": kafka_topic_factory("dlq", partitions=1)}
    nodes = [f"general-{k:05d}" for k in range(1, 6)]
    with Publisher(kafka_broker.bootstrap) as publisher:
        for command in [f.provision(n) for n in nodes] + [f.provision(nodes[0])]:
            publisher.send_command(topics["topic"], command.cell,
                                   command.model_dump_json().encode())
        publisher.flush()
        ledger = Ledger(tmp_path / "ledger.db")
        worker = DriverWorker(CloudHandler(aws.driver, ledger), ledger, WorkerConfig(
            kafka=kafka_broker.bootstrap, poll_timeout_ms=200, backoff_s=0, **topics))
        deadline = time.monotonic() + 60
        while worker.counters.reports < len(nodes):
            assert time.monotonic() < deadline, worker.counters
            worker.step()
        for node in nodes[:2]:
            command = f.terminate(node)
            publisher.send_command(topics["topic"], command.cell,
                                   command.model_dump_json().encode())
        publisher.flush()
        while worker.counters.done < len(nodes) + 2:
            assert time.monotonic() < deadline, worker.counters
            worker.step()
        worker.reset()
    assert worker.counters.skipped == 1
    assert {n: len(aws.live(n)) for n in nodes} == {n: int(n not in nodes[:2]) for n in nodes}
    assert aws.group(f.provision(nodes[0]).node_group)["DesiredCapacity"] == 3
    with CommandSource(kafka_broker.bootstrap, topics["reports_topic"]) as source:
        source.seek_all({0: 0})
        got: list[Any] = []
        while len(got) < len(nodes):
            assert time.monotonic() < deadline
            for records in source.poll_batch(timeout_ms=200).values():
                got.extend(command_adapter.validate_json(r.value) for r in records)
    assert sorted(r.node_id for r in got) == nodes
    assert {r.type for r in got} == {"ReportNodeReady"}


def test_a_group_that_refuses_attaching_still_reports_its_running_vms(aws: Aws) -> None:
    full = AwsCloudDriver(aws.ec2, aws.autoscaling,
                          AwsConfig(image_id=aws.driver.config.image_id,
                                    subnets=aws.driver.config.subnets, max_nodes_per_group=1))
    commands = [f.provision(f"general-0000{k}") for k in (1, 2)]
    for command in commands:
        full.provision(command)
    statuses = full.describe(commands[0].node_group)  # both attached at once: over MaxSize
    assert {s.node_id: s.state for s in statuses} == {"general-00001": "running",
                                                      "general-00002": "running"}
    assert aws.group(commands[0].node_group)["Instances"] == []
