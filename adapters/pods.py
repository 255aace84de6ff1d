"""Kubernetes Pod manifests for instances: what a `RunPod` command carries.

The engine is the scheduler, so the Pod is bound to its node (`spec.nodeName`) and its
runtime picks the RuntimeClass (`runc`, `kata`), whose `overhead` Kubernetes adds itself,
as our placement does. Requests equal limits (Guaranteed QoS): the tenant is billed for
what it asked, so it gets all of it and no more.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal
from typing import Any

from engine.domain.instance import Instance

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
            "containers": [_container(c) for c in instance.containers],
        },
    }


def _container(spec: dict[str, Any]) -> dict[str, Any]:
    resources = {"cpu": quantity_cpu(Decimal(str(spec["vcpu"]))),
                 "memory": quantity_memory(Decimal(str(spec["memory_gib"])))}
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
