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
            b.price_book(), b.networks(security_groups=("a", "b")), b.pool(),
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


def _run_pod(*creates: dict) -> dict:
    with connect("memory://") as engine:
        outcomes = engine.apply(b.lines(
            b.price_book(), b.networks(), b.pool(), *creates,
            b.report("ReportNodeReady", 50, node_id="general-00001")))
        assert all(o.status == "accepted" for o in outcomes), outcomes
        (run,) = [c for c in commands_in(engine.app) if isinstance(c, RunPod)]
    kubernetes_validate.validate(run.manifest, KUBERNETES, strict=True)
    return run.manifest


def _resources(container: dict) -> tuple[str, str]:
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    assert requests == limits  # Guaranteed QoS
    return requests["cpu"], requests["memory"]


def test_pods_ask_for_the_billed_spec_not_the_requested_one() -> None:
    containers = [{"name": "web", "image": "nginx:1.27", "vcpu": "0.5", "memory_gib": "0.5"},
                  {"name": "log", "image": "fluent:1", "vcpu": "0.25", "memory_gib": "0.25"}]
    pod = _run_pod({**b.create("web-1"), "containers": containers})  # 0.75/0.75 -> 1/2
    web, log = pod["spec"]["containers"]
    # The round-up's surplus goes to the first container; the others get what they asked.
    assert _resources(web) == ("750m", "1792Mi")
    assert _resources(log) == ("250m", "256Mi")
    assert pod["metadata"]["annotations"]["cis.io/billed-vcpu"] == "1"


def test_init_containers_run_first_and_the_pod_asks_for_the_billed_spec() -> None:
    create = {**b.create("job-1", policy="OnFailure"),
              "init_containers": [{"name": "migrate", "image": "tool:1", "vcpu": "2",
                                   "memory_gib": "1", "command": ["migrate", "up"]}]}
    pod = _run_pod(create)  # max(init 2/1, containers 0.5/1) = 2/1 -> billed 2/4
    (init,) = pod["spec"]["initContainers"]
    (main,) = pod["spec"]["containers"]
    assert init["name"] == "migrate" and init["command"] == ["migrate", "up"]
    # Kubernetes sizes a Pod at max(largest init container, sum of containers): both are
    # the billed spec, so the Pod takes exactly what the tenant pays for.
    assert _resources(init) == ("2", "4Gi")
    assert _resources(main) == ("2", "4Gi")


def test_init_container_names_are_apart_from_the_containers() -> None:
    with connect("memory://") as engine:
        create = {**b.create("job-1"), "init_containers": [
            {"name": "c0", "image": "tool:1", "vcpu": "1", "memory_gib": "1"}]}
        (outcome,) = engine.apply(b.lines(create))
    assert outcome.status == "rejected"


def test_init_containers_are_bounded_by_a_named_limit() -> None:
    from schemas.limits import MAX_INIT_CONTAINERS

    init = [{"name": f"i{k}", "image": "tool:1", "vcpu": "0.25", "memory_gib": "0.5"}
            for k in range(MAX_INIT_CONTAINERS + 1)]
    with connect("memory://") as engine:
        (outcome,) = engine.apply(b.lines({**b.create("job-1"), "init_containers": init}))
    assert outcome.status == "rejected"
    assert {r.field for r in outcome.reasons} == {"init_containers"}
