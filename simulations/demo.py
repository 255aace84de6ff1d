"""`cis demo`: a simulated day through the real engine on the embedded store."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from tqdm import tqdm

from adapters import queries
from adapters.bootstrap import Engine, connect
from adapters.infra_commands import commands_in
from engine.domain.node import Node
from schemas.infra import RunPod
from simulations import workloads
from simulations.harness import Plan
from simulations.simulate_infra import HeapDrivenHarness
from simulations.simulate_scenarios import peak
from simulations.timeline import plot

LOST_NODE = "general-00005"


def run_demo(store: str | None, instances: int, seed: int, plot_path: Path | None = None
             ) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="cis-demo-"))
    if store is None:
        store = f"sqlite:///{workdir / 'demo.db'}"
    start = workloads.DAY_START
    end = start + timedelta(days=1)
    began = time.perf_counter()
    counts: Counter[str] = Counter()
    with connect(store) as engine:
        creates, plans = workloads.tenants(instances, seed)
        # Every report comes from the simulated infrastructure behind the real driver ports.
        lost = {(workloads.CELL, LOST_NODE): start + timedelta(hours=13)}
        harness = HeapDrivenHarness(engine, start, plans=plans, lost_nodes=lost)
        for command in sized_setup(creates, plans):
            harness.submit(start, command)
        for at, command in [*creates, *workloads.ticks(start, 24)]:
            harness.submit(at, command)
        with tqdm(total=int((end - start).total_seconds()), unit="s", unit_scale=True,
                  desc="simulated day", disable=None, leave=False) as bar:
            def progress(outcomes: list) -> None:
                counts.update(o.status for o in outcomes)
                queued = harness._queue[0][0] if harness._queue else end
                bar.n = int((min(queued, end) - start).total_seconds())
                bar.refresh()
            harness.on_outcomes = progress
            harness.run(until=end)
        engine.update_projections()
        elapsed = time.perf_counter() - began
        _summary(engine, store, counts, elapsed, end)
        _infrastructure(engine, workdir)
        _look_closer(store)
        picture = plot(engine.app, plot_path or workdir / "demo.png",
                       f"CIS demo: one day in cell {workloads.CELL}")
        print(f"\nA picture of the day (nodes up, billed and pending instances): {picture}")
    return 0


# Instances a kata node holds: its model's ENIs (one per instance), spec aside.
KATA_PER_NODE = min(m["enis"] for m in workloads.SHARED_MODELS)


def sized_setup(creates: list[tuple[datetime, dict[str, Any]]], plans: dict[str, Plan]
                ) -> list[dict[str, Any]]:
    """The demo's set-up with each pool's max_nodes raised to its workload's peak (a
    dedicated node per live instance; a kata node per KATA_PER_NODE), with a margin for
    nodes booting and draining: the pools never cap the demo, whatever --instances says."""
    lives: dict[str, list[tuple[float, float]]] = {}
    for at, command in creates:
        begin = (at - workloads.DAY_START).total_seconds()
        lives.setdefault(command["pool"], []).append(
            (begin, begin + plans[command["instance_id"]].lifetime_s))
    wanted = {"general": math.ceil(peak(lives.get("general", [])) * 1.25),
              "kata": math.ceil(peak(lives.get("kata", [])) / KATA_PER_NODE * 1.5)}
    out = []
    for command in workloads.setup():
        if command["type"] == "ConfigurePool":
            command = {**command, "max_nodes": max(command["max_nodes"],
                                                   wanted[command["pool"]] + 2)}
        out.append(command)
    return out


def _summary(engine, store: str, counts: Counter[str], elapsed: float, as_of) -> None:  # noqa: ANN001
    world = engine.processor.world
    print(f"CIS demo: one simulated day ({workloads.DAY_START:%Y-%m-%d}, cell "
          f"{workloads.CELL}) through the real engine")
    print(f"  store     {store}")
    print(f"  commands  {sum(counts.values())} handled in {elapsed:.1f} s: "
          f"{counts['accepted']} accepted, {counts['rejected']} rejected\n")
    print("Nodes (VMs the pools asked their auto-scaling groups for)")
    nodes = [a for a in world.aggregates.values() if isinstance(a, Node)]
    for pool in sorted({n.pool for n in nodes}):
        states = Counter(n.state for n in nodes if n.pool == pool)
        models = Counter(n.model for n in nodes if n.pool == pool)
        print(f"  {pool:<8} {sum(states.values()):>3} nodes  "
              + ", ".join(f"{v} {k}" for k, v in sorted(states.items()))
              + "   models: " + ", ".join(f"{v}x{k}" for k, v in sorted(models.items())))
    print("\nInstances by state")
    states = queries.states(engine).most_common()
    # Bars scaled to the terminal: the longest fills what the label and count leave.
    room = max(10, shutil.get_terminal_size().columns - 24)
    most = max((count for _, count in states), default=1)
    for state, count in states:
        print(f"  {state:<14}{count:>6}  {'#' * max(1, round(count * room / most))}")
    print(f"\nBills (per-second, as of {as_of:%Y-%m-%d %H:%M} UTC)")
    print(f"  {'account':<10}{'instances':>10}{'billed seconds':>16}{'amount':>12}")
    for account in workloads.ACCOUNTS:
        report = queries.usage(engine, account, as_of)
        seconds = sum(line["billed_seconds"] for line in report["instances"])
        total = Decimal(report["totals"].get("USD", "0"))
        print(f"  {account:<10}{len(report['instances']):>10}{seconds:>16,}"
              f"{total:>12,.2f} USD")


def _look_closer(store: str) -> None:
    print("\nLook closer:")
    print(f"  cis instances --store {store} --account acme")
    print(f"  cis usage --store {store} --account acme")
    print(f"  cis invoices --store {store} --account acme")
    print(f"  cis nodes --store {store}")
    print(f"  cis rebuild --store {store}")
    print(f"  cis audit verify --store {store}   (the log's hash chain: was anything changed?)")
    print(f"  cis audit replay --store {store}   (every projection and decision re-derived)")
    print(f"  cis tokens create --store {store} --account acme   (the API wants a bearer token)")
    print(f"  cis api --store {store}   then open http://127.0.0.1:8080/docs")


def _infrastructure(engine: Engine, workdir: Path) -> None:
    """What `cis serve`'s outbox would have sent the cloud and the nodes for this day."""
    commands = commands_in(engine.app)
    kinds = Counter(type(c).__name__ for c in commands)
    print("\nInfrastructure commands the outbox sends (cis.vm-commands, cis.pod-commands)")
    print("  " + ", ".join(f"{kinds[k]} {k}" for k in ("ProvisionNode", "TerminateNode",
                                                      "RunPod", "DeletePod")))
    first = next((c for c in commands if isinstance(c, RunPod)), None)
    if first is not None:
        path = workdir / "pod.json"
        path.write_text(json.dumps(first.manifest, indent=2) + "\n")
        print(f"  the first Pod manifest ({first.instance_id} on {first.node_id}): {path}")
