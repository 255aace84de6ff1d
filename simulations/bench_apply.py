"""`cis bench apply`: commands/s of `cis apply`'s path (parse → decide → one write per batch)."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

from adapters.bootstrap import connect
from simulations import workloads

NODES = 100


def creates(n: int) -> list[bytes]:
    start = workloads.DAY_START
    out = []
    for i in range(n):
        at = start + timedelta(seconds=60 + i * 0.01)
        out.append(json.dumps({
            "type": "CreateInstance", "command_id": f"bench-{i}", "cell": workloads.CELL,
            "issued_at": at.isoformat(), "account": f"acct-{i % 100}",
            "instance_id": f"i-{i:06d}", "pool": "bench", "restart_policy": "Always",
            "runtime": "kata", "containers": [{"name": "main", "image": "nginx",
                                                "vcpu": "0.25", "memory_gib": "0.5"}],
            "network": {"vpc": "v", "subnet": "s"}}).encode())
    return out


def setup_commands() -> list[bytes]:
    start = workloads.DAY_START
    price, _, kata = workloads.setup()
    pool = {**kata, "pool": "bench", "command_id": "bench-pool", "min_nodes": NODES,
            "max_nodes": NODES, "node_models": [{**workloads.SHARED_MODELS[0], "pods": 250}]}
    ready = [{"type": "ReportNodeReady", "command_id": f"bench-ready-{k}",
              "cell": workloads.CELL, "occurred_at": (start + timedelta(seconds=30)).isoformat(),
              "node_id": f"bench-{k:05d}"} for k in range(1, NODES + 1)]
    return [json.dumps(c).encode() for c in (price, pool, *ready)]


def bench_apply(store: str, commands: int = 10_000, batch: int = 1000) -> dict[str, Any]:
    with connect(store) as engine:
        engine.apply(setup_commands())
        items = creates(commands)
        began = time.perf_counter()
        accepted = 0
        for i in range(0, len(items), batch):
            accepted += sum(o.status == "accepted" for o in engine.apply(items[i:i + batch]))
        decide_s = time.perf_counter() - began
        events = engine.app.recorder.max_notification_id() or 0
        began = time.perf_counter()
        engine.update_projections()
        project_s = time.perf_counter() - began
    return {"store": store.split(":")[0], "commands": commands, "batch": batch,
            "accepted": accepted, "seconds": round(decide_s, 3),
            "commands_per_s": round(commands / decide_s), "events_in_log": events,
            "projection_seconds": round(project_s, 3)}
