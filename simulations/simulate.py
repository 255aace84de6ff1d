"""`cis simulate`: one workload through the real engine under each scenario of a comparison.

Each scenario gets its own engine on the memory store, its own simulated infrastructure
and virtual clock (starting at `workloads.DAY_START`), and the same launches. Its result is
a plain dict of figures (`figures`) and step series for the plots; everything in it is a
function of the workload, the scenario and the seed, never of the wall clock.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np

from adapters import queries
from adapters.bootstrap import connect
from adapters.drivers.simulated import Failures, VirtualClock
from engine.policies.runtimes import START_SECONDS
from simulations import workloads
from simulations.simulate_infra import HeapInfrastructure
from simulations.simulate_loop import SimulationLoop
from simulations.simulate_metrics import Collector
from simulations.simulate_scenarios import Scenario, price_book
from simulations.workload_sources import Workload

TICK_EVERY_S = 60  # expiry, autoscaling and finalisation run on the cell's Ticks
NODE_BOOT_SECONDS = 45.0


@dataclass
class Result:
    scenario: Scenario
    figures: dict[str, Any]
    times_h: np.ndarray  # hours from the start
    series: dict[str, np.ndarray]


def run_scenario(scenario: Scenario, workload: Workload, hours: float, seed: int,
                 quantum_s: float = 1.0, invoices: bool = True,
                 progress: Callable[[float, int], None] | None = None,
                 store: str = "memory://") -> Result:
    """`progress(simulated seconds, launches created)` after every quantum. `store` must be
    empty: the memory store, or a fresh SQLite file for a run too big for memory."""
    start = workloads.DAY_START
    end = start + timedelta(hours=hours)
    cell = workloads.CELL
    rng = random.Random(f"{seed}:{scenario.name}")  # the scenario's own mishaps
    with connect(store) as engine:
        clock = VirtualClock(start)
        launches = workload.launches
        setup = scenario.setup(launches, hours, cell)
        max_nodes = setup[1]["max_nodes"]
        failures = Failures(boot_failures={
            f"{scenario.pool_name}-{k:05d}" for k in range(1, 3 * max_nodes + 1)
            if rng.random() < scenario.boot_failure_rate})
        infra = HeapInfrastructure(clock, NODE_BOOT_SECONDS, start_seconds=START_SECONDS,
                                   failures=failures)
        collector = Collector(start, scenario.prices())
        loop = SimulationLoop(engine, infra, start, launches, cell, scenario.pool_name,
                              scenario.runtime, quantum_s, on_event=collector.observe,
                              on_batch=(lambda now, made: progress(
                                  (now - start).total_seconds(), made)) if progress else None)
        for command in setup:
            loop.at(start, command)
        for k in range(1, int(hours * 3600 // TICK_EVERY_S) + 1):
            at = start + timedelta(seconds=k * TICK_EVERY_S)
            loop.at(at, {"type": "Tick", "command_id": f"tick-{k}", "cell": cell,
                         "now": at.isoformat()})
        if scenario.price_change_at is not None:
            at = start + timedelta(hours=hours * scenario.price_change_at)
            loop.at(at, price_book(cell, at.isoformat(), scenario.price_factor, "price-up"))
        if scenario.storm_at is not None:
            loop.at(start + timedelta(hours=hours * scenario.storm_at),
                    lambda: _storm(infra, scenario.storm_fraction, rng))
        loop.run(until=end)
        revenue = _revenue(engine, launches, end) if invoices else None
        return _result(scenario, collector, loop, end, hours, revenue)


def _storm(infra: HeapInfrastructure, fraction: float, rng: random.Random) -> None:
    now = infra.clock()
    running = sorted(n.node_id for n in infra.nodes.values()
                     if n.status(now).state == "running")
    for node_id in rng.sample(running, round(len(running) * fraction)):
        infra.lose_node(node_id, "hypervisor failure (storm)")


def _revenue(engine: Any, launches: list[Any], end: datetime) -> Decimal:
    """What the invoices say the tenants owe for the run (open invoices accrued to its end)."""
    engine.update_projections()
    total = Decimal(0)
    for account in sorted({x.account for x in launches}):
        for invoice in queries.invoices(engine, account, as_of=end)["invoices"]:
            total += Decimal(invoice["total"])
    return total


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def _result(scenario: Scenario, c: Collector, loop: SimulationLoop, end: datetime,
            hours: float, revenue: Decimal | None) -> Result:
    until_s = hours * 3600
    times, series = c.series(until_s)
    area = {name: c.integral(times, level, until_s) for name, level in series.items()}

    def share(part: str, whole: str) -> float | None:
        return round(area[part] / area[whole], 4) if area[whole] else None

    # Utilisation is of the ready nodes' capacity; cost counts node-hours from each VM's
    # request (a booting VM is paid for too).
    cost = c.cost(end)
    billed_vcpu_h = area["billed_cpu"] / 1000 / 3600
    node_hours = c.node_hours(end)
    figures: dict[str, Any] = {
        "scenario": scenario.name, "description": scenario.description,
        "pool_kind": scenario.kind, "runtime": scenario.runtime,
        "launches": loop.created,  # a trace's launches after the run's end never come
        "launches_after_run": len(loop.launches) - loop.created,
        "commands": dict(sorted(loop.outcomes.items())),
        "nodes_peak": int(series["nodes_paid"].max()),
        "nodes_mean": round(area["nodes_paid"] / until_s, 2),
        "node_hours": round(sum(node_hours.values()), 3),
        "scale_out": c.node_events["Requested"],
        "scale_in": c.node_events["Terminated"],
        "nodes_lost": c.node_events["Lost"],
        "allocated_cpu": share("alloc_cpu", "cap_cpu"),
        "allocated_memory": share("alloc_mem", "cap_mem"),
        "billed_cpu": share("billed_cpu", "cap_cpu"),
        "billed_memory": share("billed_mem", "cap_mem"),
        "started": len(c.to_running),
        "to_scheduled_p50_s": _percentile(c.to_scheduled, 50),
        "to_scheduled_p99_s": _percentile(c.to_scheduled, 99),
        "pending_p50_s": _percentile(c.to_running, 50),
        "pending_p99_s": _percentile(c.to_running, 99),
        "expired": c.ends["expired"],
        "ended": dict(sorted(c.ends.items())),
        "billed_vcpu_hours": round(billed_vcpu_h, 3),
        "cost_usd": str(cost.quantize(Decimal("0.01"))),
        "revenue_usd": None if revenue is None else str(revenue),
        "margin": None if not revenue else round(float((revenue - cost) / revenue), 4),
        "cost_per_billed_vcpu_hour_usd": round(float(cost) / billed_vcpu_h, 5)
        if billed_vcpu_h else None,
        "infra_commands": dict(sorted(loop.infra_commands.items())),
    }
    return Result(scenario, figures, times / 3600, series)
