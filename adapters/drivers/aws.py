"""`CloudDriver` on AWS: EC2 plus Auto Scaling, through boto3.

One Auto Scaling group per node group (`{cell}-{pool}-{model}`), launching from a launch
template of the same name (image, instance type), tagged with the cell, pool and the node
model label. A node is one EC2 instance:

- provision: the instance is launched with `RunInstances` from the group's template with a
  `ClientToken` derived from the command_id (AWS returns the same instance for a retried
  token) and tagged with its node id, cell, group and command id; before launching, the
  driver looks for an instance with that node id tag (a retry after the token expired, or
  an endpoint without token idempotency, still finds the first VM). Once running, it is
  attached to its group (`AttachInstances` raises the desired capacity by one; AWS attaches
  only running instances) and protected from the group's own scale-in: the engine decides
  which node goes.
- terminate: `TerminateInstanceInAutoScalingGroup(ShouldDecrementDesiredCapacity=True)`;
  an instance not attached yet is terminated directly; one already gone is no error.
- describe: the group's instances by tag, states in our words (ports.NodeState).

node_id -> instance id is found by tag, so the cloud itself is the durable mapping; the
worker's ledger keeps a copy (adapters/driver_ledger.py).
"""

from __future__ import annotations

import hashlib
import logging
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from adapters.ports import DriverError, NodeState, NodeStatus
from schemas.infra import ProvisionNode, TerminateNode

log = logging.getLogger("cis.driver.aws")

TAG = "cis.io"
NODE_TAG, CELL_TAG, GROUP_TAG = f"{TAG}/node-id", f"{TAG}/cell", f"{TAG}/node-group"
POOL_TAG, MODEL_TAG, COMMAND_TAG = f"{TAG}/pool", f"{TAG}/model", f"{TAG}/command-id"
STATES: dict[str, NodeState] = {"pending": "pending", "running": "running",
                                "stopping": "stopped", "stopped": "stopped",
                                "shutting-down": "gone", "terminated": "gone"}
LIVE = ["pending", "running", "stopping", "stopped"]

# A model `{vCPU}C{GiB}G` -> an EC2 type of the 6th generation Intel families by memory per
# vCPU (c: 2 GiB, m: 4 GiB, r: 8 GiB) and size by vCPUs. --instance-type overrides.
FAMILIES = {2: "c6i", 4: "m6i", 8: "r6i"}
SIZES = {2: "large", 4: "xlarge", 8: "2xlarge", 16: "4xlarge", 32: "8xlarge", 48: "12xlarge",
         64: "16xlarge", 96: "24xlarge", 128: "32xlarge"}


