"""The real engine and the simulated infrastructure on one virtual clock, at region scale.

As `simulations/driven.DrivenHarness`: the engine's stored events become the outbox's
commands (`InfraTranslator`), the driver worker's handlers carry them out on the simulated
infrastructure, and only what it shows comes back as reports. Two differences make a day
of 500,000 launches feasible: time moves in quanta (everything due within `quantum_s`
goes in one batch, in time order; an instance's clock never goes back, docs/design.md
§2.9, so a report applied a fraction of a quantum late is recorded at its own time), and
launches are turned into commands only when due. The tenants are scripted: each stops its
instance `lifetime_s` after it first runs and deletes it once it has ended.
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from eventsourcing.utils import get_topic

from adapters.bootstrap import Engine
from adapters.driver_ledger import Ledger
from adapters.driver_worker import CloudHandler, PodHandler
from adapters.infra_commands import TOPICS, InfraTranslator
from engine.domain.instance import Instance
from engine.domain.node import Node
from engine.processor import Item
from schemas.outcomes import Outcome
from simulations.driven import carry_out
from simulations.simulate_infra import HeapInfrastructure
from simulations.workload_sources import Launch

DELETE_AFTER_S = 1.0  # a tenant deletes an ended instance this soon after


def _topics() -> tuple[str, ...]:
    """The events the loop reads: what the outbox translates, and every change of an
    instance's state or a node's (the metrics and the tenants); bookkeeping is skipped."""
    def tree(cls: type) -> list[type]:
        return [cls, *(c for sub in cls.__subclasses__() for c in tree(sub))]

    kinds = [Instance.Requested, *tree(Instance.Transitioned), *tree(Node.Event)]
    return tuple(sorted({*TOPICS, *(get_topic(k) for k in kinds)}))


NETWORK = {"vpc": "vpc-sim", "subnet": "subnet-a"}  # every simulated account's own


def create_command(i: int, launch: Launch, at: datetime, cell: str, pool: str,
                   runtime: str) -> dict[str, Any]:
    # Specs in the schema's units: vCPU exactly, GiB rounded up to its 3 decimal places.
    gib = Decimal(-(-launch.memory_mib * 1000 // 1024)) / 1000
    return {"type": "CreateInstance", "command_id": f"create-{i}", "cell": cell,
            "issued_at": at.isoformat(), "account": launch.account,
            "instance_id": f"i-{i:07d}", "pool": pool, "runtime": runtime,
            "restart_policy": "Always",
            "containers": [{"name": "main", "image": "registry.example/app:1",
                            "vcpu": str(Decimal(launch.cpu_milli) / 1000),
                            "memory_gib": str(gib)}],
            "network": {**NETWORK}}


@dataclass
class SimulationLoop:
    engine: Engine
    infra: HeapInfrastructure
    start: datetime
    launches: list[Launch]
    cell: str
    pool: str
    runtime: str
    quantum_s: float = 1.0
    on_event: Callable[[Any], None] | None = None
    on_batch: Callable[[datetime, int], None] | None = None  # (clock, launches created)
    outcomes: Counter[str] = field(default_factory=Counter)  # "accepted" or a reject code
    infra_commands: Counter[str] = field(default_factory=Counter)
    _queue: list[tuple[datetime, int, Any]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    _next_launch: int = 0
    _lifetimes: dict[str, float | None] = field(default_factory=dict)  # instance id -> s
    _stopping: set[str] = field(default_factory=set)  # a tenant's stop is on its way

    def __post_init__(self) -> None:
        self.clock = self.infra.clock
        self.cloud = CloudHandler(self.infra, Ledger(":memory:"), self.clock)
        self.pods = PodHandler(self.infra)
        self.translator = InfraTranslator.of(self.engine.app)
        self.position = self.engine.app.recorder.max_notification_id() or 0
        self.topics = _topics()

    @property
    def created(self) -> int:
        """Launches turned into CreateInstance commands so far."""
        return self._next_launch

    def at(self, when: datetime, item: dict[str, Any] | Callable[[], None]) -> None:
        """A command, or an action on the infrastructure (a storm), due at `when`."""
        heapq.heappush(self._queue, (when, next(self._seq), item))

    def _launch_time(self) -> datetime | None:
        if self._next_launch >= len(self.launches):
            return None
        return self.start + timedelta(seconds=self.launches[self._next_launch].at_s)

    def run(self, until: datetime) -> None:
        quantum = timedelta(seconds=self.quantum_s)
        while True:
            due = [t for t in (self._queue[0][0] if self._queue else None,
                               self._launch_time(), self.infra.next_due())
                   if t is not None and t <= until]
            if not due:
                break
            self.clock.now = max(self.clock.now, min(min(due) + quantum, until))
            self._apply([json.dumps(command) for _, _, command in self._due_batch()])
            self._settle()
            if self.on_batch:
                self.on_batch(self.clock.now, self._next_launch)
        self.clock.now = max(self.clock.now, until)

    def _due_batch(self) -> list[tuple[datetime, int, dict[str, Any]]]:
        now, batch = self.clock.now, []
        while (when := self._launch_time()) is not None and when <= now:
            i, launch = self._next_launch, self.launches[self._next_launch]
            self._lifetimes[f"i-{i:07d}"] = launch.lifetime_s
            batch.append((when, next(self._seq), create_command(
                i, launch, when, self.cell, self.pool, self.runtime)))
            self._next_launch += 1
        while self._queue and self._queue[0][0] <= now:
            when, seq, item = heapq.heappop(self._queue)
            if callable(item):
                item()
            elif item["type"] != "StopInstance":
                batch.append((when, seq, item))
            elif item["instance_id"] in self._stopping:
                self._stopping.discard(item["instance_id"])
                batch.append((when, seq, item))
            # else: the instance ended first (its node was lost): its tenant stops nothing
        batch.sort(key=lambda entry: entry[:2])
        return batch  # type: ignore[return-value]

    def _apply(self, items: Sequence[Item]) -> None:
        if items:
            self._count(self.engine.apply(items))

    def _count(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            if outcome.status == "accepted":
                self.outcomes["accepted"] += 1
            else:  # counted by reason code, each code once per command
                self.outcomes.update(sorted({r.code or "rejected" for r in outcome.reasons}
                                           or {"rejected"}))

    def _settle(self) -> None:
        """Commands to the infrastructure, its reports to the engine, until both are quiet
        at this instant."""
        while True:
            self._carry_out()
            reports = self._reports(self.pods)
            if self.infra.nodes_changed():  # only then can a describe show anything new
                reports += self._reports(self.cloud)
            if not reports:
                return
            reports.sort(key=lambda r: r.at)
            # The handlers' reports are commands already (validated): applied as they are,
            # not written as JSON for the engine to parse back into the same commands.
            self._apply(reports)

    @staticmethod
    def _reports(handler: CloudHandler | PodHandler) -> list[Any]:
        due = handler.observe(0)
        handler.observed([memo for _, memo in due if memo is not None])  # as the worker does
        return [report for report, _ in due]

    def _carry_out(self) -> None:
        now, app = self.clock.now, self.engine.app
        end = app.recorder.max_notification_id() or 0
        if end <= self.position:
            return
        # What was stored since the last look, in one read (not page by page).
        for _, event in app.page(self.position, end - self.position, self.topics, stop=end):
            if self.on_event:
                self.on_event(event)
            # The infrastructure acts at the decision's own time, not the quantum's end: a
            # VM boots and a sandbox starts from when they were asked for.
            self.clock.now = min(now, event.timestamp)
            for command in self.translator.translate(event):
                self.infra_commands[command.type] += 1
                carry_out(command, self.cloud, self.pods)
            self._tenant(event)
        self.clock.now = now
        self.position = end

    def _tenant(self, event: Any) -> None:
        if not isinstance(event, Instance.Running | Instance.Ended):
            return
        instance = self.engine.processor.world.aggregates.get(event.originator_id)
        if not isinstance(instance, Instance):
            return
        if isinstance(event, Instance.Running):
            if instance.name in self._lifetimes:  # first run: the work takes its lifetime
                lifetime = self._lifetimes.pop(instance.name)
                if lifetime is not None:
                    self._stopping.add(instance.name)
                    self._command(event.timestamp + timedelta(seconds=lifetime), instance,
                                  "StopInstance")
        else:
            self._lifetimes.pop(instance.name, None)
            self._stopping.discard(instance.name)
            self._command(event.timestamp + timedelta(seconds=DELETE_AFTER_S), instance,
                          "DeleteInstance")

    def _command(self, when: datetime, instance: Instance, kind: str) -> None:
        self.at(when, {"type": kind, "command_id": f"tenant-{kind}-{instance.name}",
                       "cell": instance.cell, "issued_at": when.isoformat(),
                       "account": instance.account, "instance_id": instance.name})
