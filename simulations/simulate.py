"""`cis simulate`: one workload through the real engine under each scenario of a comparison.

Each scenario gets its own engine on the memory store, its own simulated infrastructure
and virtual clock (starting at `workloads.DAY_START`), and the same launches. Its result is
a plain dict of figures (`figures`) and step series for the plots; everything in it is a
function of the workload, the scenario and the seed, never of the wall clock.

A region of N cells (`simulate_cells.run_region`) runs each cell as one of these engines on
its share of the launches (`split`); a cell's run is kept raw (`Part`) and the region's
figures are computed from the parts merged, so they add up exactly.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
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
from simulations.simulate_loop import NETWORK, SimulationLoop
from simulations.simulate_metrics import Collector, Steps, cost, integral, series
from simulations.simulate_scenarios import Scenario, price_book
from simulations.workload_sources import Launch

TICK_EVERY_S = 60  # expiry, autoscaling and finalisation run on the cell's Ticks
NODE_BOOT_SECONDS = 45.0
# What revenue reads: the invoices' projections (the instances and nodes views are not).
BILLING_PROJECTIONS = ("usage_v2", "invoices_v2")


@dataclass
class Result:
    scenario: Scenario
    figures: dict[str, Any]
    times_h: np.ndarray  # hours from the start
    series: dict[str, np.ndarray]
    cells: list[dict[str, Any]] = field(default_factory=list)  # each cell's figures, if > 1


@dataclass
class Part:
    """One cell's run, raw: what a region's figures are computed from. Several cells' parts
    are merged (sums, the steps of every series, the latency samples pooled), never their
    figures averaged."""

    cell: str
    steps: Steps
    to_scheduled: list[float]
    to_running: list[float]
    ends: Counter[str]
    node_events: Counter[str]
    node_hours: dict[tuple[str, str], float]
    prices: dict[tuple[str, str], Decimal]
    created: int  # launches turned into CreateInstance commands
    after_run: int  # launches due after the run's end
    outcomes: Counter[str]
    infra_commands: Counter[str]
    revenue: Decimal | None

    @classmethod
    def of(cls, cell: str, c: Collector, loop: Any, end: datetime,
           revenue: Decimal | None) -> Part:
        """`loop`: a `SimulationLoop`, or what says the same of a recorded log (what_if)."""
        return cls(cell, c.steps(), c.to_scheduled, c.to_running, Counter(c.ends),
                   Counter(c.node_events), c.node_hours(end), c.prices, loop.created,
                   len(loop.launches) - loop.created, Counter(loop.outcomes),
                   Counter(loop.infra_commands), revenue)

    @staticmethod
    def merged(parts: list[Part]) -> Part:
        """The region: the cells' parts in cell order (so the same cells merge alike)."""
        if len(parts) == 1:
            return parts[0]
        hours: Counter[tuple[str, str]] = Counter()
        for part in parts:
            hours.update(part.node_hours)
        revenues = [p.revenue for p in parts]
        return Part(
            "+".join(p.cell for p in parts), Steps.joined([p.steps for p in parts]),
            [x for p in parts for x in p.to_scheduled], [x for p in parts for x in p.to_running],
            sum((p.ends for p in parts), Counter()),
            sum((p.node_events for p in parts), Counter()), dict(hours), parts[0].prices,
            sum(p.created for p in parts), sum(p.after_run for p in parts),
            sum((p.outcomes for p in parts), Counter()),
            sum((p.infra_commands for p in parts), Counter()),
            None if None in revenues else sum(revenues, Decimal(0)))  # type: ignore[arg-type]


def cell_names(cells: int) -> list[str]:
    """The region's cells: `workloads.CELL` (az-1) alone, or az-1 ... az-N."""
    return [workloads.CELL] if cells == 1 else [f"az-{k}" for k in range(1, cells + 1)]


def split(launches: list[Launch], cells: int) -> list[list[Launch]]:
    """The launches each cell gets: in time order, dealt round-robin (launch k to cell
    k mod N), so every cell sees the same diurnal shape and a like share of every spec."""
    return [launches[k::cells] for k in range(cells)]