def instance_type(model: str, overrides: dict[str, str] | None = None) -> str:
    if overrides and model in overrides:
        return overrides[model]
    match = re.fullmatch(r"(\d+)C(\d+)G", model)
    if match:
        vcpu, gib = int(match[1]), int(match[2])
        family, size = FAMILIES.get(gib // vcpu if gib % vcpu == 0 else 0), SIZES.get(vcpu)
        if family and size:
            return f"{family}.{size}"
    raise DriverError(f"no EC2 instance type for node model {model!r}: give "
                      f"--instance-type {model}=TYPE")


def client_token(command_id: str) -> str:
    """RunInstances' idempotency token (at most 64 ASCII characters), one per command."""
    return "cis-" + hashlib.sha256(command_id.encode()).hexdigest()[:60]


@dataclass(frozen=True)
class AwsConfig:
    image_id: str
    subnets: list[str]
    security_groups: list[str] = field(default_factory=list)
    instance_types: dict[str, str] = field(default_factory=dict)  # model -> EC2 type
    max_nodes_per_group: int = 1000


class AwsCloudDriver:
    """Implements `CloudDriver` (adapters/ports.py)."""

    def __init__(self, ec2: Any, autoscaling: Any, config: AwsConfig) -> None:
        if not config.subnets:
            raise ValueError("AwsConfig needs at least one subnet")
        self.ec2 = ec2
        self.autoscaling = autoscaling
        self.config = config
        self._groups: set[str] = set()  # groups known to exist

    @classmethod
    def connect(cls, config: AwsConfig, region: str, endpoint_url: str | None = None
                ) -> AwsCloudDriver:
        import boto3
        from botocore.config import Config

        # boto3's own retries (standard mode) absorb throttling; the worker retries the rest.
        retries = Config(retries={"max_attempts": 5, "mode": "standard"})
        session = boto3.session.Session(region_name=region)
        return cls(session.client("ec2", endpoint_url=endpoint_url, config=retries),
                   session.client("autoscaling", endpoint_url=endpoint_url, config=retries),
                   config)

    # --- CloudDriver ----------------------------------------------------------------

    def provision(self, command: ProvisionNode) -> str:
        self._ensure_group(command)
        found = self._instances([{"Name": f"tag:{NODE_TAG}", "Values": [command.node_id]},
                                 {"Name": f"tag:{CELL_TAG}", "Values": [command.cell]},
                                 {"Name": "instance-state-name", "Values": LIVE}])
        if found:
            return str(found[0]["InstanceId"])
        tags = {**{k: v for k, v in command.labels.items() if not k.startswith("aws:")},
                "Name": command.node_id, NODE_TAG: command.node_id, CELL_TAG: command.cell,
                GROUP_TAG: command.node_group, POOL_TAG: command.pool,
                MODEL_TAG: command.model, COMMAND_TAG: command.command_id}
        subnets = self.config.subnets
        launched = self.ec2.run_instances(
            LaunchTemplate={"LaunchTemplateName": command.node_group, "Version": "$Latest"},
            MinCount=1, MaxCount=1, ClientToken=client_token(command.command_id),
            SubnetId=subnets[zlib.crc32(command.node_id.encode()) % len(subnets)],
            TagSpecifications=[{"ResourceType": "instance", "Tags": _tags(tags)}])
        return str(launched["Instances"][0]["InstanceId"])

    def terminate(self, command: TerminateNode) -> None:
        found = self._instances([{"Name": f"tag:{NODE_TAG}", "Values": [command.node_id]},
                                 {"Name": f"tag:{CELL_TAG}", "Values": [command.cell]},
                                 {"Name": "instance-state-name", "Values": LIVE}])
        for instance in found:
            instance_id = instance["InstanceId"]
            attached = self.autoscaling.describe_auto_scaling_instances(
                InstanceIds=[instance_id])["AutoScalingInstances"]
            if attached:
                self.autoscaling.terminate_instance_in_auto_scaling_group(
                    InstanceId=instance_id, ShouldDecrementDesiredCapacity=True)
            else:
                self.ec2.terminate_instances(InstanceIds=[instance_id])

    def describe(self, node_group: str) -> Sequence[NodeStatus]:
        statuses: list[NodeStatus] = []
        detached: list[str] = []
        for instance in self._instances([{"Name": f"tag:{GROUP_TAG}",
                                          "Values": [node_group]}]):
            tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
            if NODE_TAG not in tags:
                continue  # not one of ours (launched by the group itself, or by hand)
            state = STATES.get(instance["State"]["Name"], "gone")
            statuses.append(NodeStatus(tags[NODE_TAG], instance["InstanceId"], state,
                                       detail=instance["State"]["Name"]))
            if state == "running" and "aws:autoscaling:groupName" not in tags:
                detached.append(instance["InstanceId"])
        if detached:
            try:
                self._attach(node_group, detached)
            except Exception as exc:  # readiness is still reported; attaching is tried again
                log.warning("could not attach to the group", extra={"fields": {
                    "node_group": node_group, "instances": detached, "error": repr(exc)[:300]}})
        return statuses

    # --- the group --------------------------------------------------------------------

    def _attach(self, node_group: str, instance_ids: list[str]) -> None:
        attached = {i["InstanceId"] for i in self.autoscaling.describe_auto_scaling_instances(
            InstanceIds=instance_ids)["AutoScalingInstances"]}
        todo = [i for i in instance_ids if i not in attached]
        for start in range(0, len(todo), 20):  # AttachInstances takes at most 20
            chunk = todo[start:start + 20]
            self.autoscaling.attach_instances(InstanceIds=chunk,
                                              AutoScalingGroupName=node_group)
            self.autoscaling.set_instance_protection(
                InstanceIds=chunk, AutoScalingGroupName=node_group, ProtectedFromScaleIn=True)

    def _ensure_group(self, command: ProvisionNode) -> None:
        name = command.node_group
        if name in self._groups:
            return
        found = self.autoscaling.describe_auto_scaling_groups(
            AutoScalingGroupNames=[name])["AutoScalingGroups"]
        if not found:
            self._ensure_template(command)
            tags = {CELL_TAG: command.cell, POOL_TAG: command.pool, MODEL_TAG: command.model,
                    GROUP_TAG: name}
            try:
                self.autoscaling.create_auto_scaling_group(
                    AutoScalingGroupName=name,
                    LaunchTemplate={"LaunchTemplateName": name, "Version": "$Latest"},
                    MinSize=0, MaxSize=self.config.max_nodes_per_group, DesiredCapacity=0,
                    VPCZoneIdentifier=",".join(self.config.subnets),
                    NewInstancesProtectedFromScaleIn=True,
                    Tags=[{"Key": k, "Value": v, "PropagateAtLaunch": False,
                           "ResourceId": name, "ResourceType": "auto-scaling-group"}
                          for k, v in tags.items()])
            except self.autoscaling.exceptions.AlreadyExistsFault:
                pass  # made by a previous attempt that did not finish
        self._groups.add(name)

    def _ensure_template(self, command: ProvisionNode) -> None:
        data: dict[str, Any] = {
            "ImageId": self.config.image_id,
            "InstanceType": instance_type(command.model, self.config.instance_types)}
        if self.config.security_groups:
            data["SecurityGroupIds"] = list(self.config.security_groups)
        try:
            self.ec2.create_launch_template(
                LaunchTemplateName=command.node_group, LaunchTemplateData=data,
                ClientToken=client_token(f"template/{command.node_group}"),
                TagSpecifications=[{"ResourceType": "launch-template", "Tags": _tags(
                    {CELL_TAG: command.cell, POOL_TAG: command.pool,
                     MODEL_TAG: command.model})}])
        except self.ec2.exceptions.ClientError as exc:
            if "AlreadyExists" not in exc.response.get("Error", {}).get("Code", ""):
                raise

    def _instances(self, filters: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for page in self.ec2.get_paginator("describe_instances").paginate(Filters=filters):
            for reservation in page["Reservations"]:
                out.extend(reservation["Instances"])
        return out


def _tags(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": v} for k, v in sorted(tags.items())]
