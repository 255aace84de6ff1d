"""`cis simulate --what-if`: a recorded log's own commands re-run under another policy.

Every batch the cell logs record is re-run, with the same boundaries, through a fresh engine
on the memory store (`adapters/replay_decisions.rerun_decisions`, as `cis audit replay`
does), each ConfigurePool or PublishPriceBook changed as the `Policy` says. Both logs, the
recorded one and the what-if's, are then read the same way into `cis simulate`'s figures
(`simulate_metrics.Collector`, `simulate.Part`, `simulate._result`) over the recorded
run's time window.

The replay is open-loop: there is no simulated infrastructure, only the reports the real
one sent for the recorded decisions. Where the what-if decides otherwise (another node, a
node the recorded run never asked for), no report speaks of it, and the reports about the
recorded decisions are rejected; the outcome counts show how far that went.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from eventsourcing.utils import get_topic

from adapters import queries
from adapters.bootstrap import Engine, connect
from adapters.replay_decisions import DecisionsCompared, rerun_decisions
from engine.domain.cell_log import CellLog
from engine.limits import EngineLimits
from schemas.limits import TIME_MIN
from simulations.simulate import Part, Result, _result
from simulations.simulate_loop import _topics
from simulations.simulate_metrics import Collector
from simulations.simulate_scenarios import Scenario
from simulations.what_if_policy import Policy

HANDLED = get_topic(CellLog.CommandsHandled)
# Figures a log without simulated infrastructure cannot give.
NOT_AVAILABLE = ("launches_after_run", "infra_commands")


@dataclass
class Batches:
    """What the cell logs say: the run's window, node prices, tenants and outcomes."""

    start: datetime | None = None
    end: datetime | None = None
    prices: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    accounts: set[str] = field(default_factory=set)
    kinds: set[str] = field(default_factory=set)
    runtimes: set[str] = field(default_factory=set)
    created: int = 0  # CreateInstance commands decided
    outcomes: Counter[str] = field(default_factory=Counter)  # "accepted" or a reject code
    launches: list[None] = field(default_factory=list)  # `_result` counts what never came
    infra_commands: dict[str, int] = field(default_factory=dict)

    def read(self, event: Any) -> None:
        if event.timestamp > TIME_MIN:  # a batch of rejections only is stamped TIME_MIN
            self.start = min(self.start or event.timestamp, event.timestamp)
            self.end = max(self.end or event.timestamp, event.timestamp)
        for entry in event.outcomes:
            if entry.get("status") == "accepted":
                self.outcomes["accepted"] += 1
            else:  # each reason code once per command, as `cis simulate` counts
                self.outcomes.update(sorted({r.get("code") or "rejected"
                                             for r in entry.get("reasons", [])} or {"rejected"}))
            command = entry.get("command") or {}
            if command.get("type") == "CreateInstance":
                self.created += 1
                self.accounts.add(command["account"])
                self.runtimes.add(command.get("runtime", "runc"))
            elif command.get("type") == "ConfigurePool":
                self.kinds.add(command.get("kind", "dedicated"))
                for model in command.get("node_models", []):
                    self.prices[(command["pool"], model["name"])] = Decimal(
                        str(model.get("price_per_hour", 0)))


def read_batches(engine: Engine) -> Batches:
    batches = Batches()
    for _, event in engine.app.read(0, topics=(HANDLED,)):
        batches.read(event)
    return batches


def figures(engine: Engine, name: str, description: str, start: datetime,
            end: datetime) -> Result:
    """`cis simulate`'s figures of one log, over [start, end] (the recorded run's window)."""
    batches = read_batches(engine)
    collector = Collector(start, batches.prices)
    for _, event in engine.app.read(0, topics=_topics()):
        collector.observe(event)
    engine.update_projections()
    revenue = sum((Decimal(invoice["total"]) for account in sorted(batches.accounts)
                   for invoice in queries.invoices(engine, account, as_of=end)["invoices"]),
                  Decimal(0))
    scenario = Scenario(name, description, kind=", ".join(sorted(batches.kinds)),
                        runtime=", ".join(sorted(batches.runtimes)))
    result = _result(scenario, Part.of(name, collector, batches, end, revenue), end,
                     (end - start).total_seconds() / 3600)
    for key in NOT_AVAILABLE:
        result.figures[key] = None
    return result


@dataclass
class WhatIf:
    policy: Policy
    decisions: DecisionsCompared  # the what-if's events against the recorded ones
    recorded: Result
    what_if: Result
    start: datetime
    end: datetime


def what_if(engine: Engine, limits: EngineLimits, policy: Policy,
            progress: Callable[[int], None] | None = None) -> WhatIf:
    """Re-run `engine`'s recorded batches under `policy`; both runs' figures side by side.
    With the same policy the decisions agree event for event (`decisions.agree`)."""
    window = read_batches(engine)
    if window.start is None or window.end is None:
        raise ValueError("the log records no batch with an accepted command: nothing to replay")
    start, end = window.start, window.end
    with connect("memory://") as fresh:
        decisions = rerun_decisions(engine, limits, progress=progress, into=fresh,
                                    rewrite=policy.rewrite)
        replayed = figures(fresh, "what-if", policy.describe(), start, end)
    recorded = figures(engine, "recorded", "as recorded", start, end)
    return WhatIf(policy, decisions, recorded, replayed, start, end)
