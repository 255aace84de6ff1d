"""VM and Pod commands as the outbox sends them, for the driver tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from schemas.infra import DeletePod, ProvisionNode, RunPod, TerminateNode

T0 = datetime(2026, 3, 1, tzinfo=UTC)
CELL = "az-1"


def provision(node_id: str, model: str = "2C4G", pool: str = "general",
              version: int = 1) -> ProvisionNode:
    caused_by = f"node/{node_id}#{version}"
    return ProvisionNode(command_id=f"{CELL}:{caused_by}", caused_by=caused_by, cell=CELL,
                         at=T0, node_id=node_id, pool=pool,
                         node_group=f"{CELL}-{pool}-{model.lower()}", model=model,
                         capacity={"millicores": 2000, "memory_mib": 4096},
                         labels={"cis.io/pool": pool}, reason="pending instances")


def terminate(node_id: str, model: str = "2C4G", pool: str = "general",
              version: int = 5) -> TerminateNode:
    caused_by = f"node/{node_id}#{version}"
    return TerminateNode(command_id=f"{CELL}:{caused_by}", caused_by=caused_by, cell=CELL,
                         at=T0, node_id=node_id, pool=pool,
                         node_group=f"{CELL}-{pool}-{model.lower()}", reason="scale-in")


def manifest(name: str, node_id: str, account: str = "acme", runtime: str = "runc",
             restart_policy: str = "Always", containers: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": account,
                     "labels": {"cis.io/cell": CELL, "cis.io/account": account,
                                "cis.io/pool": "general", "cis.io/instance": name},
                     "annotations": {"cis.io/caused-by": f"instance/{name}#2",
                                     "cis.io/billed-vcpu": "1",
                                     "cis.io/billed-memory-gib": "2",
                                     "cis.io/vpc": "vpc-1", "cis.io/subnet": "subnet-a"}},
        "spec": {"nodeName": node_id, "restartPolicy": restart_policy,
                 "runtimeClassName": runtime, "terminationGracePeriodSeconds": 30,
                 "automountServiceAccountToken": False, "enableServiceLinks": False,
                 "containers": [{"name": f"c{k}", "image": "registry.example/app:1",
                                 "resources": {"requests": {"cpu": "500m", "memory": "1Gi"},
                                               "limits": {"cpu": "500m", "memory": "1Gi"}},
                                 "ports": [{"containerPort": 8080, "protocol": "TCP"}]}
                                for k in range(containers)]},
    }


def run_pod(name: str, node_id: str, account: str = "acme", **spec: Any) -> RunPod:
    caused_by = f"instance/{name}#2"
    return RunPod(command_id=f"{CELL}:{caused_by}", caused_by=caused_by, cell=CELL, at=T0,
                  instance_id=name, account=account, node_id=node_id,
                  manifest=manifest(name, node_id, account, **spec))


def delete_pod(name: str, node_id: str, account: str = "acme", grace: int = 30) -> DeletePod:
    caused_by = f"instance/{name}#4"
    return DeletePod(command_id=f"{CELL}:{caused_by}", caused_by=caused_by, cell=CELL, at=T0,
                     instance_id=name, account=account, node_id=node_id, namespace=account,
                     pod=name, reason="stopped", grace_period_seconds=grace)
