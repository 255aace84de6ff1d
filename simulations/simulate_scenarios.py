"""`cis simulate`'s built-in scenarios: pools, runtimes, policies and mishaps, as data.

A scenario is one way of serving the workload; a comparison is a few scenarios run on the
same launches and reported side by side. Node prices are on-demand list prices of the
shape (USD 0.03 per vCPU-hour and 0.0045 per GiB-hour: an m5.4xlarge, 16C64G, is
0.768 an hour); tenants pay
the Fargate-like price book of `simulations/workloads.py`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from simulations import workloads
from simulations.workload_sources import Launch

VCPU_HOUR = Decimal("0.03")
GIB_HOUR = Decimal("0.0045")
# Fargate-like rates per second (the demo's price book); the mid-day change raises them 20%.
RATE_VCPU_S = Decimal("0.000011244")
RATE_GIB_S = Decimal("0.000001235")


def model(name: str, enis: int, pods: int) -> dict[str, Any]:
    cpu, mem = name[:-1].split("C")
    price = (VCPU_HOUR * int(cpu) + GIB_HOUR * int(mem)).quantize(Decimal("0.000001"))
    return {"name": name, "millicores": int(cpu) * 1000, "memory_mib": int(mem) * 1024,
            "enis": enis, "pods": pods, "price_per_hour": str(price)}


# v1: one instance per VM, the smallest shape that holds it.
DEDICATED = [model(n, 2, 4) for n in ("1C2G", "2C4G", "2C8G", "4C8G", "4C16G", "8C32G")]
# v2: big hosts of sandboxed micro-VMs; ENI trunking gives each Pod its own branch ENI.
SHARED = [model("16C64G", 110, 110)]
SHARED_FEW_ENIS = [model("16C64G", 15, 110)]  # without trunking: the host's own ENIs


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    kind: str = "shared"  # the pool's kind: dedicated (v1) or shared (v2)
    runtime: str = "kata"
    models: list[dict[str, Any]] = field(default_factory=lambda: SHARED)
    pool: dict[str, Any] = field(default_factory=dict)  # more ConfigurePool fields
    # When in the run (a fraction of it: 0.5 of a day is 12:00) `storm_fraction` of the
    # running nodes are lost, and when the price book changes by `price_factor`.
    storm_at: float | None = None
    storm_fraction: float = 0.0
    boot_failure_rate: float = 0.0
    price_change_at: float | None = None
    price_factor: Decimal = Decimal("1.2")

    @property
    def pool_name(self) -> str:
        return "v1" if self.kind == "dedicated" else "v2"

    def prices(self) -> dict[tuple[str, str], Decimal]:
        return {(self.pool_name, m["name"]): Decimal(m["price_per_hour"]) for m in self.models}

    def max_nodes(self, launches: list[Launch], hours: float) -> int:
        """Room for the workload's peak with a margin: the pool is sized to it, so a run
        shows the design, not a cap someone forgot to raise."""
        if not launches:  # e.g. a trace whose every row was bad
            return 4
        peak = peak_concurrency(launches, hours)
        if self.kind == "dedicated":
            return max(4, math.ceil(peak * 1.5) + 10)
        cpu = sum(x.cpu_milli + 100 for x in launches) / max(1, len(launches))
        per_node = max(1.0, min(self.models[0]["millicores"] / cpu, self.models[0]["enis"]))
        return max(4, math.ceil(peak / per_node * 2) + 10)

    def setup(self, launches: list[Launch], hours: float, cell: str) -> list[dict[str, Any]]:
        at = workloads.DAY_START.isoformat()
        return [
            price_book(cell, at, Decimal(1), "setup-price"),
            {"type": "ConfigurePool", "command_id": f"setup-pool-{self.pool_name}",
             "cell": cell, "issued_at": at, "pool": self.pool_name, "kind": self.kind,
             "node_models": self.models, "min_nodes": 1,
             "max_nodes": min(100_000, self.max_nodes(launches, hours)),
             "spec_catalogue": workloads.FARGATE_LIKE_CATALOGUE,
             "pending_timeout_seconds": 900, **self.pool},
        ]


def price_book(cell: str, at: str, factor: Decimal, command_id: str) -> dict[str, Any]:
    return {"type": "PublishPriceBook", "command_id": command_id, "cell": cell,
            "issued_at": at, "effective_from": at, "currency": "USD", "minor_unit": 2,
            "rate_per_vcpu_second": str(RATE_VCPU_S * factor),
            "rate_per_gib_second": str(RATE_GIB_S * factor)}


def peak_concurrency(launches: list[Launch], hours: float) -> int:
    """The most launches alive at once, had each started at once (an upper bound)."""
    horizon = hours * 3600
    return peak((x.at_s, min(horizon, x.at_s + (x.lifetime_s or horizon))) for x in launches)


def peak(intervals: Iterable[tuple[float, float]]) -> int:
    """The most of these (start, end) intervals that overlap at one time."""
    points = sorted(p for start, end in intervals for p in ((start, 1), (end, -1)))
    alive = best = 0
    for _, change in points:
        alive += change
        best = max(best, alive)
    return best


V1 = Scenario("v1-dedicated", "v1: one runc instance per VM, the smallest shape that holds it",
              kind="dedicated", runtime="runc", models=DEDICATED)
V2 = Scenario("v2-kata", "v2: Kata micro-VMs packed on shared 16C64G hosts (best fit)")

COMPARISONS: dict[str, tuple[str, list[Scenario]]] = {
    "v1-vs-v2": ("v1 dedicated VMs vs v2 shared Kata hosts", [
        V1,
        # The autoscaler's default budget (1 node in flight) drains a pool of a thousand
        # one-instance VMs at one node per Tick: v1 pays for idle VMs waiting their turn.
        replace(V1, name="v1-budget-50", description="v1 with disruption_budget 50: "
                "scale-in ends up to 50 idle VMs at once", pool={"disruption_budget": 50}),
        V2,
        replace(V2, name="v2-kata-15-enis", description="v2 without ENI trunking: 15 ENIs "
                "per host bound the packing", models=SHARED_FEW_ENIS)]),
    "runtimes": ("the seed's runtime profiles: start time and overhead", [
        replace(V1, name="runc-dedicated", description="runc (632 ms, 15 MiB) on dedicated "
                "VMs: a shared pool refuses runc"),
        replace(V2, name="kata-shared", description="kata (1249 ms, 136 MiB, 100 m) shared"),
        replace(V2, name="hyper-shared", runtime="hyper",
                description="hyper (3256 ms, 80 MiB, 100 m) shared")]),
    "placement": ("placement policies on the v2 pool", [
        replace(V2, name=f"v2-{policy}", description=f"placement_policy {policy}",
                pool={"placement_policy": policy})
        for policy in ("best_fit", "first_fit", "worst_fit", "dot_product")]),
    "scale-in": ("scale-in thresholds on the v2 pool", [
        replace(V2, name=f"v2-scale-in-{t}", description=f"scale_down_utilisation_threshold "
                f"{t}, unneeded after {s} s", pool={"scale_down_utilisation_threshold": t,
                                                    "scale_down_unneeded_seconds": s})
        for t, s in ((0.3, 600), (0.5, 600), (0.7, 300))]),
    "node-loss": ("a node-loss storm at 13:00 of a day (and 2% of VMs failing to boot)", [
        V2, replace(V2, name="v2-storm", description="v2, 30% of the running nodes lost at "
                    "13/24 of the run and 2% of boots failing", storm_at=13 / 24,
                    storm_fraction=0.3, boot_failure_rate=0.02)]),
    "price-change": ("a mid-day price change (+20% at 12:00 of a day)", [
        V2, replace(V2, name="v2-price-up", description="v2, price book +20% from half-way "
                    "through the run", price_change_at=0.5)]),
}
