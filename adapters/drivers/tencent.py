"""`CloudDriver` on Tencent Cloud: Auto Scaling (AS) and CVM, through tencentcloud-sdk-python.

The node groups' scaling groups are the operator's (each with its launch configuration:
image, instance type = the model); the driver is told `node_group -> AutoScalingGroupId`.
Tencent's ScaleOutInstances takes no client token and cannot tag what it launches, so a
node is tied to its CVM by the instance's *name* (= node_id), and provisioning is made
idempotent by looking before it launches:

1. a CVM named node_id exists: that is the node's VM (a retried command);
2. the group has a VM no node has claimed (named otherwise; launched by an attempt that
   stopped before naming it): it is claimed (renamed node_id);
3. a scale-out of the group is still in progress: nothing is launched; the attempt fails
   and the worker retries with back-off, to claim that VM once it exists;
4. else ScaleOutInstances(1), and its activity's instance is claimed when it is listed
   (this attempt, or the retry's step 2).

So a retried command never launches a second VM while the first is in flight or
unclaimed. termination: RemoveInstances (AS destroys the VMs it created and lowers the
desired count); a VM outside the group is terminated with CVM TerminateInstances.
describe: DescribeAutoScalingInstances for the group's VMs, CVM DescribeInstances for their
names and states.

No Tencent endpoint is reachable from where this was built: the tests check the requests
against the SDK's own models and parse responses shaped as the API reference documents
them; they do not prove the service behaves as documented.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from adapters.ports import DriverError, NodeState, NodeStatus
from schemas.infra import ProvisionNode, TerminateNode

STATES: dict[str, NodeState] = {
    "PENDING": "pending", "STARTING": "pending", "RUNNING": "running", "REBOOTING": "running",
    "STOPPING": "stopped", "STOPPED": "stopped", "SHUTDOWN": "stopped",
    "LAUNCH_FAILED": "gone", "TERMINATING": "gone"}
IN_FLIGHT = ("INIT", "RUNNING")  # activity status codes of a scale-out not finished
PAGE = 100  # the APIs' Limit maximum


class TencentCloudDriver:
    """Implements `CloudDriver` (adapters/ports.py) on an AS and a CVM client."""

    def __init__(self, autoscaling: Any, cvm: Any, groups: dict[str, str]) -> None:
        self.autoscaling = autoscaling
        self.cvm = cvm
        self.groups = dict(groups)

    @classmethod
    def connect(cls, region: str, secret_id: str, secret_key: str,
                groups: dict[str, str]) -> TencentCloudDriver:
        from tencentcloud.autoscaling.v20180419.autoscaling_client import AutoscalingClient
        from tencentcloud.common import credential
        from tencentcloud.cvm.v20170312.cvm_client import CvmClient

        cred = credential.Credential(secret_id, secret_key)
        return cls(AutoscalingClient(cred, region), CvmClient(cred, region), groups)

    # --- CloudDriver ----------------------------------------------------------------

    def provision(self, command: ProvisionNode) -> str:
        group = self._group(command.node_group)
        named = self._cvms(Filters=[{"Name": "instance-name", "Values": [command.node_id]}])
        live = [i for i in named if STATES.get(i["InstanceState"]) != "gone"]
        if live:
            return str(live[0]["InstanceId"])
        claimed = self._claim(group, command.node_id)
        if claimed:
            return claimed
        running = self._as("DescribeAutoScalingActivities", {
            "Filters": [{"Name": "auto-scaling-group-id", "Values": [group]},
                        {"Name": "activity-status-code", "Values": list(IN_FLIGHT)}],
            "Limit": PAGE})["ActivitySet"]
        if running:
            raise DriverError(f"scale-out {running[0]['ActivityId']} of {group} in progress; "
                              f"{command.node_id} claims its VM when it is listed")
        activity = self._as("ScaleOutInstances", {"AutoScalingGroupId": group,
                                                  "ScaleOutNumber": 1})["ActivityId"]
        claimed = self._claim(group, command.node_id)
        if claimed:
            return claimed
        raise DriverError(f"scale-out {activity} of {group} started; {command.node_id} "
                          "claims its VM when it is listed")

    def terminate(self, command: TerminateNode) -> None:
        named = self._cvms(Filters=[{"Name": "instance-name", "Values": [command.node_id]}])
        for instance in (i for i in named if STATES.get(i["InstanceState"]) != "gone"):
            instance_id = instance["InstanceId"]
            member = self._as("DescribeAutoScalingInstances", {"InstanceIds": [instance_id]}
                              )["AutoScalingInstanceSet"]
            if member:
                self._as("RemoveInstances", {
                    "AutoScalingGroupId": member[0]["AutoScalingGroupId"],
                    "InstanceIds": [instance_id]})
            else:
                self._call(self.cvm, "cvm", "TerminateInstances", {"InstanceIds": [instance_id]})

    def describe(self, node_group: str) -> Sequence[NodeStatus]:
        group = self._group(node_group)
        statuses = []
        for instance in self._cvms_of(self._members(group)):
            name = instance.get("InstanceName") or ""
            if name.startswith(_NOT_CLAIMED) or not name:
                continue
            statuses.append(NodeStatus(name, instance["InstanceId"],
                                       STATES.get(instance["InstanceState"], "gone"),
                                       detail=instance["InstanceState"]))
        return statuses

    # --- helpers ----------------------------------------------------------------------

    def _group(self, node_group: str) -> str:
        try:
            return self.groups[node_group]
        except KeyError:
            raise DriverError(f"no Tencent scaling group for node group {node_group!r}: give "
                              f"--group {node_group}=asg-…") from None

    def _claim(self, group: str, node_id: str) -> str | None:
        """Name an unclaimed VM of the group after the node; its id, or None."""
        members = [m for m in self._members(group)
                   if m["LifeCycleState"] in ("IN_SERVICE", "CREATING")]
        for instance in self._cvms_of(members):
            if (instance.get("InstanceName") or "").startswith(_NOT_CLAIMED) \
                    and STATES.get(instance["InstanceState"]) != "gone":
                self._call(self.cvm, "cvm", "ModifyInstancesAttribute", {
                    "InstanceIds": [instance["InstanceId"]], "InstanceName": node_id})
                return str(instance["InstanceId"])
        return None

    def _members(self, group: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            page = self._as("DescribeAutoScalingInstances", {
                "Filters": [{"Name": "auto-scaling-group-id", "Values": [group]}],
                "Offset": len(out), "Limit": PAGE})
            out.extend(page["AutoScalingInstanceSet"])
            if len(out) >= page["TotalCount"] or not page["AutoScalingInstanceSet"]:
                return out

    def _cvms_of(self, members: list[dict[str, Any]]) -> list[dict[str, Any]]:
        ids = [m["InstanceId"] for m in members]
        return [i for start in range(0, len(ids), PAGE)
                for i in self._cvms(InstanceIds=ids[start:start + PAGE])]

    def _cvms(self, **params: Any) -> list[dict[str, Any]]:
        found = self._call(self.cvm, "cvm", "DescribeInstances", {**params, "Limit": PAGE})
        return list(found["InstanceSet"])

    def _as(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        return self._call(self.autoscaling, "autoscaling", action, params)

    @staticmethod
    def _call(client: Any, service: str, action: str, params: dict[str, Any]
              ) -> dict[str, Any]:
        """One API call through the SDK's own request and response models."""
        import importlib

        version = {"autoscaling": "v20180419", "cvm": "v20170312"}[service]
        models = importlib.import_module(f"tencentcloud.{service}.{version}.models")
        request = getattr(models, f"{action}Request")()
        request.from_json_string(json.dumps(params))
        response = getattr(client, action)(request)
        return json.loads(response.to_json_string())  # type: ignore[no-any-return]


# The names AS gives the VMs it launches (the launch configuration's InstanceNameSettings
# or the default "as-{group name}"): a node's VM is named by its node id instead.
_NOT_CLAIMED = "as-"
