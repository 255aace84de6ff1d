"""Commands as plain dicts, at times given in seconds after T0."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any

T0 = datetime(2026, 3, 1, tzinfo=UTC)
CELL = "az-1"
ACCOUNT = "acme"
NODE = "general-00001"  # the first node of the default pool
# Reports about an instance name its account and the node they come from.
INSTANCE_REPORTS = frozenset({"ReportInstanceStarting", "ReportInstanceRunning",
                              "ReportContainerExited", "ReportInstanceTerminated"})
_ids = itertools.count()

CATALOGUE = [{"vcpu": "0.5", "memory_gib": "1"}, {"vcpu": "1", "memory_gib": "2"},
             {"vcpu": "2", "memory_gib": "4"}]
MODELS = [{"name": "1C2G", "millicores": 1000, "memory_mib": 2048},
          {"name": "2C4G", "millicores": 2000, "memory_mib": 4096},
          {"name": "4C8G", "millicores": 4000, "memory_mib": 8192}]


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def cid(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


def price_book(t: float = 0, **terms: Any) -> dict[str, Any]:
    return {"type": "PublishPriceBook", "command_id": cid("price"), "cell": CELL,
            "issued_at": at(t), "effective_from": at(t), "rate_per_vcpu_second": "0.00001",
            "rate_per_gib_second": "0.000001", **terms}


def pool(name: str = "general", kind: str = "dedicated", t: float = 0, **config: Any
         ) -> dict[str, Any]:
    return {"type": "ConfigurePool", "command_id": cid("pool"), "cell": CELL,
            "issued_at": at(t), "pool": name, "kind": kind, "node_models": MODELS,
            "min_nodes": 0, "max_nodes": 10, "spec_catalogue": CATALOGUE, **config}


def create(name: str, t: float = 1, account: str = "acme", pool: str = "general",
           policy: str = "Always", vcpu: str = "0.5", memory_gib: str = "1",
           containers: int = 1, **extra: Any) -> dict[str, Any]:
    return {"type": "CreateInstance", "command_id": cid("create"), "cell": CELL,
            "issued_at": at(t), "account": account, "instance_id": name, "pool": pool,
            "restart_policy": policy,
            "containers": [{"name": f"c{i}", "image": "nginx:1.27", "vcpu": vcpu,
                            "memory_gib": memory_gib} for i in range(containers)],
            "network": {"vpc": "vpc-1", "subnet": "subnet-1"}, **extra}


def networks(account: str = ACCOUNT, t: float = 0, vpcs: tuple[str, ...] = ("vpc-1", "vpc-2"),
             subnets: tuple[str, ...] = ("subnet-1", "subnet-7", "subnet-a"),
             security_groups: tuple[str, ...] = ("sg-web", "sg-db")) -> dict[str, Any]:
    """The operator's record of the networks an account owns (by default every id the suite's
    creates name): a create may name only its account's."""
    return {"type": "SetAccountNetworks", "command_id": cid("networks"), "cell": CELL,
            "issued_at": at(t), "account": account, "vpcs": list(vpcs),
            "subnets": list(subnets), "security_groups": list(security_groups)}


def tenant(kind: str, name: str, t: float, account: str = "acme") -> dict[str, Any]:
    return {"type": kind, "command_id": cid(kind), "cell": CELL, "issued_at": at(t),
            "account": account, "instance_id": name}


def report(kind: str, t: float, **fields: Any) -> dict[str, Any]:
    """A report; one about an instance comes by default from `NODE`, about `ACCOUNT`'s."""
    if kind in INSTANCE_REPORTS:
        fields = {"account": ACCOUNT, "node_id": NODE, **fields}
    return {"type": kind, "command_id": cid(kind), "cell": CELL, "occurred_at": at(t),
            **fields}


def tick(t: float, **extra: Any) -> dict[str, Any]:
    return {"type": "Tick", "command_id": cid("tick"), "cell": CELL, "now": at(t), **extra}


def lines(*commands: dict[str, Any]) -> list[str]:
    return [json.dumps(c) for c in commands]
