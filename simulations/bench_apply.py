"""`cis bench apply`: commands/s of `cis apply`'s path (parse → decide → one write per batch).

Workloads: `creates` — CreateInstance into a shared pool of 100 nodes (most end up
unschedulable once their ENIs are taken); `lifecycles` — each instance placed, started,
running, stopped and deleted (simulations/lifecycles.py), five commands an instance, in
waves of `batch` commands; only `apply` is timed, not reading where instances were placed.
`--profile` adds cProfile's top functions (by own time, CPU clock) of the timed part;
`--remembered N` starts from a cell that remembers N earlier command ids (a writer's steady
state), since every new command's id is looked up among them. `cpu_us_per_command` is this
process's CPU a command (steadier than wall time on a shared machine).
"""

from __future__ import annotations

import cProfile
import io
import json
import pstats
import time
from datetime import timedelta
from typing import Any

from adapters.bootstrap import Engine, connect
from engine import id_memory
from schemas.outcomes import Outcome
from simulations import lifecycles, workloads

NODES = 100
PROFILE_TOP = 20


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
    price, _, kata = workloads.setup()[:3]
    pool = {**kata, "pool": "bench", "command_id": "bench-pool", "min_nodes": NODES,
            "max_nodes": NODES, "node_models": [{**workloads.SHARED_MODELS[0], "pods": 250}]}
    ready = [{"type": "ReportNodeReady", "command_id": f"bench-ready-{k}",
              "cell": workloads.CELL, "occurred_at": (start + timedelta(seconds=30)).isoformat(),
              "node_id": f"bench-{k:05d}"} for k in range(1, NODES + 1)]
    networks = workloads.account_networks((f"acct-{i}" for i in range(100)), workloads.CELL,
                                          start, {"vpc": "v", "subnet": "s"}, prefix="bench")
    return [json.dumps(c).encode() for c in (price, pool, *ready, *networks)]


Timed = tuple[float, float, int]  # wall seconds, CPU seconds, commands accepted


def _timed_creates(engine: Engine, commands: int, batch: int,
                   profiler: cProfile.Profile | None) -> Timed:
    engine.apply(setup_commands())
    items = creates(commands)
    seconds, cpu, accepted = 0.0, 0.0, 0
    for i in range(0, len(items), batch):
        took, used, outcomes = _apply(engine, items[i:i + batch], profiler)
        seconds, cpu = seconds + took, cpu + used
        accepted += sum(o.status == "accepted" for o in outcomes)
    return seconds, cpu, accepted


def _timed_lifecycles(engine: Engine, commands: int, batch: int,
                      profiler: cProfile.Profile | None) -> Timed:
    engine.apply([json.dumps(c).encode() for c in lifecycles.setup_commands()])
    waves = lifecycles.Lifecycles(max(1, commands // lifecycles.STEPS),
                                  group=max(1, batch // lifecycles.STEPS))
    placed = lifecycles.Placements(waves.names())
    seconds, cpu, accepted = 0.0, 0.0, 0
    for k in range(waves.waves):
        placed.learn(engine.app)  # untimed: where group k-1 went
        items = [json.dumps(c).encode() for c in waves.wave(k, placed.nodes)]
        took, used, outcomes = _apply(engine, items, profiler)
        seconds, cpu = seconds + took, cpu + used
        accepted += sum(o.status == "accepted" for o in outcomes)
    return seconds, cpu, accepted


def _apply(engine: Engine, items: list[bytes], profiler: cProfile.Profile | None
           ) -> tuple[float, float, list[Outcome]]:
    """One batch through the apply path: its wall and CPU seconds, and its outcomes."""
    began, cpu = time.perf_counter(), time.process_time()
    if profiler is not None:
        profiler.enable()
    outcomes = engine.apply(items)
    if profiler is not None:
        profiler.disable()
    return time.perf_counter() - began, time.process_time() - cpu, outcomes


WORKLOADS = {"creates": _timed_creates, "lifecycles": _timed_lifecycles}


def remember_ids(engine: Engine, count: int) -> None:
    """Fill the bench cell's id memory with `count` ids decided before (a writer's steady
    state: a busy cell remembers a week of them), frozen into segments as a writer's are.
    Each points at a cell-log entry that does not exist; only a hash collision (2^-64) would
    read one."""
    state = engine.processor.world.part(workloads.CELL)
    at = workloads.DAY_START
    for start in range(0, count, id_memory.SEGMENT):
        entries = [{"principal": "account:earlier", "command_id": f"earlier-{i}"}
                   for i in range(start, min(count, start + id_memory.SEGMENT))]
        state.ids.remember(entries, 0, at)
        state.ids._freeze()


def bench_apply(store: str, commands: int = 10_000, batch: int = 1000,
                workload: str = "creates", profile: bool = False, remembered: int = 0
                ) -> dict[str, Any]:
    # CPU time, not wall time: on a shared machine waiting for a core is not our cost.
    profiler = cProfile.Profile(time.process_time) if profile else None
    with connect(store) as engine:
        engine.processor.warm([workloads.CELL])
        remember_ids(engine, remembered)
        before = engine.app.recorder.max_notification_id() or 0
        seconds, cpu, accepted = WORKLOADS[workload](engine, commands, batch, profiler)
        decided = commands if workload == "creates" else \
            lifecycles.STEPS * max(1, commands // lifecycles.STEPS)
        events = (engine.app.recorder.max_notification_id() or 0) - before
        began = time.perf_counter()
        engine.update_projections()
        project_s = time.perf_counter() - began
    report = {"store": store.split(":")[0], "workload": workload, "commands": decided,
              "batch": batch, "accepted": accepted, "seconds": round(seconds, 3),
              "commands_per_s": round(decided / seconds),
              "us_per_command": round(1e6 * seconds / decided, 1),
              # This process's CPU a command: steadier than wall time on a shared machine
              # (on PostgreSQL it leaves out the server's).
              "cpu_us_per_command": round(1e6 * cpu / decided, 1),
              "events_in_log": events, "projection_seconds": round(project_s, 3),
              "remembered_ids": remembered}
    if profiler is not None:
        report["profile"] = top_functions(profiler)
        report["profile_cumulative"] = top_functions(profiler, sort="cumulative")
    return report


def top_functions(profiler: cProfile.Profile, n: int = PROFILE_TOP, sort: str = "tottime"
                  ) -> list[str]:
    """cProfile's table of the `n` functions with the most own time (or `sort`)."""
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats(sort).print_stats(n)
    lines = out.getvalue().splitlines()
    header = next(i for i, line in enumerate(lines) if line.lstrip().startswith("ncalls"))
    return [line for line in lines[header:] if line.strip()]
