"""The engine and the simulated infrastructure through the driver ports, in one process.

Like `simulations/harness.Harness` (same `submit`/`run`/`on_outcomes`), but no report is
made up here: the events the engine stores become the outbox's commands
(`InfraTranslator`), the cloud and Pod handlers of the driver worker carry them out on a
`SimulatedInfrastructure`, and only what that infrastructure shows comes back, as the
handlers' reports. The tenants' side stays scripted (they stop and delete instances as
their plans say); what their containers do (exit 0, fail, crash-loop) is injected into the
infrastructure as failures. Time is a virtual clock that jumps to the next thing due.
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from adapters.bootstrap import Engine
from adapters.driver_ledger import Ledger
from adapters.driver_worker import CloudHandler, PodHandler
from adapters.drivers.simulated import (
    NODE_BOOT_SECONDS,
    Exit,
    Failures,
    SimulatedInfrastructure,
    VirtualClock,
)
from adapters.infra_commands import InfraTranslator
from engine.domain.instance import Instance
from schemas.infra import DeletePod, ProvisionNode, RunPod, TerminateNode
from schemas.outcomes import Outcome
from simulations.harness import Plan

CRASHES = 3  # a crash-looping plan's container crashes this often, then its tenant stops it


def failures_of(plans: dict[str, Plan]) -> Failures:
    """What the tenants' containers will do, as the infrastructure's injected exits."""
    exits: dict[str, list[Exit]] = {}
    for name, plan in plans.items():
        if plan.ending == "succeed":
            exits[name] = [Exit(plan.lifetime_s, 0)]
        elif plan.ending == "fail":
            exits[name] = [Exit(plan.lifetime_s, 1)]
        elif plan.ending == "crashloop":
            exits[name] = [Exit(plan.lifetime_s / 4, 137)] * CRASHES
    return Failures(exits=exits)


@dataclass
class DrivenHarness:
    engine: Engine
    start: datetime
    plans: dict[str, Plan] = field(default_factory=dict)
    lost_nodes: dict[tuple[str, str], datetime] = field(default_factory=dict)
    boot_seconds: float = NODE_BOOT_SECONDS
    on_outcomes: Callable[[list[Outcome]], None] | None = None
    _queue: list[tuple[datetime, int, Any]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self.clock = VirtualClock(self.start)
        self.infra = SimulatedInfrastructure(self.clock, self.boot_seconds,
                                             failures=failures_of(self.plans))
        self.cloud = CloudHandler(self.infra, Ledger(":memory:"), self.clock)
        self.pods = PodHandler(self.infra)
        self.translator = InfraTranslator.of(self.engine.app)
        self.position = self.engine.app.recorder.max_notification_id() or 0
        self.commands: dict[str, int] = {}  # infrastructure commands carried out, by type
        for (_, node_id), at in self.lost_nodes.items():
            self._at(at, ("lose", node_id))

    def submit(self, at: datetime, command: dict[str, Any]) -> None:
        self._at(at, command)

    def _at(self, at: datetime, item: Any) -> None:
        heapq.heappush(self._queue, (at, next(self._seq), item))

    def run(self, until: datetime) -> list[Outcome]:
        outcomes: list[Outcome] = []
        while True:
            due = [t for t in (self._queue[0][0] if self._queue else None,
                               self.infra.next_due()) if t is not None and t <= until]
            if not due:
                break
            self.clock.now = max(self.clock.now, min(due))
            batch: list[str] = []
            while self._queue and self._queue[0][0] <= self.clock.now:
                item = heapq.heappop(self._queue)[2]
                if isinstance(item, tuple):  # ("lose", node_id): a VM dies outside cis
                    if item[1] in self.infra.nodes:
                        self.infra.lose_node(item[1], "hypervisor failure")
                else:
                    batch.append(json.dumps(item))
            outcomes.extend(self._apply(batch))
            outcomes.extend(self._settle())
        self.clock.now = max(self.clock.now, until)
        return outcomes

    def _apply(self, batch: list[str]) -> list[Outcome]:
        if not batch:
            return []
        result = self.engine.apply(batch)
        if self.on_outcomes:
            self.on_outcomes(result)
        return result

    def _settle(self) -> list[Outcome]:
        """Commands to the infrastructure, its reports to the engine, until both are quiet
        at this instant."""
        outcomes: list[Outcome] = []
        while True:
            self._carry_out()
            reports = [r for handler in (self.cloud, self.pods)
                       for r in self._reports(handler)]
            if not reports:
                return outcomes
            reports.sort(key=lambda r: r.at)
            outcomes.extend(self._apply([r.model_dump_json() for r in reports]))

    def _reports(self, handler: CloudHandler | PodHandler) -> list[Any]:
        due = handler.observe(0)
        handler.observed([memo for _, memo in due if memo is not None])  # as the worker does
        return [report for report, _ in due]

    def _carry_out(self) -> None:
        for position, event in self.engine.app.read(self.position):
            self.position = position
            for command in self.translator.translate(event):
                self.commands[command.type] = self.commands.get(command.type, 0) + 1
                carry_out(command, self.cloud, self.pods)
            self._tenant(event)

    def _tenant(self, event: Any) -> None:
        """The tenants' scripted side: stop or delete as their plans say."""
        if not isinstance(event, Instance.Running | Instance.Ended):
            return
        instance = self.engine.processor.world.aggregates[event.originator_id]
        plan = self.plans.get(instance.name)  # type: ignore[attr-defined]
        if plan is None:
            return
        if isinstance(event, Instance.Ended):
            if plan.delete_after_s is not None:
                self._command(event.timestamp, plan.delete_after_s, instance, "DeleteInstance")
        elif plan.ending == "stop" and instance.restarts == 0:  # type: ignore[attr-defined]
            self._command(event.timestamp, plan.lifetime_s, instance, "StopInstance")
        elif plan.ending == "crashloop" and instance.restarts >= CRASHES:  # type: ignore
            self._command(event.timestamp, plan.lifetime_s / 4, instance, "StopInstance")

    def _command(self, at: datetime, after_s: float, instance: Any, kind: str) -> None:
        when = at + timedelta(seconds=after_s)
        self.submit(when, {"type": kind, "command_id": f"tenant-{next(self._seq)}",
                           "cell": instance.cell, "issued_at": when.isoformat(),
                           "account": instance.account, "instance_id": instance.name})


def carry_out(command: Any, cloud: Any, pods: Any) -> None:
    """One VM or Pod command, carried out by the simulated cloud or Pod driver as its worker
    would (a VM's ledger row kept)."""
    if isinstance(command, ProvisionNode | TerminateNode):
        row = cloud.act(command)
        if row is not None:
            cloud.ledger.put_node(row)
    elif isinstance(command, RunPod | DeletePod):
        pods.act(command)
