"""Synthetic workloads: the operator's set-up and a day of tenants, as plain commands."""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from adapters.bootstrap import Engine
from simulations.harness import Harness, Plan

DAY_START = datetime(2026, 1, 15, tzinfo=UTC)
CELL = "az-1"
ACCOUNTS = ("acme", "globex", "initech")

FARGATE_LIKE_CATALOGUE = [
    {"vcpu": v, "memory_gib": m}
    for v, mems in (("0.25", ("0.5", "1", "2")), ("0.5", ("1", "2", "3", "4")),
                    ("1", ("2", "3", "4", "6", "8")), ("2", ("4", "8", "16")),
                    ("4", ("8", "16", "30")))
    for m in mems
]
DEDICATED_MODELS = [
    {"name": "1C2G", "millicores": 1000, "memory_mib": 2048, "enis": 2, "pods": 4},
    {"name": "2C4G", "millicores": 2000, "memory_mib": 4096, "enis": 2, "pods": 4},
    {"name": "2C8G", "millicores": 2000, "memory_mib": 8192, "enis": 2, "pods": 4},
    {"name": "4C16G", "millicores": 4000, "memory_mib": 16384, "enis": 3, "pods": 8},
    {"name": "8C32G", "millicores": 8000, "memory_mib": 32768, "enis": 4, "pods": 8},
]
SHARED_MODELS = [
    {"name": "16C64G", "millicores": 16000, "memory_mib": 65536, "enis": 15, "pods": 110},
]


def setup(at: datetime = DAY_START, cell: str = CELL) -> list[dict[str, Any]]:
    issued = at.isoformat()
    return [
        {"type": "PublishPriceBook", "command_id": f"setup-price-{cell}", "cell": cell,
         "issued_at": issued, "effective_from": issued, "currency": "USD", "minor_unit": 2,
         "rate_per_vcpu_second": "0.000011244", "rate_per_gib_second": "0.000001235"},
        {"type": "ConfigurePool", "command_id": f"setup-pool-general-{cell}", "cell": cell,
         "issued_at": issued, "pool": "general", "kind": "dedicated",
         "node_models": DEDICATED_MODELS, "min_nodes": 2, "max_nodes": 60,
         "labels": {"tier": "standard"}, "spec_catalogue": FARGATE_LIKE_CATALOGUE},
        {"type": "ConfigurePool", "command_id": f"setup-pool-kata-{cell}", "cell": cell,
         "issued_at": issued, "pool": "kata", "kind": "shared",
         "node_models": SHARED_MODELS, "min_nodes": 1, "max_nodes": 2,
         "labels": {"tier": "sandboxed"}, "spec_catalogue": FARGATE_LIKE_CATALOGUE,
         "pending_timeout_seconds": 600},
        *account_networks(ACCOUNTS, cell, at, NETWORK),
    ]


NETWORK = {"vpc": "vpc-demo", "subnet": "subnet-a", "security_groups": ["sg-web"]}


def account_networks(accounts: Iterable[str], cell: str, at: datetime,
                     network: dict[str, Any], prefix: str = "setup") -> list[dict[str, Any]]:
    """The operator's `SetAccountNetworks` giving each account `network`: a create may name
    only the VPC, subnet and security groups its account owns."""
    return [{"type": "SetAccountNetworks", "command_id": f"{prefix}-networks-{cell}-{account}",
             "cell": cell, "issued_at": at.isoformat(), "account": account,
             "vpcs": [network["vpc"]], "subnets": [network["subnet"]],
             "security_groups": list(network.get("security_groups", []))}
            for account in accounts]


def tenants(n: int, seed: int, start: datetime = DAY_START, cell: str = CELL
            ) -> tuple[list[tuple[datetime, dict[str, Any]]], dict[str, Plan]]:
    """`n` CreateInstance commands spread over a day, with what each instance will do."""
    rng = random.Random(seed)
    creates: list[tuple[datetime, dict[str, Any]]] = []
    plans: dict[str, Plan] = {}
    for i in range(n):
        at = start + timedelta(seconds=rng.uniform(60, 20 * 3600))
        spec = rng.choice(FARGATE_LIKE_CATALOGUE[:12])
        kata = rng.random() < 0.35
        ending = rng.choices(["stop", "succeed", "fail", "crashloop"], [50, 25, 15, 10])[0]
        policy = {"stop": "Always", "succeed": "OnFailure", "fail": "Never",
                  "crashloop": "Always"}[ending]
        name = f"job-{i:04d}"
        creates.append((at, {
            "type": "CreateInstance", "command_id": f"create-{name}", "cell": cell,
            "issued_at": at.isoformat(), "account": rng.choice(ACCOUNTS), "instance_id": name,
            "pool": "kata" if kata else "general", "restart_policy": policy,
            "runtime": "kata" if kata else "runc",
            "containers": [{"name": "main", "image": f"registry.example/app:{i % 7}",
                            "vcpu": spec["vcpu"], "memory_gib": spec["memory_gib"],
                            "ports": [8080]}],
            "network": {**NETWORK, "security_groups": [*NETWORK["security_groups"]]},
        }))
        plans[name] = Plan(lifetime_s=rng.uniform(120, 4 * 3600), ending=ending,
                           delete_after_s=600.0 if rng.random() < 0.3 else None)
    return creates, plans


def ticks(start: datetime, hours: int, every_s: int = 300, cell: str = CELL
          ) -> list[tuple[datetime, dict[str, Any]]]:
    out = []
    for k in range(1, hours * 3600 // every_s + 1):
        at = start + timedelta(seconds=k * every_s)
        out.append((at, {"type": "Tick", "command_id": f"tick-{cell}-{at.isoformat()}",
                         "cell": cell, "now": at.isoformat()}))
    return out


def simulate(engine: Engine, instances: int, seed: int, hours: float,
             tick_every_s: int | None = None) -> Harness:
    """The demo's tenants through the real engine for `hours` of its day (optionally with
    Ticks); the harness goes on with `harness.run(until=…)`."""
    creates, plans = tenants(instances, seed=seed)
    harness = Harness(engine, plans=plans)
    for command in setup():
        harness.submit(DAY_START, command)
    periodic = ticks(DAY_START, int(hours) + 1, tick_every_s) if tick_every_s else []
    for at, command in [*creates, *periodic]:
        harness.submit(at, command)
    harness.run(until=DAY_START + timedelta(hours=hours))
    return harness
