"""The virtual-kubelet provider contract: a Pod bound to the virtual node in a user's
cluster becomes a CreateInstance, and the instance's state becomes that Pod's status (a
status valid against the Kubernetes schemas of 1.25 to 1.37)."""

from __future__ import annotations

import copy
import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import kubernetes_validate
import pytest
from kubernetes_validate.utils import all_versions, major_minor

from adapters import queries
from adapters.bootstrap import Engine
from adapters.virtual_kubelet import PodRefused, VirtualKubeletProvider, instance_id_of
from schemas.commands import command_adapter
from simulations.driven import DrivenHarness
from tests import builders as b

VERSIONS = [v for v in all_versions() if major_minor(v) >= "1.25"]
NODE = "cis-virtual-node"


def user_pod(name: str = "web", **spec: Any) -> dict[str, Any]:
    """A Pod as the user's API server hands it to virtual-kubelet once it is bound."""
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "uid": f"uid-{name}",
                     "resourceVersion": "81", "creationTimestamp": "2026-03-01T00:00:00Z",
                     "annotations": {"cis.io/vpc": "vpc-1", "cis.io/subnet": "subnet-a",
                                     "cis.io/security-groups": "sg-web,sg-db"}},
        "spec": {"nodeName": NODE, "restartPolicy": "OnFailure", "runtimeClassName": "kata",
                 "nodeSelector": {"type": "virtual-kubelet"},
                 "tolerations": [{"key": "virtual-kubelet.io/provider", "operator": "Exists"}],
                 "containers": [{
                     "name": "app", "image": "registry.example/shop:3",
                     "command": ["python"], "args": ["-m", "shop"],
                     "env": [{"name": "MODE", "value": "prod"}],
                     "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                     "resources": {"requests": {"cpu": "250m", "memory": "512Mi"},
                                   "limits": {"cpu": "500m", "memory": "1Gi"}}}],
                 **spec},
        "status": {"phase": "Pending"}}
    validate(pod)
    return pod


def validate(pod: dict[str, Any]) -> None:
    for version in VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)


def provider(submitted: list[Any], rows: dict[str, dict[str, Any]]) -> VirtualKubeletProvider:
    return VirtualKubeletProvider(NODE, b.CELL, b.ACCOUNT, submitted.append, rows.get)


def test_a_bound_pod_becomes_a_create_instance() -> None:
    submitted: list[Any] = []
    command = provider(submitted, {}).create_pod(user_pod())
    assert submitted == [command]
    again = command_adapter.validate_json(command.model_dump_json())  # the contract
    assert (again.instance_id, again.account, again.pool, again.runtime,
            again.restart_policy) == ("shop-web", b.ACCOUNT, "general", "kata", "OnFailure")
    [c] = again.containers
    assert (c.vcpu, c.memory_gib) == (Decimal("0.5"), Decimal("1")), "limits: what is billed"
    assert (c.command, c.env, c.ports) == (["python", "-m", "shop"], {"MODE": "prod"}, [8080])
    assert again.network.security_groups == ["sg-web", "sg-db"]
    assert again.issued_at.isoformat() == "2026-03-01T00:00:00+00:00"


def test_a_pod_cis_cannot_run_is_refused_with_every_reason() -> None:
    pod = user_pod(volumes=[{"name": "data", "emptyDir": {}}], nodeName="another-node")
    container = pod["spec"]["containers"][0]
    container["env"].append({"name": "PASSWORD", "valueFrom": {
        "secretKeyRef": {"name": "db", "key": "password"}}})
    del container["resources"]
    submitted: list[Any] = []
    with pytest.raises(PodRefused) as refused:
        provider(submitted, {}).create_pod(pod)
    assert submitted == []
    text = " | ".join(refused.value.reasons)
    for expected in ("spec.nodeName", "spec.volumes", "valueFrom", "give cpu"):
        assert expected in text, text


