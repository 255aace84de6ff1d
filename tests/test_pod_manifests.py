"""RunPod manifests are valid Kubernetes Pods that say what the instance asked for."""

from __future__ import annotations

from decimal import Decimal

import kubernetes_validate
import pytest

from adapters.bootstrap import connect
from adapters.infra_commands import commands_in
from adapters.pods import quantity_cpu, quantity_memory
from schemas.infra import RunPod
from tests import builders as b
from tests.helpers import simulate

KUBERNETES = "1.30"


@pytest.mark.parametrize(("vcpu", "cpu"), [("2", "2"), ("0.5", "500m"), ("0.25", "250m"),
                                           ("1.125", "1125m")])
def test_cpu_quantities(vcpu: str, cpu: str) -> None:
    assert quantity_cpu(Decimal(vcpu)) == cpu


@pytest.mark.parametrize(("gib", "memory"), [
    ("1", "1Gi"), ("0.5", "512Mi"), ("1.5", "1536Mi"), ("0.125", "128Mi"), ("30", "30Gi"),
    ("0.001", "1073742"),  # not a whole KiB: bytes, rounded up
])
def test_memory_quantities(gib: str, memory: str) -> None:
    assert quantity_memory(Decimal(gib)) == memory


def test_every_pod_of_a_simulated_day_is_a_valid_kubernetes_pod() -> None:
    with connect("memory://") as engine:
        simulate(engine, 40, seed=11, hours=24)
        runs = [c for c in commands_in(engine.app) if isinstance(c, RunPod)]
        world = engine.processor.world
        assert len(runs) == sum(1 for i in world.instances.values() if i.node_id), \
            "one RunPod per placed instance"
        for run in runs:
            kubernetes_validate.validate(run.manifest, KUBERNETES, strict=True)
            instance = world.instance(run.cell, run.account, run.instance_id)
            assert instance is not None
            spec = run.manifest["spec"]
            assert spec["nodeName"] == instance.node_id == run.node_id
            assert spec["runtimeClassName"] == instance.runtime
            assert spec["restartPolicy"] == instance.restart_policy
            assert run.manifest["metadata"]["namespace"] == instance.account


def test_a_rich_instance_maps_field_by_field() -> None:
    containers = [
        {"name": "web", "image": "nginx:1.27", "vcpu": "0.25", "memory_gib": "0.5",
         "command": ["nginx", "-g", "daemon off;"], "env": {"MODE": "prod", "A_FIRST": "1"},
         "ports": [80, 443]},
        {"name": "sidecar", "image": "envoy:1.30", "vcpu": "0.25", "memory_gib": "0.5"},
    ]
    with connect("memory://") as engine:
        outcomes = engine.apply(b.lines(
            b.price_book(), b.pool(),
            {**b.create("web-1", policy="OnFailure"), "containers": containers,
             "network": {"vpc": "vpc-1", "subnet": "subnet-1", "security_groups": ["a", "b"]}},
            b.report("ReportNodeReady", 50, node_id="general-00001")))
        assert all(o.status == "accepted" for o in outcomes), outcomes
        runs = [c for c in commands_in(engine.app) if isinstance(c, RunPod)]
    assert len(runs) == 1
    pod = runs[0].manifest
    kubernetes_validate.validate(pod, KUBERNETES, strict=True)
    web, sidecar = pod["spec"]["containers"]
    assert web["command"] == ["nginx", "-g", "daemon off;"]
    assert web["env"] == [{"name": "A_FIRST", "value": "1"}, {"name": "MODE", "value": "prod"}]
    assert [p["containerPort"] for p in web["ports"]] == [80, 443]
    assert web["resources"] == {"requests": {"cpu": "250m", "memory": "512Mi"},
                                "limits": {"cpu": "250m", "memory": "512Mi"}}
    assert "env" not in sidecar and "command" not in sidecar
    assert pod["spec"]["restartPolicy"] == "OnFailure"
    assert pod["metadata"]["annotations"]["cis.io/security-groups"] == "a,b"
    # The billed spec (rounded up to the catalogue) is recorded beside what was asked.
    assert pod["metadata"]["annotations"]["cis.io/billed-vcpu"] == "0.5"
