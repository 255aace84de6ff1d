"""The Tencent Cloud driver without an endpoint: the SDK's real AS and CVM clients build and
serialise every request with their own models (an unknown field would warn: warnings are
errors here), and answer from a small in-memory cloud whose responses are shaped as the
API reference documents them. This proves the requests fit the SDK's models and the
parsing fits the documented shapes, not that the service behaves as documented."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
from tencentcloud.autoscaling.v20180419.autoscaling_client import AutoscalingClient
from tencentcloud.common import credential
from tencentcloud.cvm.v20170312.cvm_client import CvmClient

from adapters.drivers.tencent import TencentCloudDriver
from adapters.ports import CloudDriver, DriverError
from tests import driver_fixtures as f

# The SDK warns of request fields its models lack: such a warning fails the test.
pytestmark = pytest.mark.filterwarnings("error")

GROUP = "asg-kiju7yt5"
NODE_GROUP = f.provision("general-00001").node_group


class Cloud:
    """AS and CVM as their API reference describes them, just enough for the driver."""

    def __init__(self) -> None:
        self.cvms: dict[str, dict[str, Any]] = {}
        self.members: dict[str, str] = {}  # instance id -> group id
        self.activities: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self._ids = itertools.count(1)

    def launch(self, group: str, listed: bool = True) -> str:
        instance_id = f"ins-{next(self._ids):08x}"
        self.cvms[instance_id] = {
            "Placement": {"Zone": "ap-guangzhou-3", "ProjectId": 0},
            "InstanceId": instance_id, "InstanceType": "S5.MEDIUM4", "CPU": 2, "Memory": 4,
            "InstanceName": "as-general-2c4g", "InstanceChargeType": "POSTPAID_BY_HOUR",
            "PrivateIpAddresses": ["10.0.0.7"], "ImageId": "img-9qabwvbn",
            "InstanceState": "PENDING", "RestrictState": "NORMAL",
            "CreatedTime": "2026-03-01T00:00:00Z", "Uuid": "6e7a2a8c-1c2b-4d3e",
            "LatestOperationState": "SUCCESS"}
        if listed:
            self.members[instance_id] = group
        return instance_id

    def answer(self, action: str, params: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((action, params))
        return getattr(self, action)(params) | {"RequestId": f"req-{len(self.calls)}"}

    # --- CVM --------------------------------------------------------------------------

    def DescribeInstances(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        found = list(self.cvms.values())
        if "InstanceIds" in p:
            found = [i for i in found if i["InstanceId"] in p["InstanceIds"]]
        for flt in p.get("Filters", []):
            key = {"instance-name": "InstanceName"}[flt["Name"]]
            found = [i for i in found if i[key] in flt["Values"]]
        return {"TotalCount": len(found), "InstanceSet": found}

    def ModifyInstancesAttribute(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        for instance_id in p["InstanceIds"]:
            self.cvms[instance_id]["InstanceName"] = p["InstanceName"]
        return {}

    def TerminateInstances(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        for instance_id in p["InstanceIds"]:
            self.cvms[instance_id]["InstanceState"] = "TERMINATING"
        return {}

    # --- AS ---------------------------------------------------------------------------

    def DescribeAutoScalingInstances(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        ids = [i for i in self.members if "InstanceIds" not in p or i in p["InstanceIds"]]
        for flt in p.get("Filters", []):
            assert flt["Name"] == "auto-scaling-group-id"
            ids = [i for i in ids if self.members[i] in flt["Values"]]
        page = ids[p.get("Offset", 0):p.get("Offset", 0) + p.get("Limit", 20)]
        return {"TotalCount": len(ids), "AutoScalingInstanceSet": [{
            "InstanceId": i, "AutoScalingGroupId": self.members[i],
            "AutoScalingGroupName": "general-2c4g", "LaunchConfigurationId": "asc-2qskdn5i",
            "LaunchConfigurationName": "general-2c4g", "LifeCycleState": "IN_SERVICE"
            if self.cvms[i]["InstanceState"] == "RUNNING" else "CREATING",
            "HealthStatus": "HEALTHY", "ProtectedFromScaleIn": False, "Zone": "ap-guangzhou-3",
            "CreationType": "AUTO_CREATION", "AddTime": "2026-03-01T00:00:00Z",
            "InstanceType": "S5.MEDIUM4", "VersionNumber": 0} for i in page]}

    def DescribeAutoScalingActivities(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        found = list(self.activities.values())
        for flt in p.get("Filters", []):
            key = {"auto-scaling-group-id": "AutoScalingGroupId",
                   "activity-status-code": "StatusCode"}[flt["Name"]]
            found = [a for a in found if a[key] in flt["Values"]]
        return {"TotalCount": len(found), "ActivitySet": found}

    def ScaleOutInstances(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        activity = f"asa-{next(self._ids):08x}"
        self.activities[activity] = {
            "AutoScalingGroupId": p["AutoScalingGroupId"], "ActivityId": activity,
            "ActivityType": "SCALE_OUT", "StatusCode": "RUNNING", "StatusMessage": "",
            "Cause": "ScaleOutInstances", "Description": "Activity was launched to scale out",
            "StartTime": "2026-03-01T00:00:00Z", "EndTime": None,
            "CreatedTime": "2026-03-01T00:00:00Z", "ActivityRelatedInstanceSet": [],
            "StatusMessageSimplified": "", "LifecycleActionResultSet": []}
        return {"ActivityId": activity}

    def RemoveInstances(self, p: dict[str, Any]) -> dict[str, Any]:  # noqa: N802
        for instance_id in p["InstanceIds"]:
            assert self.members.pop(instance_id) == p["AutoScalingGroupId"]
            self.cvms[instance_id]["InstanceState"] = "TERMINATING"
        return {"ActivityId": f"asa-{next(self._ids):08x}"}


def fake(client: Any, cloud: Cloud) -> Any:
    def call(action: str, params: dict[str, Any], options: Any = None,
             headers: Any = None) -> str:
        return json.dumps({"Response": cloud.answer(action, params)})

    client.call = call
    return client


@pytest.fixture
def cloud() -> Cloud:
    return Cloud()


@pytest.fixture
def driver(cloud: Cloud) -> Iterator[TencentCloudDriver]:
    cred = credential.Credential("AKIDexample", "secret")
    yield TencentCloudDriver(fake(AutoscalingClient(cred, "ap-guangzhou"), cloud),
                             fake(CvmClient(cred, "ap-guangzhou"), cloud), {NODE_GROUP: GROUP})


def test_a_field_the_sdk_model_lacks_is_caught(driver: TencentCloudDriver) -> None:
    with pytest.raises(UserWarning, match="useless"):
        driver._as("ScaleOutInstances", {"AutoScalingGroupId": GROUP, "ScaleOutCount": 1})


def test_it_implements_the_port(driver: TencentCloudDriver) -> None:
    assert isinstance(driver, CloudDriver)


def test_a_retried_provision_never_scales_out_twice(driver: TencentCloudDriver,
                                                    cloud: Cloud) -> None:
    command = f.provision("general-00001")
    with pytest.raises(DriverError, match="started; general-00001 claims its VM"):
        driver.provision(command)  # scaled out; the VM is not listed yet
    assert [a for a, _ in cloud.calls].count("ScaleOutInstances") == 1
    _, params = next(c for c in cloud.calls if c[0] == "ScaleOutInstances")
    assert params == {"AutoScalingGroupId": GROUP, "ScaleOutNumber": 1}
    with pytest.raises(DriverError, match="in progress"):
        driver.provision(command)  # retried while the scale-out runs: nothing more
    vm = cloud.launch(GROUP)  # the scale-out's VM appears
    assert driver.provision(command) == vm, "claimed"
    assert cloud.cvms[vm]["InstanceName"] == "general-00001"
    cloud.activities.clear()
    assert driver.provision(command) == vm, "found by its name"
    assert [a for a, _ in cloud.calls].count("ScaleOutInstances") == 1


def test_an_unclaimed_vm_of_the_group_is_claimed_before_anything_is_launched(
        driver: TencentCloudDriver, cloud: Cloud) -> None:
    orphan = cloud.launch(GROUP)  # an attempt that stopped before naming its VM
    assert driver.provision(f.provision("general-00002")) == orphan
    assert "ScaleOutInstances" not in [a for a, _ in cloud.calls]


def test_describe_and_terminate(driver: TencentCloudDriver, cloud: Cloud) -> None:
    a, b, c = (cloud.launch(GROUP) for _ in range(3))
    for vm, node in ((a, "general-00001"), (b, "general-00002")):
        cloud.cvms[vm]["InstanceName"] = node
    cloud.cvms[a]["InstanceState"] = "RUNNING"
    statuses = {s.node_id: (s.provider_id, s.state) for s in driver.describe(NODE_GROUP)}
    assert statuses == {"general-00001": (a, "running"), "general-00002": (b, "pending")}
    driver.terminate(f.terminate("general-00001"))
    assert cloud.calls[-1] == ("RemoveInstances", {"AutoScalingGroupId": GROUP,
                                                    "InstanceIds": [a]})
    driver.terminate(f.terminate("general-00001"))  # again: nothing live by that name
    assert cloud.calls[-1][0] == "DescribeInstances"
    outside = cloud.launch(GROUP, listed=False)
    cloud.cvms[outside]["InstanceName"] = "general-00003"
    driver.terminate(f.terminate("general-00003"))
    assert cloud.calls[-1] == ("TerminateInstances", {"InstanceIds": [outside]})
    assert {s.node_id: s.state for s in driver.describe(NODE_GROUP)} == {
        "general-00002": "pending"}
    assert c not in {s.provider_id for s in driver.describe(NODE_GROUP)}, "unclaimed: not ours"


def test_an_unknown_node_group_is_an_error_naming_the_option(
        driver: TencentCloudDriver) -> None:
    with pytest.raises(DriverError, match="--group az-1-general-4c16g=asg-"):
        driver.provision(f.provision("general-00001", model="4C16G"))