def test_long_or_dotted_names_become_dns_labels() -> None:
    assert instance_id_of("shop", "web") == "shop-web"
    long = instance_id_of("shop", "a" * 60 + ".v1")
    assert len(long) <= 63 and long != instance_id_of("shop", "a" * 60 + ".v2")


@pytest.mark.parametrize("state,phase", [
    ("requested", "Pending"), ("unschedulable", "Pending"), ("starting", "Pending"),
    ("running", "Running"), ("restarting", "Running"), ("succeeded", "Succeeded"),
    ("stopped", "Succeeded"), ("failed", "Failed"), ("expired", "Failed")])
def test_instance_states_become_valid_pod_statuses(state: str, phase: str) -> None:
    rows = {"shop-web": {"instance_id": "shop-web", "state": state, "restarts": 2,
                         "node_id": "general-00001", "reason": "exit code 1",
                         "created_at": "2026-03-01T00:00:01.5+00:00",
                         "state_since": "2026-03-01T00:05:00+00:00"}}
    vk = provider([], rows)
    vk.create_pod(user_pod())
    pod = vk.get_pod("shop", "web")
    assert pod is not None and pod["status"]["phase"] == phase
    validate(pod)
    ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}["Ready"]
    assert ready == ("True" if state == "running" else "False")


def test_notify_calls_back_on_changes_and_delete_deletes_the_instance() -> None:
    rows: dict[str, dict[str, Any]] = {}
    submitted: list[Any] = []
    seen: list[str] = []
    vk = provider(submitted, rows)
    vk.notify_pods(lambda pod: seen.append(pod["status"]["phase"]))
    vk.create_pod(user_pod())
    assert vk.sync() == 1 and vk.sync() == 0
    rows["shop-web"] = {"state": "running", "restarts": 0,
                        "state_since": "2026-03-01T00:01:00+00:00"}
    assert vk.sync() == 1
    assert seen == ["Pending", "Running"]
    pod = vk.get_pod("shop", "web")
    assert pod is not None
    deleted = vk.delete_pod(pod)
    assert vk.delete_pod(pod) is None, "twice: no second command"
    assert submitted[-1] == deleted and deleted is not None
    assert deleted.instance_id == "shop-web" and vk.get_pods() == []


def test_a_users_pod_runs_on_cis_and_its_status_follows(engine: Engine) -> None:
    """Through the real engine and the simulated infrastructure (simulations/driven.py)."""
    harness = DrivenHarness(engine, b.T0, boot_seconds=30)
    harness.submit(b.T0, b.price_book())
    harness.submit(b.T0, b.networks())
    harness.submit(b.T0, b.pool(kind="shared", node_models=[b.MODELS[2]]))

    def submit(command: Any) -> None:
        harness.submit(command.at, json.loads(command.model_dump_json()))

    def lookup(instance_id: str) -> dict[str, Any] | None:
        engine.update_projections()
        return next((r for r in queries.instances(engine, b.ACCOUNT)
                     if r["instance_id"] == instance_id), None)

    vk = VirtualKubeletProvider(NODE, b.CELL, b.ACCOUNT, submit, lookup,
                                network={"vpc": "vpc-1", "subnet": "subnet-a"},
                                clock=harness.clock)
    pod = copy.deepcopy(user_pod())
    pod["metadata"]["creationTimestamp"] = (b.T0 + timedelta(seconds=5)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    vk.create_pod(pod)
    harness.run(b.T0 + timedelta(seconds=20))
    status = vk.get_pod_status("shop", "web")
    assert status is not None and status["phase"] == "Pending", "its node is booting"
    harness.run(b.T0 + timedelta(minutes=2))
    running = vk.get_pod("shop", "web")
    assert running is not None and running["status"]["phase"] == "Running"
    validate(running)
    vk.delete_pod(running)
    harness.run(b.T0 + timedelta(minutes=3))
    row = lookup("shop-web")
    assert row is not None and row["state"] == "deleted"
