"""Isolation by pool kind: a shared pool packs tenants on a node, so it takes only
sandboxed runtimes (kata, hyper); runc runs on dedicated pools, one instance (so one
tenant) per VM. A violation is rejected with a reason."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest

from adapters.bootstrap import Engine
from adapters.infra_commands import commands_in
from schemas.infra import DeletePod, RunPod
from simulations.harness import Harness, Plan
from simulations.workloads import (
    CELL,
    DAY_START,
    FARGATE_LIKE_CATALOGUE,
    account_networks,
    setup,
)
from tests import builders as b
from tests.helpers import accepted, instance, one

SHARED_MODELS = [{"name": "16C64G", "millicores": 16000, "memory_mib": 65536}]


def _cell(engine: Engine) -> None:
    accepted(engine, b.price_book(), b.networks(), b.pool(),
             b.pool("sandbox", kind="shared", node_models=SHARED_MODELS))


def test_runc_on_a_shared_pool_is_rejected_with_the_reason(engine: Engine) -> None:
    _cell(engine)
    outcome = one(engine, b.create("x", pool="sandbox", runtime="runc"))
    assert outcome.status == "rejected"
    (why,) = [r for r in outcome.reasons if r.field == "runtime"]
    assert why.code == "runtime_not_isolated" and "not sandboxed" in why.problem
    assert engine.processor.world.instance(b.CELL, b.ACCOUNT, "x") is None


@pytest.mark.parametrize("runtime", ["kata", "hyper"])
def test_sandboxed_runtimes_share_a_pool(engine: Engine, runtime: str) -> None:
    _cell(engine)
    accepted(engine, b.create("x", pool="sandbox", runtime=runtime))
    assert instance(engine, "x").runtime == runtime


@pytest.mark.parametrize("runtime", ["runc", "kata", "hyper"])
def test_dedicated_pools_take_every_runtime(engine: Engine, runtime: str) -> None:
    _cell(engine)
    accepted(engine, b.create("x", runtime=runtime))
    assert instance(engine, "x").runtime == runtime


def test_an_omitted_runtime_is_the_pools_default(engine: Engine) -> None:
    _cell(engine)
    accepted(engine, b.create("plain"), b.create("packed", pool="sandbox"))
    assert instance(engine, "plain").runtime == "runc"
    assert instance(engine, "packed").runtime == "kata"


ACCOUNTS = ["a1", "a2", "a3", "a4"]


def _day(seed: int, n: int) -> tuple[list[tuple[Any, dict[str, Any]]], dict[str, Plan]]:
    """Tenants of four accounts asking for any runtime on either pool, over a day."""
    rng = random.Random(seed)
    creates, plans = [], {}
    for i in range(n):
        at = DAY_START + timedelta(seconds=rng.uniform(60, 20 * 3600))
        spec = rng.choice(FARGATE_LIKE_CATALOGUE[:6])
        name = f"job-{i:04d}"
        command = {
            "type": "CreateInstance", "command_id": f"create-{name}", "cell": CELL,
            "issued_at": at.isoformat(), "account": rng.choice(ACCOUNTS),
            "instance_id": name, "pool": rng.choice(["kata", "general"]),
            "containers": [{"name": "main", "image": "app:1", "vcpu": spec["vcpu"],
                            "memory_gib": spec["memory_gib"]}],
            "network": {"vpc": "vpc-1", "subnet": "subnet-1"}}
        runtime = rng.choice(["runc", "runc", "kata", "hyper", None])
        if runtime is not None:
            command["runtime"] = runtime
        creates.append((at, command))
        plans[name] = Plan(lifetime_s=rng.uniform(600, 6 * 3600), ending="stop")
    return creates, plans


def test_over_a_simulated_day_no_node_holds_runc_instances_of_two_accounts(
        engine: Engine) -> None:
    creates, plans = _day(seed=5, n=120)
    harness = Harness(engine, plans=plans)
    for command in [*setup(), *account_networks(ACCOUNTS, CELL, DAY_START,
                                                 {"vpc": "vpc-1", "subnet": "subnet-1"})]:
        harness.submit(DAY_START, command)
    for at, command in creates:
        harness.submit(at, command)
    outcomes = harness.run(until=DAY_START + timedelta(hours=24))
    # Replay the Pods the engine asked for: who is on each node at every RunPod.
    on_node: dict[str, dict[str, tuple[str, str]]] = {}
    shared_accounts: set[int] = set()
    for command in commands_in(engine.app):
        if isinstance(command, RunPod):
            runtime = command.manifest["spec"]["runtimeClassName"]
            pods = on_node.setdefault(command.node_id, {})
            pods[command.instance_id] = (command.account, runtime)
            runc_accounts = {a for a, r in pods.values() if r == "runc"}
            assert len(runc_accounts) <= 1, (command.node_id, pods)
            if runtime == "runc":
                assert command.node_id.startswith("general-"), "runc only on dedicated nodes"
            shared_accounts.add(len({a for a, _ in pods.values()}))
        elif isinstance(command, DeletePod):
            on_node.get(command.node_id, {}).pop(command.instance_id, None)
    assert max(shared_accounts) > 1, "the shared pool did pack tenants together"
    refused = [o for o in outcomes if o.status == "rejected"
               and any(r.code == "runtime_not_isolated" for r in o.reasons)]
    assert refused, "the day asks for runc on the shared pool"