def run_cell(scenario: Scenario, launches: list[Launch], hours: float, seed: int,
             cell: str = workloads.CELL, quantum_s: float = 1.0, invoices: bool = True,
             progress: Callable[[float, int], None] | None = None,
             store: str = "memory://") -> Part:
    """One cell of the region under `scenario`. `progress(simulated seconds, launches
    created)` after every quantum. `store` must be empty: the memory store, or a fresh
    SQLite file for a run too big for memory."""
    start = workloads.DAY_START
    end = start + timedelta(hours=hours)
    # The scenario's own mishaps; each further cell draws its own.
    mishaps = f"{seed}:{scenario.name}" + ("" if cell == workloads.CELL else f":{cell}")
    rng = random.Random(mishaps)
    with connect(store) as engine:
        clock = VirtualClock(start)
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
        # Each account owns the network its creates name (SetAccountNetworks).
        for command in workloads.account_networks(sorted({launch.account for launch in launches}),
                                                  cell, start, NETWORK):
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
        return Part.of(cell, collector, loop, end, revenue)


def _storm(infra: HeapInfrastructure, fraction: float, rng: random.Random) -> None:
    now = infra.clock()
    running = sorted(n.node_id for n in infra.nodes.values()
                     if n.status(now).state == "running")
    for node_id in rng.sample(running, round(len(running) * fraction)):
        infra.lose_node(node_id, "hypervisor failure (storm)")


def _revenue(engine: Any, launches: list[Any], end: datetime) -> Decimal:
    """What the invoices say the tenants owe for the run (open invoices accrued to its end).
    Only the projections invoices read are brought up to date (not instances, nodes)."""
    engine.projections = [p for p in engine.projections if p.name in BILLING_PROJECTIONS]
    engine.update_projections()
    total = Decimal(0)
    for account in sorted({x.account for x in launches}):
        for invoice in queries.invoices(engine, account, as_of=end)["invoices"]:
            total += Decimal(invoice["total"])
    return total


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 3) if values else None


def result(scenario: Scenario, parts: list[Part], end: datetime, hours: float) -> Result:
    """The figures of the region (the cells' parts merged); with several cells, each
    cell's own figures too."""
    merged = _result(scenario, Part.merged(parts), end, hours)
    if len(parts) > 1:
        merged.cells = [_result(scenario, part, end, hours).figures for part in parts]
    return merged


def _result(scenario: Scenario, part: Part, end: datetime, hours: float) -> Result:
    until_s = hours * 3600
    times, levels = series(part.steps, until_s)
    area = {name: integral(times, level, until_s) for name, level in levels.items()}

    def share(some: str, whole: str) -> float | None:
        return round(area[some] / area[whole], 4) if area[whole] else None

    # Utilisation is of the ready nodes' capacity; cost counts node-hours from each VM's
    # request (a booting VM is paid for too).
    spent = cost(part.node_hours, part.prices)
    billed_vcpu_h = area["billed_cpu"] / 1000 / 3600
    revenue = part.revenue
    figures: dict[str, Any] = {
        "scenario": scenario.name, "description": scenario.description,
        "pool_kind": scenario.kind, "runtime": scenario.runtime,
        "launches": part.created,  # a trace's launches after the run's end never come
        "launches_after_run": part.after_run,
        "commands": dict(sorted(part.outcomes.items())),
        "nodes_peak": int(levels["nodes_paid"].max()),
        "nodes_mean": round(area["nodes_paid"] / until_s, 2),
        "node_hours": round(sum(part.node_hours.values()), 3),
        "scale_out": part.node_events["Requested"],
        "scale_in": part.node_events["Terminated"],
        "nodes_lost": part.node_events["Lost"],
        "allocated_cpu": share("alloc_cpu", "cap_cpu"),
        "allocated_memory": share("alloc_mem", "cap_mem"),
        "billed_cpu": share("billed_cpu", "cap_cpu"),
        "billed_memory": share("billed_mem", "cap_mem"),
        "started": len(part.to_running),
        "to_scheduled_p50_s": _percentile(part.to_scheduled, 50),
        "to_scheduled_p99_s": _percentile(part.to_scheduled, 99),
        "pending_p50_s": _percentile(part.to_running, 50),
        "pending_p99_s": _percentile(part.to_running, 99),
        "expired": part.ends["expired"],
        "ended": dict(sorted(part.ends.items())),
        "billed_vcpu_hours": round(billed_vcpu_h, 3),
        "cost_usd": str(spent.quantize(Decimal("0.01"))),
        "revenue_usd": None if revenue is None else str(revenue),
        "margin": None if not revenue else round(float((revenue - spent) / revenue), 4),
        "cost_per_billed_vcpu_hour_usd": round(float(spent) / billed_vcpu_h, 5)
        if billed_vcpu_h else None,
        "infra_commands": dict(sorted(part.infra_commands.items())),
    }
    return Result(scenario, figures, times / 3600, levels)
