"""Drives the real engine on a virtual clock, with a simulated infrastructure.

The infrastructure reads the events the engine stored (as a real adapter reads the log)
and answers with reports at the times a real one would: nodes boot, sandboxes start with
their runtime's measured start time, containers exit as the tenant's plan says.
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from adapters.bootstrap import Engine
from engine.domain.instance import Instance
from engine.domain.node import Node
from engine.policies.runtimes import START_SECONDS  # the seed's, docs/design.md §3.7
from schemas.outcomes import Outcome

NODE_BOOT_SECONDS = 45.0


@dataclass(frozen=True)
class Plan:
    """What a tenant's instance will do once it runs."""

    lifetime_s: float
    ending: str  # stop | succeed | fail | crashloop
    delete_after_s: float | None = None


@dataclass
class Harness:
    engine: Engine
    plans: dict[str, Plan] = field(default_factory=dict)
    lost_nodes: dict[str, datetime] = field(default_factory=dict)
    on_outcomes: Callable[[list[Outcome]], None] | None = None
    _queue: list[tuple[datetime, int, dict[str, Any]]] = field(default_factory=list)
    _seq: Iterable[int] = field(default_factory=itertools.count)
    _position: int = 0
    _ids: Iterable[int] = field(default_factory=itertools.count)
    # Each instance's report counter, as a node agent keeps it (issue 14: ordered reports).
    _sequences: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def submit(self, at: datetime, command: dict[str, Any]) -> None:
        heapq.heappush(self._queue, (at, next(self._seq), command))  # type: ignore[call-overload]

    def run(self, until: datetime, window_s: float = 1.0) -> list[Outcome]:
        """Apply queued commands in time order, a window at a time, reacting to events."""
        outcomes: list[Outcome] = []
        while self._queue and self._queue[0][0] <= until:
            start = self._queue[0][0]
            batch = []
            while self._queue and self._queue[0][0] < start + timedelta(seconds=window_s) \
                    and self._queue[0][0] <= until:
                batch.append(heapq.heappop(self._queue)[2])
            result = self.engine.apply([json.dumps(c) for c in batch])
            outcomes.extend(result)
            if self.on_outcomes:
                self.on_outcomes(result)
            self._react()
        return outcomes

    # --- the simulated infrastructure ------------------------------------------------

    def _react(self) -> None:
        for position, event in self.engine.app.read(self._position):
            self._position = position
            if isinstance(event, Node.Requested):
                self._report(event.timestamp, NODE_BOOT_SECONDS, event.cell,
                             "ReportNodeReady", node_id=event.node_id)
            elif isinstance(event, Node.Ready) and self._node_key(event) in self.lost_nodes:
                cell, node_id = self._node_key(event)
                self._report(self.lost_nodes[(cell, node_id)], 0, cell, "ReportNodeLost",
                             node_id=node_id, reason="hypervisor failure")
            elif isinstance(event, Instance.Scheduled):
                self._on_scheduled(event)
            elif isinstance(event, Instance.Running):
                self._on_running(event)
            elif isinstance(event, Instance.Restarting):
                inst = self._instance(event)
                self._report(event.timestamp, event.backoff_seconds, inst.cell,
                             "ReportInstanceRunning", **_about(inst))
            elif isinstance(event, Instance.Ended):
                self._on_ended(event)

    def _instance(self, event: Any) -> Instance:
        return self.engine.processor.world.aggregates[event.originator_id]  # type: ignore

    def _node_key(self, event: Any) -> tuple[str, str]:
        node = self.engine.processor.world.aggregates[event.originator_id]
        return node.cell, node.node_id  # type: ignore[attr-defined]

    def _on_scheduled(self, event: Instance.Scheduled) -> None:
        inst = self._instance(event)
        self._report(event.timestamp, 0.3, inst.cell, "ReportInstanceStarting",
                     **_about(inst))
        self._report(event.timestamp, 0.3 + START_SECONDS[inst.runtime], inst.cell,
                     "ReportInstanceRunning", **_about(inst))

    def _on_running(self, event: Instance.Running) -> None:
        inst = self._instance(event)
        plan = self.plans.get(inst.name)
        if plan is None:
            return
        container = inst.container_names[0]
        if plan.ending == "crashloop":
            if inst.restarts < 3:
                self._report(event.timestamp, plan.lifetime_s / 4, inst.cell,
                             "ReportContainerExited", **_about(inst),
                             container=container, exit_code=137)
            else:
                self._tenant(event.timestamp, plan.lifetime_s / 4, inst, "StopInstance")
        elif inst.restarts == 0 and plan.ending == "stop":
            self._tenant(event.timestamp, plan.lifetime_s, inst, "StopInstance")
        elif inst.restarts == 0:
            for name in inst.container_names:
                self._report(event.timestamp, plan.lifetime_s, inst.cell,
                             "ReportContainerExited", **_about(inst), container=name,
                             exit_code=0 if plan.ending == "succeed" else 1)

    def _on_ended(self, event: Instance.Ended) -> None:
        inst = self._instance(event)
        plan = self.plans.get(inst.name)
        if plan is not None and plan.delete_after_s is not None:
            self._tenant(event.timestamp, plan.delete_after_s, inst, "DeleteInstance")

    def _report(self, at: datetime, after_s: float, cell: str, kind: str, **fields: Any) -> None:
        when = at + timedelta(seconds=after_s)
        if "instance_id" in fields:
            key = (cell, fields["account"], fields["instance_id"])
            fields["sequence"] = self._sequences[key] = self._sequences.get(key, -1) + 1
        self.submit(when, {"type": kind, "command_id": f"sim-{next(self._ids)}", "cell": cell,
                           "occurred_at": when.isoformat(), **fields})

    def _tenant(self, at: datetime, after_s: float, inst: Instance, kind: str) -> None:
        when = at + timedelta(seconds=after_s)
        self.submit(when, {"type": kind, "command_id": f"sim-{next(self._ids)}",
                           "cell": inst.cell, "issued_at": when.isoformat(),
                           "account": inst.account, "instance_id": inst.name})


def _about(inst: Instance) -> dict[str, Any]:
    """What a node's report about an instance names: its account, id and node."""
    return {"account": inst.account, "instance_id": inst.name, "node_id": inst.node_id}
