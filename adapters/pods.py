"""Kubernetes Pod manifests for instances: what a `RunPod` command carries.

The engine is the scheduler, so the Pod is bound to its node (`spec.nodeName`) and its
runtime picks the RuntimeClass (`runc`, `kata`, `hyper`), whose `overhead.podFixed`
Kubernetes adds itself, as our placement does (`runtime_classes` writes those objects).

Honest Pods: requests equal limits (Guaranteed QoS) and add up to the *billed* spec, so the
tenant gets all it pays for and no more. The billed spec is spread deterministically: each
container gets what it asked, and the round-up's surplus (billed minus the containers' sum)
goes to the first container. Each init container runs alone before the others and gets the
whole billed spec, so the Pod's effective request (the larger of the largest init container
and the containers' sum, as Kubernetes computes it) is the billed spec exactly.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal
from typing import Any

from engine.domain.instance import Instance
from engine.policies.runtimes import (
    DEFAULT_CPU_OVERHEAD_MILLICORES,
    RUNTIMES,
    SEED_PROFILES,
    RuntimeProfile,
)

LABEL_PREFIX = "cis.io"
STOP_GRACE_SECONDS = 30


def quantity_cpu(vcpu: Decimal) -> str:
    """Whole cores as "2", else millicores ("500m"; vCPUs have at most 3 decimals)."""
    if vcpu == vcpu.to_integral_value():
        return str(int(vcpu))
    return f"{int((vcpu * 1000).to_integral_value(rounding=ROUND_CEILING))}m"


def quantity_memory(gib: Decimal) -> str:
    """Binary units, the largest that is exact: "1Gi", "512Mi", "1536Ki"; else bytes."""
    for unit, per_gib in (("Gi", 1), ("Mi", 1024), ("Ki", 1024 ** 2)):
        amount = gib * per_gib
        if amount == amount.to_integral_value():
            return f"{int(amount)}{unit}"
    return str(int((gib * 1024 ** 3).to_integral_value(rounding=ROUND_CEILING)))


def pod_name(instance: Instance) -> tuple[str, str]:
    """(namespace, name): one namespace per account; instance names are DNS labels."""
    return instance.account, instance.name


def eni_annotations(instance: Instance) -> dict[str, str]:
    """The ENI the engine gave the instance on its node (its `Scheduled` event): device
    index and IP slot, for the node's CNI to attach in the instance's subnet and groups."""
    attachment = getattr(instance, "attachment", None)
    if not attachment:
        return {}
    return {f"{LABEL_PREFIX}/eni-index": str(attachment["eni_index"]),
            f"{LABEL_PREFIX}/ip-slot": str(attachment["ip_slot"]),
            f"{LABEL_PREFIX}/eni-subnet": attachment["subnet"],
            f"{LABEL_PREFIX}/eni-security-groups": ",".join(attachment["security_groups"])}


def pod_manifest(instance: Instance, node_id: str, caused_by: str) -> dict[str, Any]:
    namespace, name = pod_name(instance)
    network = instance.network
    annotations = {
        f"{LABEL_PREFIX}/caused-by": caused_by,
        f"{LABEL_PREFIX}/billed-vcpu": str(instance.billed_vcpu),
        f"{LABEL_PREFIX}/billed-memory-gib": str(instance.billed_memory_gib),
        f"{LABEL_PREFIX}/vpc": network["vpc"],
        f"{LABEL_PREFIX}/subnet": network["subnet"],
    }
    if network.get("security_groups"):
        annotations[f"{LABEL_PREFIX}/security-groups"] = ",".join(network["security_groups"])
    annotations.update(eni_annotations(instance))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {f"{LABEL_PREFIX}/cell": instance.cell,
                       f"{LABEL_PREFIX}/account": instance.account,
                       f"{LABEL_PREFIX}/pool": instance.pool,
                       f"{LABEL_PREFIX}/instance": instance.name},
            "annotations": annotations,
        },
        "spec": {
            "nodeName": node_id,
            "restartPolicy": instance.restart_policy,
            "runtimeClassName": instance.runtime,
            "terminationGracePeriodSeconds": STOP_GRACE_SECONDS,
            # Tenants share nodes: no cluster credentials, no service discovery variables.
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            **_containers(instance),
        },
    }


def billed_resources(instance: Instance) -> list[tuple[dict[str, Any], Decimal, Decimal]]:
    """(container, vCPU, GiB) for every container, init containers first: the billed spec
    spread as the module says. The containers' share sums to the billed spec."""
    billed_v = Decimal(str(instance.billed_vcpu))
    billed_m = Decimal(str(instance.billed_memory_gib))
    init = [c for c in instance.containers if c.get("init")]
    main = [c for c in instance.containers if not c.get("init")]
    asked = [(Decimal(str(c["vcpu"])), Decimal(str(c["memory_gib"]))) for c in main]
    surplus_v = billed_v - sum((v for v, _ in asked), Decimal(0))
    surplus_m = billed_m - sum((m for _, m in asked), Decimal(0))
    out = [(c, billed_v, billed_m) for c in init]
    for k, (c, (v, m)) in enumerate(zip(main, asked, strict=True)):
        out.append((c, v + surplus_v, m + surplus_m) if k == 0 else (c, v, m))
    return out


def _containers(instance: Instance) -> dict[str, list[dict[str, Any]]]:
    init: list[dict[str, Any]] = []
    main: list[dict[str, Any]] = []
    for spec, vcpu, gib in billed_resources(instance):
        (init if spec.get("init") else main).append(_container(spec, vcpu, gib))
    return {"initContainers": init, "containers": main} if init else {"containers": main}


def runtime_class(name: str, profile: RuntimeProfile, cpu_overhead_millicores: int
                  ) -> dict[str, Any]:
    """The RuntimeClass a Pod names: its handler and the overhead placement also counts."""
    return {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
            "metadata": {"name": name, "labels": {f"{LABEL_PREFIX}/runtime": name}},
            "handler": name,
            "overhead": {"podFixed": {"cpu": f"{cpu_overhead_millicores}m",
                                      "memory": f"{profile.memory_overhead_mib}Mi"}}}


def runtime_classes(profiles: dict[str, RuntimeProfile] | None = None,
                    cpu_overhead_millicores: dict[str, int] | None = None
                    ) -> list[dict[str, Any]]:
    """Every runtime's RuntimeClass (by default the seed's profiles and cpu overheads)."""
    profiles = profiles or SEED_PROFILES
    cpu = cpu_overhead_millicores or DEFAULT_CPU_OVERHEAD_MILLICORES
    return [runtime_class(name, profiles[name], cpu.get(name, 0)) for name in RUNTIMES]


def _container(spec: dict[str, Any], vcpu: Decimal, gib: Decimal) -> dict[str, Any]:
    resources = {"cpu": quantity_cpu(vcpu), "memory": quantity_memory(gib)}
    container: dict[str, Any] = {
        "name": spec["name"],
        "image": spec["image"],
        "resources": {"requests": dict(resources), "limits": dict(resources)},
    }
    if spec.get("command"):
        container["command"] = list(spec["command"])
    if spec.get("env"):
        container["env"] = [{"name": k, "value": v} for k, v in sorted(spec["env"].items())]
    if spec.get("ports"):
        container["ports"] = [{"containerPort": p, "protocol": "TCP"} for p in spec["ports"]]
    return container
